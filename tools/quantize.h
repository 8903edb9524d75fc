// `swarm quantize`: writes a quantized copy of a model directory (q8 or q4, common/weight_format.h)
// that every loader reads directly, with no quantization step: one safetensors shard per layer
// and one for the ends (model/quantize.h has the tensors and their naming), an index, config.json
// with "swarm_quantization": {"format", "group_size"}, and the directory's other files (tokenizer,
// generation config, chat template) copied. One layer in memory at a time. Never writes into the
// source directory. Stateless; thread-compatible.
#ifndef SWARM_TOOLS_QUANTIZE_H_
#define SWARM_TOOLS_QUANTIZE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/weight_format.h"

namespace swarm::tools {

struct QuantizeOptions {
  std::string model_dir;
  std::string out_dir;
  WeightQuant format = WeightQuant::kQ8;
};

struct QuantizeResult {
  std::vector<std::string> files;  // Every file written.
  int64_t bytes_in = 0;            // Tensor bytes of the source and of the output.
  int64_t bytes_out = 0;
};

// InvalidArgument when out_dir is model_dir, or the model is quantized already;
// loading and writing errors name the tensor or file.
absl::StatusOr<QuantizeResult> QuantizeModel(const QuantizeOptions& options);

}  // namespace swarm::tools

#endif  // SWARM_TOOLS_QUANTIZE_H_
