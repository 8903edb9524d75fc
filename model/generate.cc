#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace swarm::model {

absl::Status SamplingParams::Validate() const {
  if (max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 0, got ", max_new_tokens));
  }
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int64_t Sampler::Sample(absl::Span<const float> logits) {
  const int64_t n = static_cast<int64_t>(logits.size());
  if (params_.temperature == 0.0f) {
    // First maximum: ties go to the lowest id, as torch.argmax does.
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  }
  scratch_.clear();
  scratch_.reserve(n);
  for (int64_t i = 0; i < n; ++i) scratch_.emplace_back(logits[i] / params_.temperature, i);
  auto by_logit = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::partial_sort(scratch_.begin(), scratch_.begin() + keep, scratch_.end(), by_logit);
    scratch_.resize(keep);
  } else {
    std::sort(scratch_.begin(), scratch_.end(), by_logit);
  }
  // Softmax over the kept logits (sorted descending), then nucleus filtering.
  const float max_logit = scratch_[0].first;
  double total = 0.0;
  for (auto& [v, id] : scratch_) {
    v = std::exp(v - max_logit);
    total += v;
  }
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    int64_t cut = 0;
    while (cut < keep) {
      cum += scratch_[cut].first / total;
      ++cut;
      if (cum >= params_.top_p) break;
    }
    keep = cut;
    total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += scratch_[i].first;
  }
  // 53 random bits → uniform in [0, 1): the same on every platform for a given seed.
  const double u = static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0) * total;
  double cum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += scratch_[i].first;
    if (u < cum) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

LocalExecutor::LocalExecutor(const LayerHost* host) : host_(host), cache_(host->NewCache()) {}

absl::StatusOr<HostTensor> LocalExecutor::Run(const HostTensor& h, int64_t start_pos) {
  return host_->Forward(h, start_pos, host_->layers(), cache_.get());
}

absl::StatusOr<GenerateResult> RunGenerationLoop(const ModelEnds& ends, StepExecutor& executor,
                                                 const tokenizer::Tokenizer* tokenizer,
                                                 const std::vector<int64_t>& prompt_ids,
                                                 const SamplingParams& params,
                                                 const TokenCallback& on_token) {
  RETURN_IF_ERROR(params.Validate());
  const ModelConfig& c = ends.config();
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t ctx = c.max_position_embeddings;
  if (static_cast<int64_t>(prompt_ids.size()) > ctx) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt of ", prompt_ids.size(), " tokens is longer than the context of ", ctx, " tokens"));
  }
  std::vector<int64_t> eos = c.eos_token_ids;
  if (tokenizer != nullptr && tokenizer->eos_id().has_value()) eos.push_back(*tokenizer->eos_id());

  GenerateResult result;
  result.finish_reason = "length";
  if (params.max_new_tokens == 0) return result;
  Sampler sampler(params);
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  if (tokenizer != nullptr)
    decoder = std::make_unique<tokenizer::StreamDecoder>(tokenizer, prompt_ids);

  ASSIGN_OR_RETURN(HostTensor h, ends.Embed(prompt_ids, 0));
  ASSIGN_OR_RETURN(HostTensor out, executor.Run(h, 0));
  int64_t pos = static_cast<int64_t>(prompt_ids.size());
  while (true) {
    ASSIGN_OR_RETURN(HostTensor logits, ends.Logits(out, /*last_only=*/true));
    const float* row = reinterpret_cast<const float*>(logits.data.data());
    const int64_t id = sampler.Sample(absl::MakeConstSpan(row, c.vocab_size));
    result.ids.push_back(id);
    GeneratedToken token{id, decoder ? decoder->Push(id) : std::string()};
    result.text += token.text;
    if (on_token && !on_token(token)) {
      result.finish_reason = "cancelled";
      break;
    }
    if (params.stop_at_eos && std::find(eos.begin(), eos.end(), id) != eos.end()) {
      result.finish_reason = "eos";
      break;
    }
    if (static_cast<int64_t>(result.ids.size()) >= params.max_new_tokens) break;
    if (pos >= ctx) {
      result.finish_reason = "context";
      break;
    }
    const int64_t one[1] = {id};
    ASSIGN_OR_RETURN(h, ends.Embed(absl::MakeConstSpan(one, 1), pos));
    ASSIGN_OR_RETURN(out, executor.Run(h, pos));
    ++pos;
  }
  if (decoder) {
    std::string rest = decoder->Flush();
    if (!rest.empty()) {
      result.text += rest;
      if (on_token && result.finish_reason != "cancelled") {
        on_token(GeneratedToken{-1, rest});
      }
    }
  }
  return result;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const std::string& model_dir,
                                                       const LoadOptions& options) {
  auto engine = std::unique_ptr<Engine>(new Engine());
  ASSIGN_OR_RETURN(engine->checkpoint_, Checkpoint::Open(model_dir));
  const std::string tok_path = model_dir + "/tokenizer.json";
  if (std::ifstream(tok_path).good()) {
    ASSIGN_OR_RETURN(engine->tokenizer_, tokenizer::Tokenizer::FromFile(tok_path));
  }
  ASSIGN_OR_RETURN(engine->ends_, ModelEnds::Create(engine->checkpoint_, options));
  std::vector<int> all(engine->config().num_layers);
  std::iota(all.begin(), all.end(), 0);
  ASSIGN_OR_RETURN(engine->layers_, LayerHost::Create(engine->checkpoint_, all, options));
  return engine;
}

absl::StatusOr<HostTensor> Engine::Logits(const std::vector<int64_t>& ids) const {
  if (ids.empty()) return absl::InvalidArgumentError("no input ids");
  if (static_cast<int64_t>(ids.size()) > config().max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("input of ", ids.size(),
                                              " tokens is longer than the context of ",
                                              config().max_position_embeddings, " tokens"));
  }
  ASSIGN_OR_RETURN(HostTensor h, ends_->Embed(ids, 0));
  auto cache = layers_->NewCache();
  ASSIGN_OR_RETURN(HostTensor out, layers_->Forward(h, 0, layers_->layers(), cache.get()));
  return ends_->Logits(out, /*last_only=*/false);
}

absl::StatusOr<GenerateResult> Engine::Generate(const std::vector<int64_t>& prompt_ids,
                                                const SamplingParams& params,
                                                const TokenCallback& on_token) const {
  LocalExecutor executor(layers_.get());
  return model::RunGenerationLoop(*ends_, executor, tokenizer_.get(), prompt_ids, params, on_token);
}

}  // namespace swarm::model
