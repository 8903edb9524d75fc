// `swarm quantize`: a q8 or q4 copy of a model directory that loads with no quantization step
// (tools/quantize.h).
#include <cstdio>

#include "client/cli/command.h"
#include "common/flags.h"
#include "common/weight_format.h"
#include "tools/quantize.h"

namespace swarm::cli {
namespace {

const FlagSet& QuantizeFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm quantize",
              "write a copy of a model with its linear weights quantized (q8 or q4), loaded "
              "directly by run, swarm-worker and swarm up");
    f.Required("model", "DIR", "the model directory (f32, bf16 or f16 safetensors)")
        .Value("format", "q8|q4", "q8", "the quantized format (groups of 32, f16 scales)")
        .Required("out", "DIR", "the directory to write (not the model directory)");
    return f;
  }();
  return flags;
}

int QuantizeCommand(const std::vector<std::string>& args) {
  constexpr const char* kName = "quantize";
  auto flags = QuantizeFlags().Parse(args);
  if (!flags.ok()) return Fail(kName, flags.status());
  tools::QuantizeOptions options;
  auto model = flags->Required("model");
  if (!model.ok()) return Fail(kName, model.status());
  auto out = flags->Required("out");
  if (!out.ok()) return Fail(kName, out.status());
  auto format = ParseWeightQuant(flags->String("format"));
  if (!format.ok()) return Fail(kName, format.status());
  options.model_dir = *model;
  options.out_dir = *out;
  options.format = *format;
  auto result = tools::QuantizeModel(options);
  if (!result.ok()) return Fail(kName, result.status());
  std::printf("quantized %s to %s: %lld tensor bytes -> %lld\n", options.model_dir.c_str(),
              WeightQuantName(options.format), static_cast<long long>(result->bytes_in),
              static_cast<long long>(result->bytes_out));
  for (const std::string& f : result->files) std::printf("wrote %s\n", f.c_str());
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(quantize, "quantize", QuantizeCommand, QuantizeFlags);

}  // namespace swarm::cli
