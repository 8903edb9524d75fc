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
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
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
  int64_t id = 0;    // -1: text only (what Flush returns at the end).
  std::string text;  // Newly final text: empty while a UTF-8 character is incomplete or while
                     // the text could be the start of a stop string; never the stop string.
  // With SamplingParams::logprobs (id >= 0 only): the token's own log-probability and text...
  bool has_logprob = false;
  TokenLogprob chosen;
  // ...and the SamplingParams::top_logprobs most likely tokens, descending.
  std::vector<TokenLogprob> top_logprobs;
};

struct GenerateResult {
  std::vector<int64_t> ids;   // Generated ids only (a stop string's tokens included).
  std::string text;           // Their decoded text, cut before a stop string (empty without a
                              // tokenizer).
  std::string finish_reason;  // "eos", "stop", "length", "context" or "cancelled".
};

// Called for each token as it is decoded; return false to stop early ("cancelled").
using TokenCallback = std::function<bool(const GeneratedToken&)>;

// One request's token loop as a state machine, for whoever drives the layers: RunGenerationLoop
// (one request on its own), the in-process batched loop (RunBatchedGeneration) and the
// coordinator's scheduler (many requests per step). It says which ids the next step feeds (a
// chunk of the prompt, or the last sampled token) at which position, and turns the logits of the
// last fed position into the next token with the request's sampling parameters and stop rules.
// The one place that knows how a request turns into tokens. Not thread-safe (one driver).
class SequenceDecoder {
 public:
  // Checks `params` and the prompt against the model (InvalidArgument: bad parameters, an empty
  // prompt, stop strings without a tokenizer; OutOfRange: a prompt longer than the context).
  // `tokenizer` may be null (no text).
  //
  // `resume_ids`: a request resumed after its first run stopped (a coordinator died mid-stream):
  // the ids it had generated. They count as generated (against max_new_tokens, in the stop
  // strings' text, in generated_ids()) without being returned again; the prefill feeds prompt +
  // resume_ids, and from there the decoder returns exactly what the first run would have
  // (sampling is a pure function of (seed, position); the text held back for stop strings and
  // incomplete UTF-8 is rebuilt). InvalidArgument when they are as many as max_new_tokens, an id
  // is outside the vocabulary, or the first run would already have ended on one of them (EOS, a
  // stop string); OutOfRange when they pass the context.
  static absl::StatusOr<std::unique_ptr<SequenceDecoder>> Create(
      const ModelConfig& config, const tokenizer::Tokenizer* tokenizer,
      std::vector<int64_t> prompt_ids, const SamplingParams& params,
      const std::vector<int64_t>& resume_ids = {});

  bool done() const { return !finish_reason_.empty(); }
  // "eos", "stop", "length", "context" or "cancelled" once done; "" before.
  const std::string& finish_reason() const { return finish_reason_; }
  const std::vector<int64_t>& prompt_ids() const { return prompt_; }
  const std::vector<int64_t>& generated_ids() const { return generated_; }
  const SamplingParams& params() const { return params_; }
  // Positions fed to the layers so far: the start position of the next step.
  int64_t position() const { return fed_; }
  // True while prompt positions (and resume_ids) remain to be fed.
  bool prefilling() const { return fed_ < static_cast<int64_t>(prefill_.size()); }
  // The ids the next step feeds, at most `max_ids` (>= 1) of them: the next chunk of the prompt
  // (and resume_ids), or the last sampled token. Empty when done. Does not consume them (see Fed).
  absl::Span<const int64_t> NextInput(int64_t max_ids) const;
  // Records that the first `n` ids of NextInput were fed at position(). Returns true when the
  // logits of the last of them are due next (the prompt is fully fed, or it was a decode token).
  bool Fed(int64_t n);
  // Takes the logits row of the last fed position (one per vocabulary entry): samples the next
  // token, applies the stop rules (a stop string in the text, EOS when stop_at_eos,
  // max_new_tokens, the context) and returns the token with its newly final text (and its
  // logprobs when asked). Text that could be the start of a stop string is held back until it is
  // decided; a stop string and whatever follows it are never returned.
  GeneratedToken Accept(absl::Span<const float> logits);
  // Stops the request ("cancelled") unless it is already done.
  void Cancel();
  // The text held back at the end (an incomplete UTF-8 sequence, the start of a stop string that
  // never completed); call once when done, before reading finish_reason (a stop string the held
  // bytes complete makes it "stop").
  std::string Flush();

