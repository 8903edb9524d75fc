// Token generation, shared by the in-process engine and the distributed coordinator: prefill,
// then one-token decode steps through a StepExecutor (local layers or remote workers), sampling
// (model/sampler.h) and stop rules. The one place that knows how a request turns into tokens.
// RunGenerationLoop() runs on the caller's thread; an Engine is immutable after Create (Logits and
// Generate may run concurrently); a LocalExecutor holds one sequence's cache (one thread).
#ifndef SWARM_MODEL_GENERATE_H_
#define SWARM_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/host_tensor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/layer_host.h"
#include "model/model_ends.h"
#include "model/sampler.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace swarm::model {

// Runs one step of one sequence through every layer it uses (all of them in exact mode, the
// chosen blocks in sparse mode): everything between the embeddings and the head.
class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  // h [T, hidden] holds positions start_pos..start_pos+T-1; returns the last layer's output.
  virtual absl::StatusOr<HostTensor> Run(const HostTensor& h, int64_t start_pos) = 0;
};

// Runs every layer of a LayerHost in order.
class LocalExecutor : public StepExecutor {
 public:
  explicit LocalExecutor(const LayerHost* host);
  absl::StatusOr<HostTensor> Run(const HostTensor& h, int64_t start_pos) override;

 private:
  const LayerHost* host_;
  std::unique_ptr<KvCache> cache_;
};

struct GeneratedToken {
  int64_t id = 0;
  std::string text;  // Newly final text (may be empty while a UTF-8 character is incomplete).
};

struct GenerateResult {
  std::vector<int64_t> ids;   // Generated ids only.
  std::string text;           // Their decoded text (empty without a tokenizer).
  std::string finish_reason;  // "eos", "length", "context" or "cancelled".
};

// Called for each token as it is decoded; return false to stop early ("cancelled").
using TokenCallback = std::function<bool(const GeneratedToken&)>;

// Prefills `prompt_ids` then decodes up to params.max_new_tokens, stopping at EOS (when
// stop_at_eos) or at the context limit. `tokenizer` may be null (no text). Errors: empty
// prompt, prompt longer than the context, and whatever the executor returns.
absl::StatusOr<GenerateResult> RunGenerationLoop(const ModelEnds& ends, StepExecutor& executor,
                                                 const tokenizer::Tokenizer* tokenizer,
                                                 const std::vector<int64_t>& prompt_ids,
                                                 const SamplingParams& params,
                                                 const TokenCallback& on_token = nullptr);

// The in-process engine: embed → every layer → final norm → head, on one device.
class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const std::string& model_dir,
                                                        const LoadOptions& options = {});
  const ModelConfig& config() const { return checkpoint_->config(); }
  std::shared_ptr<const Checkpoint> checkpoint() const { return checkpoint_; }
  const tokenizer::Tokenizer* tokenizer() const {
    return tokenizer_.get();
  }  // Null without tokenizer.json.
  const ModelEnds& ends() const { return *ends_; }
  const LayerHost& layers() const { return *layers_; }

  // Logits [T, vocab] of one full forward pass over `ids` (no cache reuse).
  absl::StatusOr<HostTensor> Logits(const std::vector<int64_t>& ids) const;
  absl::StatusOr<GenerateResult> Generate(const std::vector<int64_t>& prompt_ids,
                                          const SamplingParams& params,
                                          const TokenCallback& on_token = nullptr) const;

 private:
  Engine() = default;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<ModelEnds> ends_;
  std::unique_ptr<LayerHost> layers_;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_GENERATE_H_
