#include "router/calibration/probe.h"

#include <fstream>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/block_layout.h"
#include "common/status_macros.h"
#include "router/features.h"

namespace swarm::router {

uint64_t DeriveSeed(uint64_t base, uint64_t stream, uint64_t index) {
  uint64_t z = base * 0x9E3779B97F4A7C15ull + stream * 0xBF58476D1CE4E5B9ull + index + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

namespace {

absl::Status CheckSampleOptions(const SampleOptions& o, int64_t context) {
  if (o.count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration/evaluation set is empty (asked for ", o.count, " prompts)"));
  }
  if (o.continuation_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("continuation must be at least 1 token, got ", o.continuation_tokens));
  }
  if (o.min_prompt_tokens < 1 || o.max_prompt_tokens < o.min_prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad prompt length range ", o.min_prompt_tokens, "..", o.max_prompt_tokens));
  }
  if (context > 0 && o.max_prompt_tokens + o.continuation_tokens > context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", o.max_prompt_tokens,
                                                   ") + continuation (", o.continuation_tokens,
                                                   ") tokens exceed the context of ", context));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Sample>> SampleFromModel(const model::Engine& engine,
                                                    const SampleOptions& options) {
  const model::ModelConfig& config = engine.config();
  RETURN_IF_ERROR(CheckSampleOptions(options, config.max_position_embeddings));
  int64_t bos = -1;
  if (!config.bos_token_ids.empty()) bos = config.bos_token_ids[0];
  if (bos < 0 && engine.tokenizer() != nullptr && engine.tokenizer()->bos_id().has_value()) {
    bos = *engine.tokenizer()->bos_id();
  }
  if (bos < 0) {
    return absl::FailedPreconditionError(
        "the model has no BOS token to sample prompts from; pass --prompts FILE");
  }
  std::vector<Sample> out;
  out.reserve(options.count);
  for (int i = 0; i < options.count; ++i) {
    uint64_t seed = DeriveSeed(options.seed, options.stream, i);
    std::mt19937_64 rng(seed);
    int plen = std::uniform_int_distribution<int>(options.min_prompt_tokens,
                                                  options.max_prompt_tokens)(rng);
    // One draw for prompt and continuation when both use the same temperature (the continuation
    // is then simply the text that follows); otherwise the continuation is drawn separately.
    const bool one_draw = options.continuation_temperature == options.temperature;
    model::SamplingParams params;
    params.max_new_tokens = plen - 1 + (one_draw ? options.continuation_tokens : 0);
    params.temperature = options.temperature;
    params.seed = seed;
    params.stop_at_eos = false;
    Sample s;
    s.prompt.push_back(bos);
    if (params.max_new_tokens > 0) {
      ASSIGN_OR_RETURN(model::GenerateResult g, engine.Generate({bos}, params));
      if (static_cast<int>(g.ids.size()) != params.max_new_tokens) {
        return absl::InternalError(absl::StrCat("sampling prompt ", i, ": got ", g.ids.size(),
                                                " tokens, expected ", params.max_new_tokens));
      }
      s.prompt.insert(s.prompt.end(), g.ids.begin(), g.ids.begin() + (plen - 1));
      s.continuation.assign(g.ids.begin() + (plen - 1), g.ids.end());
    }
    if (!one_draw) {
      model::SamplingParams cp;
      cp.max_new_tokens = options.continuation_tokens;
      cp.temperature = options.continuation_temperature;
      cp.seed = DeriveSeed(seed, 1, 0);
      cp.stop_at_eos = false;
      ASSIGN_OR_RETURN(model::GenerateResult g, engine.Generate(s.prompt, cp));
      s.continuation = std::move(g.ids);
    }
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<Sample>> SamplesFromTexts(const model::Engine& engine,
                                                     const std::vector<std::string>& texts,
                                                     const SampleOptions& options) {
  if (texts.empty()) return absl::InvalidArgumentError("the prompt set is empty");
  if (engine.tokenizer() == nullptr) {
    return absl::FailedPreconditionError("text prompts need the model's tokenizer.json");
  }
  SampleOptions o = options;
  o.count = static_cast<int>(texts.size());
  o.max_prompt_tokens = o.min_prompt_tokens = 1;
  const int64_t context = engine.config().max_position_embeddings;
  RETURN_IF_ERROR(CheckSampleOptions(o, context));
  std::vector<Sample> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, engine.tokenizer()->Encode(texts[i], true));
    if (ids.empty()) continue;
    int64_t limit = (context > 0 ? context : 1 << 30) - options.continuation_tokens;
    if (static_cast<int64_t>(ids.size()) > limit) {
      ids.erase(ids.begin() + 1, ids.begin() + 1 + (ids.size() - limit));
    }
    model::SamplingParams params;
    params.max_new_tokens = options.continuation_tokens;
    params.temperature = options.continuation_temperature;
    params.seed = DeriveSeed(options.seed, options.stream, i);
    params.stop_at_eos = false;
    ASSIGN_OR_RETURN(model::GenerateResult g, engine.Generate(ids, params));
    out.push_back(Sample{std::move(ids), std::move(g.ids)});
  }
  if (out.empty()) return absl::InvalidArgumentError("every prompt tokenized to nothing");
  return out;
}

absl::StatusOr<std::vector<std::string>> ReadPromptLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open prompts file ", path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (!t.empty()) lines.emplace_back(t);
  }
  if (lines.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompts file ", path, " has no non-empty line: the prompt set is empty"));
  }
  return lines;
}

