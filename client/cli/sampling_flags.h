// The sampling flags shared by `swarm run`, `swarm generate` and `swarm chat`,
// declared and read in one place. Torch-free: the front binary's generate uses it.
#ifndef SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
#define SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "common/flags.h"
#include "model/sampler.h"  // Only for its limits: the front links no model code.
#include "nlohmann/json.hpp"

namespace swarm::cli {

struct SamplingFlagValues {
  int64_t max_new_tokens = 64;
  float temperature = 0;  // 0 = greedy.
  float top_p = 1;
  int64_t top_k = 0;  // 0 = off.
  uint64_t seed = 0;
  bool stop_at_eos = true;
  std::vector<std::string> stop;  // Stop strings.
  bool logprobs = false;          // Each token's logprob ...
  int top_logprobs = 0;           // ... and this many most likely alternatives.
};

// Declares --max-new-tokens (64), --temperature (0 = greedy), --top-p (1), --top-k (0 = off),
// --seed (0), --stop STR (repeatable), --logprobs N and the boolean --no-stop (do not stop at EOS).
void AddSamplingFlags(FlagSet& flags);
// Reads them (InvalidArgument naming a malformed one, or --logprobs outside 0..20). Other ranges
// are checked where the values are used (model::SamplingParams::Validate, in-process or on the
// coordinator).
absl::StatusOr<SamplingFlagValues> ReadSamplingFlags(const Flags& flags);
// Puts them into an SDK request (`swarm generate`, `swarm chat`).
void SetSampling(const SamplingFlagValues& values, GenerateRequest& request);

// The --json form of one generated token's logprobs: {"id", "logprob", "text", "top": [{"id",
// "logprob", "text"}, ...]}. T: model::TokenLogprob (run) or swarm::TokenLogprob (generate).
template <typename T>
nlohmann::json TokenLogprobJson(const T& chosen, const std::vector<T>& top) {
  auto one = [](const T& t) {
    return nlohmann::json{{"id", t.id}, {"logprob", t.logprob}, {"text", t.text}};
  };
  nlohmann::json out = one(chosen);
  out["top"] = nlohmann::json::array();
  for (const T& t : top) out["top"].push_back(one(t));
  return out;
}

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
