#include "client/cli/sampling_flags.h"

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/status_macros.h"

namespace swarm::cli {

void SetSampling(const SamplingFlagValues& values, GenerateRequest& request) {
  request.max_new_tokens = values.max_new_tokens;
  request.temperature = values.temperature;
  request.top_k = values.top_k;
  request.top_p = values.top_p;
  request.seed = values.seed;
  request.stop_at_eos = values.stop_at_eos;
  request.stop = values.stop;
  request.logprobs = values.logprobs;
  request.top_logprobs = values.top_logprobs;
}

void AddSamplingFlags(FlagSet& flags) {
  flags.Value("max-new-tokens", "N", "64", "tokens to generate at most")
      .Value("temperature", "T", "0", "sampling temperature; 0 = greedy")
      .Value("top-p", "P", "1", "nucleus sampling: smallest token set with probability >= P")
      .Value("top-k", "K", "0", "sample from the K most likely tokens; 0 = all")
      .Value("seed", "S", "0", "random seed (same seed, same tokens)")
      .Value("stop", "STR", "", "stop before this text (repeatable); it is never printed")
      .Value("logprobs", "N", "",
             "report each token's logprob and its N most likely alternatives (0..20)")
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
  v.stop = flags.Strings("stop");
  if (flags.Has("logprobs")) {
    ASSIGN_OR_RETURN(int64_t n, flags.Int("logprobs"));
    if (n < 0 || n > model::SamplingParams::kMaxTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--logprobs must be in 0..", model::SamplingParams::kMaxTopLogprobs, ", got ", n));
    }
    v.logprobs = true;
    v.top_logprobs = static_cast<int>(n);
  }
  return v;
}

}  // namespace swarm::cli
