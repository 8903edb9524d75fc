#include "model/generate.h"

#include <algorithm>
#include <fstream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/status_macros.h"

namespace swarm::model {

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
