#include "common/tensor_rows.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace swarm {
namespace {

absl::Status CheckMatrix(const HostTensor& t, const char* what) {
  if (t.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shape [", absl::StrJoin(t.shape, ","), "] is not [rows, width]"));
  }
  absl::Status s = t.Validate();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
  return absl::OkStatus();
}

// [begin, begin + count) inside [0, rows), written so that nothing overflows.
bool InRange(int64_t begin, int64_t count, int64_t rows) {
  return begin >= 0 && count >= 0 && begin <= rows && count <= rows - begin;
}

}  // namespace

absl::StatusOr<HostTensor> SliceRows(const HostTensor& t, int64_t begin, int64_t count) {
  if (absl::Status s = CheckMatrix(t, "slicing rows"); !s.ok()) return s;
  if (!InRange(begin, count, t.shape[0])) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rows ", begin, " (", count, " of them) are outside a tensor of ", t.shape[0], " rows"));
  }
  const int64_t row_bytes = t.shape[1] * DTypeSize(t.dtype);
  HostTensor out;
  out.dtype = t.dtype;
  out.shape = {count, t.shape[1]};
  out.data =
      t.data.substr(static_cast<size_t>(begin * row_bytes), static_cast<size_t>(count * row_bytes));
  return out;
}

absl::Status CopyRows(const HostTensor& from, int64_t from_row, int64_t count, HostTensor* to,
                      int64_t to_row) {
  if (absl::Status s = CheckMatrix(from, "copying rows"); !s.ok()) return s;
  if (absl::Status s = CheckMatrix(*to, "copying rows into"); !s.ok()) return s;
  if (from.dtype != to->dtype || from.shape[1] != to->shape[1]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "copying rows of [", absl::StrJoin(from.shape, ","), "] ", DTypeName(from.dtype), " into [",
        absl::StrJoin(to->shape, ","), "] ", DTypeName(to->dtype)));
  }
  if (!InRange(from_row, count, from.shape[0]) || !InRange(to_row, count, to->shape[0])) {
    return absl::InvalidArgumentError(absl::StrCat("copying ", count, " rows from row ", from_row,
                                                   " of ", from.shape[0], " to row ", to_row,
                                                   " of ", to->shape[0]));
  }
  const int64_t row_bytes = to->shape[1] * DTypeSize(to->dtype);
  to->data.replace(static_cast<size_t>(to_row * row_bytes), static_cast<size_t>(count * row_bytes),
                   from.data, static_cast<size_t>(from_row * row_bytes),
                   static_cast<size_t>(count * row_bytes));
  return absl::OkStatus();
}

HostTensor ZeroRows(DType dtype, int64_t rows, int64_t width) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = {rows, width};
  t.data.assign(static_cast<size_t>(rows * width * DTypeSize(dtype)), '\0');
  return t;
}

}  // namespace swarm
