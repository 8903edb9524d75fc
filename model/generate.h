// Token generation, shared by the in-process engine and the distributed coordinator: prefill,
// then one-token decode steps through a StepExecutor (local layers or remote workers), sampling
// and stop rules. The one place that knows how a request turns into tokens.
// RunGenerationLoop() runs on the caller's thread; a Sampler is not thread-safe (one per request).
#ifndef SWARM_MODEL_GENERATE_H_
#define SWARM_MODEL_GENERATE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace swarm::model {

struct SamplingParams {
  int64_t max_new_tokens = 64;
  float temperature = 0.0f;  // 0 = greedy.
  int64_t top_k = 0;         // 0 = off.
  float top_p = 1.0f;        // 1 = off.
  uint64_t seed = 0;
  bool stop_at_eos = true;

  // InvalidArgument for negative temperature, top_p outside (0, 1], negative top_k or
  // max_new_tokens.
  absl::Status Validate() const;
};

// Picks the next token from a logits row. Greedy when temperature == 0 (ties: lowest id);
// otherwise softmax(logits / T), top-k then top-p filtering, then a draw from a mt19937_64
// seeded with `seed`, so the same seed gives the same tokens.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int64_t Sample(absl::Span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int64_t>> scratch_;
};

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
