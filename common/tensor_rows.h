// Row ranges of 2-D host tensors ([rows, width] in any dtype): the slicing and placing a batched
// step needs to split one batch's hidden states into its sequences' rows and put replies back
// together (worker/worker.cc, rpc/batch_codec.cc). Bytes are copied; nothing is converted.
// Stateless functions; thread-safe.
#ifndef SWARM_COMMON_TENSOR_ROWS_H_
#define SWARM_COMMON_TENSOR_ROWS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/host_tensor.h"

namespace swarm {

// Rows [begin, begin + count) of the 2-D tensor `t`, as a new [count, width] tensor of t's dtype.
// InvalidArgument when t is not 2-D or holds the wrong byte count, or the range is not inside it.
absl::StatusOr<HostTensor> SliceRows(const HostTensor& t, int64_t begin, int64_t count);

// Overwrites rows [to_row, to_row + count) of the 2-D tensor `*to` with rows [from_row,
// from_row + count) of `from`. InvalidArgument when either is not a valid 2-D tensor, their widths
// or dtypes differ, or a range is not inside its tensor.
absl::Status CopyRows(const HostTensor& from, int64_t from_row, int64_t count, HostTensor* to,
                      int64_t to_row);

// A zero-filled [rows, width] tensor of `dtype` (every supported dtype's zero is all-zero bytes).
HostTensor ZeroRows(DType dtype, int64_t rows, int64_t width);

}  // namespace swarm

#endif  // SWARM_COMMON_TENSOR_ROWS_H_