absl::StatusOr<std::map<BlockMask, Divergence>> MeasureSubsets(
    const model::Engine& engine, const BlockLayout& layout, const Sample& sample,
    const std::vector<BlockMask>& masks) {
  const int N = layout.num_blocks;
  const BlockMask full = FullMask(N);
  for (BlockMask m : masks) {
    if (m == 0 || (m & ~full)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot measure block subset ", FormatMask(m), " of N = ", N));
    }
  }
  std::vector<int64_t> ids = sample.prompt;
  ids.insert(ids.end(), sample.continuation.begin(), sample.continuation.end());
  const int64_t first_pos = static_cast<int64_t>(sample.prompt.size()) - 1;
  const model::ModelEnds& ends = engine.ends();
  const model::LayerHost& host = engine.layers();
  ASSIGN_OR_RETURN(HostTensor h0, ends.Embed(ids, 0));

  std::vector<BlockMask> targets = masks;
  targets.push_back(full);
  std::map<BlockMask, Divergence> out;
  std::vector<float> full_logp;
  int64_t vocab = 0;

  // Depth-first over blocks, "run" before "skip", so the full model's leaf comes first.
  std::function<absl::Status(int, BlockMask, const HostTensor&)> visit =
      [&](int block, BlockMask prefix, const HostTensor& h) -> absl::Status {
    if (block == N) {
      ASSIGN_OR_RETURN(HostTensor logits, ends.Logits(h, false));
      if (logits.shape.size() != 2) return absl::InternalError("logits are not 2-D");
      vocab = logits.shape[1];
      std::vector<float> logp = LogSoftmaxRows(logits);
      if (prefix == full) {
        full_logp = std::move(logp);
        Divergence d;
        ASSIGN_OR_RETURN(d, CompareLogProbs(full_logp, full_logp, vocab, ids, first_pos));
        out[full] = d;
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(Divergence d, CompareLogProbs(full_logp, logp, vocab, ids, first_pos));
      out[prefix] = d;
      return absl::OkStatus();
    }
    const BlockMask seen = FullMask(block + 1);
    const BlockMask bit = BlockMask{1} << block;
    auto wanted = [&](BlockMask p) {
      for (BlockMask t : targets) {
        if ((t & seen) == p) return true;
      }
      return false;
    };
    if (wanted(prefix | bit)) {
      std::unique_ptr<model::KvCache> cache = host.NewCache();
      std::vector<int> layers = layout.Layers(block);
      ASSIGN_OR_RETURN(HostTensor next, host.Forward(h, 0, layers, cache.get()));
      RETURN_IF_ERROR(visit(block + 1, prefix | bit, next));
    }
    if (wanted(prefix)) RETURN_IF_ERROR(visit(block + 1, prefix, h));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(visit(0, 0, h0));
  return out;
}

absl::StatusOr<std::vector<float>> Block0Feature(const model::Engine& engine,
                                                 const BlockLayout& layout,
                                                 absl::Span<const float> idf,
                                                 const std::vector<int64_t>& prompt) {
  if (prompt.empty()) return absl::InvalidArgumentError("cannot route an empty prompt");
  ASSIGN_OR_RETURN(HostTensor h0, engine.ends().Embed(prompt, 0));
  std::unique_ptr<model::KvCache> cache = engine.layers().NewCache();
  ASSIGN_OR_RETURN(HostTensor h1, engine.layers().Forward(h0, 0, layout.Layers(0), cache.get()));
  if (h1.shape.size() != 2 || h1.shape[0] != static_cast<int64_t>(prompt.size())) {
    return absl::InternalError("block 0's output is not [prompt tokens, hidden]");
  }
  std::vector<float> rows = h1.ToFloats();
  return HiddenFeature(rows, h1.shape[1], idf, prompt);
}

absl::StatusOr<std::vector<int64_t>> GreedyReference(const model::Engine& engine,
                                                     const std::vector<int64_t>& prompt,
                                                     int tokens) {
  model::SamplingParams params;
  params.max_new_tokens = tokens;
  params.temperature = 0;
  params.stop_at_eos = false;
  ASSIGN_OR_RETURN(model::GenerateResult g, engine.Generate(prompt, params));
  return g.ids;
}

absl::StatusOr<int> GreedyDivergence(const model::Engine& engine, const BlockLayout& layout,
                                     const std::vector<int64_t>& prompt,
                                     const std::vector<int64_t>& reference,
                                     const SparsePlan& plan) {
  ASSIGN_OR_RETURN(std::unique_ptr<SparseExecutor> exec,
                   SparseExecutor::Create(&engine.layers(), layout, plan));
  model::SamplingParams params;
  params.max_new_tokens = static_cast<int64_t>(reference.size());
  params.temperature = 0;
  params.stop_at_eos = false;
  int first = static_cast<int>(reference.size());
  int index = 0;
  // Stop decoding at the first difference: the rest is not needed.
  auto on_token = [&](const model::GeneratedToken& t) {
    if (t.id != reference[index]) {
      first = index;
      return false;
    }
    ++index;
    return true;
  };
  ASSIGN_OR_RETURN(model::GenerateResult g, model::RunGenerationLoop(engine.ends(), *exec, nullptr,
                                                                     prompt, params, on_token));
  (void)g;
  return first;
}

}  // namespace swarm::router
