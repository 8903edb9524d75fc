#include "rpc/tensor_codec.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace swarm::rpc {

v1::DType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return v1::DTYPE_F32;
    case DType::kF16:
      return v1::DTYPE_F16;
    case DType::kBF16:
      return v1::DTYPE_BF16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<DType> FromProtoDType(int dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return DType::kF32;
    case v1::DTYPE_F16:
      return DType::kF16;
    case v1::DTYPE_BF16:
      return DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported tensor dtype ", dtype,
                                                     " (want DTYPE_F32, DTYPE_F16 or DTYPE_BF16)"));
  }
}

absl::StatusOr<int64_t> TensorBytes(const google::protobuf::RepeatedField<int64_t>& shape,
                                    DType dtype, absl::string_view what) {
  int64_t n = DTypeSize(dtype);
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative dimension in shape [", absl::StrJoin(shape, ","), "]"));
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": shape [", absl::StrJoin(shape, ","), "] is too large"));
    }
    n *= d;
  }
  return n;
}

void MoveTensorToProto(HostTensor&& t, v1::Tensor* out) {
  out->set_dtype(ToProtoDType(t.dtype));
  out->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  out->mutable_data()->swap(t.data);
  t.data.clear();
}

void CopyTensorToProto(const HostTensor& t, v1::Tensor* out) {
  out->set_dtype(ToProtoDType(t.dtype));
  out->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  out->set_data(t.data);
}

void CopyTensorPieceToProto(const HostTensor& t, size_t offset, size_t len, bool with_header,
                            v1::Tensor* out) {
  if (with_header) {
    out->set_dtype(ToProtoDType(t.dtype));
    out->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  }
  out->set_data(t.data.data() + offset, len);
}

namespace {

absl::Status CheckHeader(const v1::Tensor& in, int rank, absl::string_view what, DType* dtype,
                         int64_t* bytes) {
  auto d = FromProtoDType(in.dtype());
  if (!d.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", d.status().message()));
  if (rank >= 0 && in.shape_size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected ", rank,
                                                   " dimensions, got shape [",
                                                   absl::StrJoin(in.shape(), ","), "]"));
  }
  auto n = TensorBytes(in.shape(), *d, what);
  if (!n.ok()) return n.status();
  *dtype = *d;
  *bytes = *n;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HostTensor> MoveTensorFromProto(v1::Tensor* in, int rank, absl::string_view what) {
  HostTensor t;
  int64_t bytes = 0;
  if (auto s = CheckHeader(*in, rank, what, &t.dtype, &bytes); !s.ok()) return s;
  if (static_cast<int64_t>(in->data().size()) != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": shape [", absl::StrJoin(in->shape(), ","), "] in ", v1::DType_Name(in->dtype()),
        " needs ", bytes, " bytes, got ", in->data().size()));
  }
  t.shape.assign(in->shape().begin(), in->shape().end());
  t.data.swap(*in->mutable_data());
  return t;
}

absl::Status TensorAssembler::Begin(v1::Tensor* first, int rank, int64_t max_bytes,
                                    absl::string_view what) {
  what_ = std::string(what);
  if (auto s = CheckHeader(*first, rank, what, &t_.dtype, &expected_); !s.ok()) return s;
  if (expected_ > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", expected_, " bytes exceed the limit of ", max_bytes));
  }
  t_.shape.assign(first->shape().begin(), first->shape().end());
  started_ = true;
  if (static_cast<int64_t>(first->data().size()) > expected_) {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": shape [", absl::StrJoin(t_.shape, ","),
                                                   "] needs ", expected_, " bytes, got more"));
  }
  t_.data.swap(*first->mutable_data());
  t_.data.reserve(expected_);
  return absl::OkStatus();
}

absl::Status TensorAssembler::Append(std::string* piece) {
  if (!started_) return absl::InvalidArgumentError(absl::StrCat(what_, ": piece before header"));
  if (static_cast<int64_t>(piece->size()) > remaining()) {
    return absl::InvalidArgumentError(absl::StrCat(what_, ": shape [", absl::StrJoin(t_.shape, ","),
                                                   "] needs ", expected_, " bytes, got more"));
  }
  t_.data.append(*piece);
  return absl::OkStatus();
}

}  // namespace swarm::rpc
