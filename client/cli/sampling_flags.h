// The sampling flags shared by `swarm run` and `swarm generate`, parsed in one place.
#ifndef SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
#define SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "model/generate.h"
#include "nlohmann/json.hpp"

namespace swarm::cli {

inline const std::set<std::string> kSamplingFlags = {
    "max-new-tokens", "temperature", "top-p", "top-k", "seed", "stop", "logprobs"};

// Reads --max-new-tokens (default 64), --temperature (0 = greedy), --top-p, --top-k, --seed,
// --stop STR (repeatable), --logprobs N (each token's logprob and its N most likely
// alternatives) and the boolean --no-stop (do not stop at EOS); validates them.
absl::StatusOr<model::SamplingParams> ParseSamplingFlags(const Flags& flags);

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
