// A dense tensor in host memory as raw little-endian bytes: the currency between the model library
// and code that must not include LibTorch (gRPC handlers, the coordinator's dispatch, the CLI).
// Hidden states cross process boundaries in this form; the wire format in proto/ mirrors it.
// Plain value type; not synchronised. Also the project's one f16/bf16 <-> f32 codec.
#ifndef SWARM_COMMON_HOST_TENSOR_H_
#define SWARM_COMMON_HOST_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace swarm {

enum class DType { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Bytes per element of `dtype`.
int DTypeSize(DType dtype);
// "f32", "f16", "bf16".
const char* DTypeName(DType dtype);
// Parses "f32"/"float32", "f16"/"float16", "bf16"/"bfloat16".
absl::StatusOr<DType> ParseDType(absl::string_view name);

// The scalar codec of the 16-bit float types (IEEE binary16, bfloat16), bit-exact: subnormals,
// infinities and NaNs survive. FloatToBf16 rounds to nearest even (as torch does) and keeps a
// NaN a NaN. Used by the quantized formats' scales, HostTensor, the router's embedding reader and
// the checkpoint writers.
float HalfToFloat(uint16_t h);
float Bf16ToFloat(uint16_t h);
uint16_t FloatToBf16(float value);
// IEEE binary16 of an f32, rounding to nearest even (overflow to infinity, subnormals kept).
uint16_t FloatToHalf(float value);

struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string data;  // NumElements() * DTypeSize(dtype) bytes, row-major, little-endian.

  int64_t NumElements() const;
  // OK when data.size() matches shape and dtype; otherwise InvalidArgument naming both.
  absl::Status Validate() const;
  // OK when every element is finite (no NaN or infinity); otherwise InvalidArgument naming `what`
  // and the first such element's index. Reads the bits (no conversion); call after Validate().
  absl::Status CheckFinite(absl::string_view what) const;
  // The same over rows [first_row, first_row + rows) of a tensor of rank >= 1 (a row being one
  // index of the first dimension); the index named is the element's within the whole tensor.
  absl::Status CheckFiniteRows(absl::string_view what, int64_t first_row, int64_t rows) const;
  // Converts to f32 values (copies). Used by tests and the CLI.
  std::vector<float> ToFloats() const;
  static HostTensor FromFloats(std::vector<int64_t> shape, const std::vector<float>& values);
};

}  // namespace swarm

#endif  // SWARM_COMMON_HOST_TENSOR_H_
