// `swarm synth`: writes a random Hugging Face model of any shape (for benchmarks and memory
// tests at sizes the shared fixtures lack). The work is in tools/synth.h.
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "common/progress.h"
#include "tools/synth.h"

namespace swarm::cli {
namespace {

const FlagSet& SynthFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm synth", "write a random model directory of a given shape (tests, benchmarks)");
    f.Required("layers", "L", "decoder layers")
        .Required("hidden", "D", "hidden size")
        .Required("heads", "H", "attention heads")
        .Required("vocab", "V", "vocabulary size")
        .Required("out", "DIR", "the directory to write")
        .Value("arch", "llama|mistral|qwen2", "llama", "architecture family")
        .Value("intermediate", "I", "", "MLP width (default: 8/3 x hidden rounded up to 64)")
        .Value("kv-heads", "K", "0", "key/value heads; 0 = --heads")
        .Value("head-dim", "N", "0", "head dimension; 0 = hidden / heads")
        .Value("dtype", "f32|bf16", "f32", "dtype of the weights")
        .Value("seed", "S", "0", "random seed")
        .Value("max-position", "N", "2048", "context length")
        .Value("sliding-window", "W", "0", "sliding-window attention width; 0 = none")
        .Value("rope-theta", "T", "0", "rotary base; 0 = the family's default")
        .Value("init-std", "X", "0.02", "standard deviation of the random weights")
        .Value("planted", "G", "0",
               "write a planted model instead (llama): G token ranges, each middle layer "
               "matters only for prompts from one range (the router's positive control)")
        .Bool("tie-embeddings", "share the embedding and LM head weights");
    return f;
  }();
  return flags;
}

int SynthCommand(const std::vector<std::string>& args) {
  constexpr const char* kName = "synth";
  auto flags = SynthFlags().Parse(args);
  if (!flags.ok()) return Fail(kName, flags.status());
  tools::SynthOptions o;
  o.arch = flags->String("arch");
  for (const char* required : {"layers", "hidden", "heads", "vocab", "out"}) {
    if (!flags->Has(required)) {
      return Fail(kName,
                  absl::InvalidArgumentError(absl::StrCat("missing required flag --", required)));
    }
  }
  struct IntFlag {
    const char* name;
    int64_t* field;
  };
  for (const IntFlag& f :
       {IntFlag{"layers", &o.layers}, IntFlag{"hidden", &o.hidden}, IntFlag{"heads", &o.heads},
        IntFlag{"kv-heads", &o.kv_heads}, IntFlag{"head-dim", &o.head_dim},
        IntFlag{"vocab", &o.vocab}, IntFlag{"max-position", &o.max_position},
        IntFlag{"sliding-window", &o.sliding_window}, IntFlag{"planted", &o.planted_groups}}) {
    auto v = flags->Int(f.name);
    if (!v.ok()) return Fail(kName, v.status());
    *f.field = *v;
  }
  {
    auto v = flags->Int("intermediate", -1);
    if (!v.ok()) return Fail(kName, v.status());
    o.intermediate = *v;
  }
  // Llama's default: ≈ 8/3 · hidden rounded up to a multiple of 64 (4096 → 11008 is close).
  if (o.intermediate == -1) o.intermediate = (o.hidden * 8 / 3 + 63) / 64 * 64;
  auto seed = flags->Int("seed");
  if (!seed.ok()) return Fail(kName, seed.status());
  o.seed = static_cast<uint64_t>(*seed);
  auto theta = flags->Double("rope-theta");
  if (!theta.ok()) return Fail(kName, theta.status());
  o.rope_theta = *theta;
  auto init_std = flags->Double("init-std");
  if (!init_std.ok()) return Fail(kName, init_std.status());
  o.init_std = *init_std;
  const std::string dtype = flags->String("dtype");
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
  LazyProgress progress("writing weights", "MiB");
  o.progress = [&](int64_t done, int64_t total) { progress.Report(done >> 20, total >> 20); };
  auto result = tools::WriteSynthModel(o);
  progress.Finish();
  if (!result.ok()) return Fail(kName, result.status());
  std::printf("synthesised %s model: %lld parameters, %lld bytes of weights\n", o.arch.c_str(),
              static_cast<long long>(result->num_parameters),
              static_cast<long long>(result->weight_bytes));
  for (const std::string& f : result->files) std::printf("wrote %s\n", f.c_str());
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(synth, "synth", SynthCommand, SynthFlags);

}  // namespace swarm::cli
