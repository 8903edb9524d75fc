// The sampling flags shared by `swarm run` and `swarm generate` (and later `swarm chat`),
// declared and read in one place. Torch-free: the front binary's generate uses it.
#ifndef SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
#define SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/flags.h"

namespace swarm::cli {

struct SamplingFlagValues {
  int64_t max_new_tokens = 64;
  float temperature = 0;  // 0 = greedy.
  float top_p = 1;
  int64_t top_k = 0;  // 0 = off.
  uint64_t seed = 0;
  bool stop_at_eos = true;
};

// Declares --max-new-tokens (64), --temperature (0 = greedy), --top-p (1), --top-k (0 = off),
// --seed (0) and the boolean --no-stop (do not stop at EOS).
void AddSamplingFlags(FlagSet& flags);
// Reads them (InvalidArgument naming a malformed one). Ranges are checked where the values are
// used (model::SamplingParams::Validate, in-process or on the coordinator).
absl::StatusOr<SamplingFlagValues> ReadSamplingFlags(const Flags& flags);

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_SAMPLING_FLAGS_H_