 private:
  SequenceDecoder() = default;
  // Create's resume_ids: recorded as generated, the text state rebuilt, appended to prefill_.
  absl::Status Resume(const std::vector<int64_t>& ids);

  int64_t context_ = 0;
  int64_t vocab_size_ = 0;
  SamplingParams params_;
  std::vector<int64_t> prompt_;
  std::vector<int64_t> prefill_;  // prompt_ + resume_ids: fed before the first new token.
  std::vector<int64_t> generated_;
  std::vector<int64_t> eos_;
  std::unique_ptr<Sampler> sampler_;
  // The text not returned yet because it may begin a stop string; passes `piece` (newly final
  // text) through the stop strings, returning what is decided. `final`: nothing follows.
  std::string ReleaseText(std::string piece, bool final);
  // The text of `id` as it reads after `previous` ("" without a tokenizer).
  std::string TokenText(int64_t previous, int64_t id) const;

  const tokenizer::Tokenizer* tokenizer_ = nullptr;
  std::unique_ptr<tokenizer::StreamDecoder> text_;
  std::string held_;      // Decoded text that may be the start of a stop string.
  bool stopped_ = false;  // A stop string matched.
  int64_t fed_ = 0;
  std::string finish_reason_;
};

// Prefills `prompt_ids` then decodes up to params.max_new_tokens, stopping at a stop string, at
// EOS (when stop_at_eos) or at the context limit. `tokenizer` may be null (no text). Errors: empty
// prompt, prompt longer than the context, and whatever the executor returns.
absl::StatusOr<GenerateResult> RunGenerationLoop(const ModelEnds& ends, StepExecutor& executor,
                                                 const tokenizer::Tokenizer* tokenizer,
                                                 const std::vector<int64_t>& prompt_ids,
                                                 const SamplingParams& params,
                                                 const TokenCallback& on_token = nullptr);

// Many requests through one LayerHost at once, iteration by iteration (continuous batching): each
// step every decoding request contributes its next token and waiting prompts are fed in chunks
// under the token budget; a request leaves the batch as soon as it ends. Each request's output is
// what it gets alone (its sampling is a pure function of its seed and positions, and the decode
// math is batch-invariant).
struct BatchLimits {
  int64_t max_batch_tokens = 512;  // Rows in one step, prefill chunks included.
  int max_batch_sequences = 64;    // Sequences in one step.
};

// Which rows each sequence brings to the next step: decoding sequences first (one row each, in the
// order given), then prefill chunks in that order with what is left of the token budget. `active`
// are the sequences that may join (not done); returns (index into active, rows) pairs.
std::vector<std::pair<int, int64_t>> ComposeStep(absl::Span<SequenceDecoder* const> active,
                                                 const BatchLimits& limits);

struct BatchedRequest {
  std::vector<int64_t> prompt_ids;
  SamplingParams params;
  TokenCallback on_token;  // May be empty.
};

// Runs every request to its end; one result (or error) per request, in order. A request that
// fails validation fails alone.
std::vector<absl::StatusOr<GenerateResult>> RunBatchedGeneration(
    const ModelEnds& ends, const LayerHost& host, const tokenizer::Tokenizer* tokenizer,
    std::vector<BatchedRequest> requests, const BatchLimits& limits = {});

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
  // Many requests at once (RunBatchedGeneration over this engine's layers).
  std::vector<absl::StatusOr<GenerateResult>> GenerateBatch(std::vector<BatchedRequest> requests,
                                                            const BatchLimits& limits = {}) const;

 private:
  Engine() = default;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<ModelEnds> ends_;
  std::unique_ptr<LayerHost> layers_;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_GENERATE_H_
