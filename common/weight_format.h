// The weight formats a model loads in: a floating dtype (f32, bf16, f16) or a quantized format
// (q8, q4) of the big linear weights. The one parser of the --dtype flag of `swarm run`,
// `swarm up`, `swarm-worker` and `swarm memory`, and the one place that knows the bytes of a
// quantized matrix (the loader, `swarm quantize` and the memory estimate use it). Torch-free
// plain values; the functions are pure and thread-safe.
//
// Quantized formats (docs/quality.md, docs/cli.md "swarm quantize"): each row of a weight
// W [out, in] is cut into groups of kQuantGroup consecutive inputs (the last one zero-padded when
// `in` is not a multiple), each group with one f16 scale d:
//   q8 (like llama.cpp's Q8_0): d = max|w| / 127, q = round(w / d) in [-127, 127], w ≈ q·d;
//       one int8 per weight: 1.0625 bytes per weight with the scale.
//   q4 (like llama.cpp's Q4_0): m = the w of largest |w| (with its sign), d = m / -8,
//       q = clamp(round(w / d) + 8, 0, 15), w ≈ (q − 8)·d; two per byte (in a group of 32, byte b
//       holds element b in its low nibble and element b + 16 in its high one): 0.5625 bytes.
// Activations, norms, biases and embedding tables stay in f32.
#ifndef SWARM_COMMON_WEIGHT_FORMAT_H_
#define SWARM_COMMON_WEIGHT_FORMAT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"

namespace swarm {

enum class WeightQuant { kNone = 0, kQ8 = 1, kQ4 = 2 };

// Inputs per quantization group (one scale each).
inline constexpr int64_t kQuantGroup = 32;

// "none", "q8", "q4".
const char* WeightQuantName(WeightQuant quant);
// Parses "q8" or "q4" (the --format of `swarm quantize`, swarm_quantization.format in a
// quantized checkpoint's config.json).
absl::StatusOr<WeightQuant> ParseWeightQuant(absl::string_view name);

// What --dtype names: the compute dtype and, for q8/q4, the format of the linear weights (their
// compute dtype is then f32).
struct WeightFormat {
  DType dtype = DType::kF32;
  WeightQuant quant = WeightQuant::kNone;
};

// Parses "f32"|"bf16"|"f16" (ParseDType's spellings) or "q8"|"q4".
absl::StatusOr<WeightFormat> ParseWeightFormat(absl::string_view name);
// "f32", "bf16", "f16", "q8", "q4".
const char* WeightFormatName(const WeightFormat& format);

// Groups per row of `in` inputs, and a quantized row's bytes of codes (padded to whole groups).
int64_t QuantGroups(int64_t in);
int64_t QuantRowBytes(WeightQuant quant, int64_t in);
// Bytes of a quantized [out, in] matrix: codes plus f16 scales.
int64_t QuantizedBytes(WeightQuant quant, int64_t out, int64_t in);

}  // namespace swarm

#endif  // SWARM_COMMON_WEIGHT_FORMAT_H_
