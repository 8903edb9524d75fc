// The sampling flags shared by `swarm run` and `swarm generate`, parsed in one place.
#ifndef SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
#define SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_

#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "model/generate.h"

namespace swarm::cli {

inline const std::set<std::string> kSamplingFlags = {"max-new-tokens", "temperature", "top-p",
                                                     "top-k", "seed"};

// Reads --max-new-tokens (default 64), --temperature (0 = greedy), --top-p, --top-k, --seed and
// the boolean --no-stop (do not stop at EOS); validates them.
absl::StatusOr<model::SamplingParams> ParseSamplingFlags(const Flags& flags);

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
