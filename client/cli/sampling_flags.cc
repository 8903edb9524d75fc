#include "client/cli/sampling_flags.h"

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/status_macros.h"

namespace swarm::cli {

absl::StatusOr<model::SamplingParams> ParseSamplingFlags(const Flags& flags) {
  model::SamplingParams p;
  ASSIGN_OR_RETURN(p.max_new_tokens, flags.Int("max-new-tokens", 64));
  ASSIGN_OR_RETURN(double t, flags.Double("temperature", 0.0));
  p.temperature = static_cast<float>(t);
  ASSIGN_OR_RETURN(double top_p, flags.Double("top-p", 1.0));
  p.top_p = static_cast<float>(top_p);
  ASSIGN_OR_RETURN(p.top_k, flags.Int("top-k", 0));
  ASSIGN_OR_RETURN(int64_t seed, flags.Int("seed", 0));
  p.seed = static_cast<uint64_t>(seed);
  p.stop_at_eos = !flags.Bool("no-stop");
  p.stop = flags.Strings("stop");
  if (flags.Has("logprobs")) {
    ASSIGN_OR_RETURN(int64_t n, flags.Int("logprobs", 0));
    if (n < 0 || n > model::SamplingParams::kMaxTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--logprobs must be in 0..", model::SamplingParams::kMaxTopLogprobs, ", got ", n));
    }
    p.logprobs = true;
    p.top_logprobs = static_cast<int>(n);
  }
  RETURN_IF_ERROR(p.Validate());
  return p;
}

}  // namespace swarm::cli
