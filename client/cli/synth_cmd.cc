// `swarm synth`: writes a random Hugging Face model of any shape (for benchmarks and memory
// tests at sizes the shared fixtures lack). The work is in tools/synth.h.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "tools/synth.h"

namespace swarm::cli {
namespace {

int SynthCommand(const std::vector<std::string>& args) {
  constexpr const char* kName = "synth";
  auto flags = Flags::Parse(
      args,
      {"arch", "layers", "hidden", "intermediate", "heads", "kv-heads", "head-dim", "vocab",
       "dtype", "seed", "out", "max-position", "sliding-window", "rope-theta", "init-std"},
      {"tie-embeddings"});
  if (!flags.ok()) return Fail(kName, flags.status());
  tools::SynthOptions o;
  o.arch = flags->String("arch", "llama");
  for (const char* required : {"layers", "hidden", "heads", "vocab", "out"}) {
    if (!flags->Has(required)) {
      return Fail(kName,
                  absl::InvalidArgumentError(absl::StrCat("missing required flag --", required)));
    }
  }
  struct IntFlag {
    const char* name;
    int64_t* field;
    int64_t fallback;
  };
  for (const IntFlag& f : {IntFlag{"layers", &o.layers, 0}, IntFlag{"hidden", &o.hidden, 0},
                           IntFlag{"heads", &o.heads, 0}, IntFlag{"kv-heads", &o.kv_heads, 0},
                           IntFlag{"head-dim", &o.head_dim, 0}, IntFlag{"vocab", &o.vocab, 0},
                           IntFlag{"max-position", &o.max_position, 2048},
                           IntFlag{"sliding-window", &o.sliding_window, 0},
                           IntFlag{"intermediate", &o.intermediate, -1}}) {
    auto v = flags->Int(f.name, f.fallback);
    if (!v.ok()) return Fail(kName, v.status());
    *f.field = *v;
  }
  // Llama's default: ≈ 8/3 · hidden rounded up to a multiple of 64 (4096 → 11008 is close).
  if (o.intermediate == -1) o.intermediate = (o.hidden * 8 / 3 + 63) / 64 * 64;
  auto seed = flags->Int("seed", 0);
  if (!seed.ok()) return Fail(kName, seed.status());
  o.seed = static_cast<uint64_t>(*seed);
  auto theta = flags->Double("rope-theta", 0);
  if (!theta.ok()) return Fail(kName, theta.status());
  o.rope_theta = *theta;
  auto init_std = flags->Double("init-std", 0.02);
  if (!init_std.ok()) return Fail(kName, init_std.status());
  o.init_std = *init_std;
  const std::string dtype = flags->String("dtype", "f32");
  if (dtype == "f32" || dtype == "float32") {
    o.dtype = DType::kF32;
  } else if (dtype == "bf16" || dtype == "bfloat16") {
    o.dtype = DType::kBF16;
  } else {
    return Fail(kName, absl::InvalidArgumentError(
                           absl::StrCat("--dtype '", dtype, "' is not f32 or bf16")));
  }
  o.tie_embeddings = flags->Bool("tie-embeddings");
  o.out_dir = flags->String("out");
  auto result = tools::WriteSynthModel(o);
  if (!result.ok()) return Fail(kName, result.status());
  std::printf("synthesised %s model: %lld parameters, %lld bytes of weights\n", o.arch.c_str(),
              static_cast<long long>(result->num_parameters),
              static_cast<long long>(result->weight_bytes));
  for (const std::string& f : result->files) std::printf("wrote %s\n", f.c_str());
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND(synth, "synth",
                       "synth --layers L --hidden D --heads H --vocab V --out DIR "
                       "[--arch llama|mistral|qwen2] [--intermediate I] [--kv-heads K] "
                       "[--head-dim N] [--dtype f32|bf16] [--seed S] [--max-position N] "
                       "[--tie-embeddings] [--sliding-window W] [--rope-theta T]",
                       SynthCommand);

}  // namespace swarm::cli
