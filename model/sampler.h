// Sampling: the parameters a request carries (SamplingParams: max tokens, temperature, top-k,
// top-p, seed, stop at EOS) and the Sampler that turns a logits row into the next token.
// RunGenerationLoop (model/generate.h) makes one Sampler per request; the CLI's and the
// coordinator's sampling flags fill SamplingParams. Torch-free. A Sampler is not thread-safe (one
// per request); SamplingParams is a plain value type.
#ifndef SWARM_MODEL_SAMPLER_H_
#define SWARM_MODEL_SAMPLER_H_

#include <cstdint>
#include <random>
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
  // The next token id for one row of logits (one per vocabulary entry; not empty).
  int64_t Sample(absl::Span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int64_t>> scratch_;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_SAMPLER_H_
