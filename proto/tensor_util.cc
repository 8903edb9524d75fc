#include "proto/tensor_util.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace swarm {

// The model library's HostTensor helpers live in swarm_model (LibTorch); this file re-derives the
// little it needs so that swarm_proto, and with it the client SDK, stays free of LibTorch.

v1::DType ToProtoDType(model::DType dtype) {
  switch (dtype) {
    case model::DType::kF32:
      return v1::DTYPE_F32;
    case model::DType::kF16:
      return v1::DTYPE_F16;
    case model::DType::kBF16:
      return v1::DTYPE_BF16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<model::DType> FromProtoDType(int dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return model::DType::kF32;
    case v1::DTYPE_F16:
      return model::DType::kF16;
    case v1::DTYPE_BF16:
      return model::DType::kBF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported tensor dtype ", dtype,
                                                     " (want DTYPE_F32, DTYPE_F16 or DTYPE_BF16)"));
  }
}

int ElementBytes(model::DType dtype) { return dtype == model::DType::kF32 ? 4 : 2; }

absl::StatusOr<int64_t> TensorBytes(const google::protobuf::RepeatedField<int64_t>& shape,
                                    model::DType dtype, absl::string_view what) {
  int64_t n = ElementBytes(dtype);
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

void MoveTensorToProto(model::HostTensor&& t, v1::Tensor* out) {
  out->set_dtype(ToProtoDType(t.dtype));
  out->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  out->mutable_data()->swap(t.data);
  t.data.clear();
}

void CopyTensorToProto(const model::HostTensor& t, v1::Tensor* out) {
  out->set_dtype(ToProtoDType(t.dtype));
  out->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  out->set_data(t.data);
}

void CopyTensorPieceToProto(const model::HostTensor& t, size_t offset, size_t len, bool with_header,
                            v1::Tensor* out) {
  if (with_header) {
    out->set_dtype(ToProtoDType(t.dtype));
    out->mutable_shape()->Assign(t.shape.begin(), t.shape.end());
  }
  out->set_data(t.data.data() + offset, len);
}

namespace {

absl::Status CheckHeader(const v1::Tensor& in, int rank, absl::string_view what,
                         model::DType* dtype, int64_t* bytes) {
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

absl::StatusOr<model::HostTensor> MoveTensorFromProto(v1::Tensor* in, int rank,
                                                      absl::string_view what) {
  model::HostTensor t;
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

}  // namespace swarm
