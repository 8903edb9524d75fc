#include "client/cli/sampling_flags.h"

#include "common/flags.h"
#include "common/status_macros.h"

namespace swarm::cli {

void AddSamplingFlags(FlagSet& flags) {
  flags.Value("max-new-tokens", "N", "64", "tokens to generate at most")
      .Value("temperature", "T", "0", "sampling temperature; 0 = greedy")
      .Value("top-p", "P", "1", "nucleus sampling: smallest token set with probability >= P")
      .Value("top-k", "K", "0", "sample from the K most likely tokens; 0 = all")
      .Value("seed", "S", "0", "random seed (same seed, same tokens)")
      .Bool("no-stop", "do not stop at the end-of-sequence token");
}

absl::StatusOr<SamplingFlagValues> ReadSamplingFlags(const Flags& flags) {
  SamplingFlagValues v;
  ASSIGN_OR_RETURN(v.max_new_tokens, flags.Int("max-new-tokens"));
  ASSIGN_OR_RETURN(double t, flags.Double("temperature"));
  v.temperature = static_cast<float>(t);
  ASSIGN_OR_RETURN(double top_p, flags.Double("top-p"));
  v.top_p = static_cast<float>(top_p);
  ASSIGN_OR_RETURN(v.top_k, flags.Int("top-k"));
  ASSIGN_OR_RETURN(int64_t seed, flags.Int("seed"));
  v.seed = static_cast<uint64_t>(seed);
  v.stop_at_eos = !flags.Bool("no-stop");
  return v;
}

}  // namespace swarm::cli
