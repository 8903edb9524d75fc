// Sampling: the parameters a request carries (SamplingParams: max tokens, temperature, top-k,
// top-p, seed, stop at EOS, stop strings, logprobs) and the Sampler that turns a logits row into
// the next token. RunGenerationLoop (model/generate.h) makes one Sampler per request; the CLI's and
// the coordinator's sampling flags fill SamplingParams. Torch-free. A Sampler is not thread-safe
// (one per request); SamplingParams is a plain value type.
#ifndef SWARM_MODEL_SAMPLER_H_
#define SWARM_MODEL_SAMPLER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace swarm::model {

struct SamplingParams {
  int64_t max_new_tokens = 64;
  float temperature = 0.0f;  // 0 = greedy.
  int64_t top_k = 0;         // 0 = off.
  float top_p = 1.0f;        // 1 = off.
  uint64_t seed = 0;
  bool stop_at_eos = true;
  // Stop strings, matched on the decoded text across token boundaries: generation ends
  // ("stop") at the first occurrence of any of them, and neither it nor anything after it is
  // emitted. Needs a tokenizer. At most kMaxStopStrings, each 1..kMaxStopBytes bytes.
  std::vector<std::string> stop;
  // Report each generated token's log-probability (log softmax of the raw logits, before
  // temperature and filtering, as vLLM and OpenAI report it)...
  bool logprobs = false;
  // ...and the top_logprobs most likely alternatives (0..kMaxTopLogprobs; needs logprobs).
  int top_logprobs = 0;

  static constexpr int kMaxStopStrings = 16;
  static constexpr int kMaxStopBytes = 256;
  static constexpr int kMaxTopLogprobs = 20;

  // InvalidArgument for negative temperature, top_p outside (0, 1], negative top_k or
  // max_new_tokens, too many, empty or too long stop strings, top_logprobs outside
  // 0..kMaxTopLogprobs or top_logprobs without logprobs.
  absl::Status Validate() const;
};

// One entry of a token's log-probability report.
struct TokenLogprob {
  int64_t id = 0;
  float logprob = 0.0f;  // Natural log of the probability, log softmax of the raw logits.
  std::string text;      // The token's text after the token before it ("" without a tokenizer).
};

// The first index of the largest entry of `logits` (ties: the lowest id), exactly as
// std::max_element (and torch.argmax on finite rows): a NaN is never larger than anything, so it
// is chosen only as the first entry; 0 for an empty span. Greedy decoding of every request calls
// it on a whole vocabulary row per token, so it takes the maximum over 16 independent lanes
// first (max_element's one chain of compare-and-branch took 6.7-10x as long on 32,000-entry rows,
// bench/sampler_bench) and then finds the first entry equal to it.
int64_t FirstArgmax(absl::Span<const float> logits);

// The log softmax of `logits` at `id` (the chosen token), and the `top_n` highest entries in
// descending order (ties: lowest id first) into `top`. `logits` is not empty; 0 <= id < size.
float LogSoftmaxAt(absl::Span<const float> logits, int64_t id, int top_n,
                   std::vector<TokenLogprob>* top);

// Picks the next token from a logits row. Greedy when temperature == 0 (ties: lowest id);
// otherwise softmax(logits / T), top-k then top-p filtering, then a draw whose randomness is a
// pure function of (seed, position): the same request gives the same tokens whatever it was
// batched with, and a replayed step draws what the original drew.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // The token at `position` (the sequence position the sampled token will take) for one row of
  // logits (one per vocabulary entry; not empty).
  int64_t Sample(absl::Span<const float> logits, int64_t position);

 private:
  SamplingParams params_;
  std::vector<std::pair<float, int64_t>> scratch_;
};

// The uniform draw in [0, 1) for (seed, position): 53 bits of a SplitMix64 hash, the same on every
// platform.
double UniformDraw(uint64_t seed, int64_t position);

}  // namespace swarm::model

#endif  // SWARM_MODEL_SAMPLER_H_
