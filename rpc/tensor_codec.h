// Hidden states between HostTensor (what the model library computes on) and the wire's
// swarm.v1.Tensor. Bytes are moved, not copied, wherever the source can be consumed: a step's
// hidden state is swapped into the outgoing message and out of the incoming one, so the only
// copies on the hot path are protobuf's own (de)serialisation. Tensors over kMaxTensorPieceBytes
// travel as several messages (see tensor.proto); TensorAssembler puts them back together.
// Used by the worker and the coordinator. Stateless functions are thread-safe; a TensorAssembler
// or PieceAssembler belongs to one call.
#ifndef SWARM_RPC_TENSOR_CODEC_H_
#define SWARM_RPC_TENSOR_CODEC_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"
#include "rpc/channel.h"
#include "swarm/v1/tensor.pb.h"

namespace swarm::rpc {

v1::DType ToProtoDType(DType dtype);
// InvalidArgument for DTYPE_UNSPECIFIED or a value this build does not know.
absl::StatusOr<DType> FromProtoDType(int dtype);

// Bytes a tensor of `shape` and `dtype` holds, or InvalidArgument for a negative dimension or an
// overflow. `what` names the tensor in the message.
absl::StatusOr<int64_t> TensorBytes(const google::protobuf::RepeatedField<int64_t>& shape,
                                    DType dtype, absl::string_view what);

// Moves `t`'s bytes into `out` (t.data is left empty).
void MoveTensorToProto(HostTensor&& t, v1::Tensor* out);
// Copies `t` into `out` (for a tensor the caller must keep).
void CopyTensorToProto(const HostTensor& t, v1::Tensor* out);
// Copies the shape and dtype of `t` and bytes [offset, offset + len) of its data into `out`:
// one piece of a streamed tensor.
void CopyTensorPieceToProto(const HostTensor& t, size_t offset, size_t len, bool with_header,
                            v1::Tensor* out);

// Moves a complete tensor out of `in`: checks the dtype, that the shape has `rank` dimensions
// (any rank when rank < 0) and that data holds exactly the bytes the shape says. `what` names the
// tensor in errors ("hidden"). InvalidArgument otherwise.
absl::StatusOr<HostTensor> MoveTensorFromProto(v1::Tensor* in, int rank, absl::string_view what);

// Reassembles a tensor sent as pieces. Begin() with the first message's tensor, Append() each
// following piece until complete(). Errors (InvalidArgument): a bad header, more bytes than the
// shape holds, a total above `max_bytes`.
class TensorAssembler {
 public:
  absl::Status Begin(v1::Tensor* first, int rank, int64_t max_bytes, absl::string_view what);
  absl::Status Append(std::string* piece);
  bool started() const { return started_; }
  bool complete() const { return started_ && static_cast<int64_t>(t_.data.size()) == expected_; }
  // Bytes still expected.
  int64_t remaining() const { return expected_ - static_cast<int64_t>(t_.data.size()); }
  // The assembled tensor; call once, after complete().
  HostTensor Take() { return std::move(t_); }
  // Bytes of memory held for the tensor (Begin() reserves the whole shape's).
  int64_t buffered_bytes() const { return static_cast<int64_t>(t_.data.capacity()); }
  // Frees the bytes buffered so far, for a call that ends before complete(); the header stays.
  void Release() { std::string().swap(t_.data); }

 private:
  bool started_ = false;
  int64_t expected_ = 0;
  std::string what_;
  HostTensor t_;
};

// The streamed calls of worker.proto (ForwardStream, ForwardBatchStream, both directions) send
// a message as pieces: the first carries every field and `hidden`'s dtype, shape and first
// bytes; the later ones only hidden.data, at most kMaxTensorPieceBytes each. `Message` is any
// message with a `Tensor hidden` field.

// Pieces `t` travels in (at least 1, for an empty tensor too).
inline size_t PieceCount(const HostTensor& t) {
  return t.data.empty() ? 1 : (t.data.size() + kMaxTensorPieceBytes - 1) / kMaxTensorPieceBytes;
}

// Piece `index` (< PieceCount(t)) of the message `header` whose hidden tensor is `t` (header's own
// hidden is ignored): piece 0 is a copy of header with t's header and first bytes, the others
// only bytes.
template <typename Message>
void FillPiece(const Message& header, const HostTensor& t, size_t index, Message* out) {
  const size_t offset = std::min(index * kMaxTensorPieceBytes, t.data.size());
  const size_t len = std::min(kMaxTensorPieceBytes, t.data.size() - offset);
  if (index == 0) {
    *out = header;
  } else {
    out->Clear();
  }
  CopyTensorPieceToProto(t, offset, len, /*with_header=*/index == 0, out->mutable_hidden());
}

// Reassembles a message sent as pieces: Add() each message read, in order, until complete();
// header() then holds every field but hidden.data, and TakeHidden() the tensor. Errors as
// TensorAssembler's (`what` names the tensor).
template <typename Message>
class PieceAssembler {
 public:
  PieceAssembler(int64_t max_bytes, std::string what)
      : max_bytes_(max_bytes), what_(std::move(what)) {}
  // Consumes `piece` (its hidden.data is moved out).
  absl::Status Add(Message* piece) {
    if (!tensor_.started()) {
      header_.Swap(piece);
      return tensor_.Begin(header_.mutable_hidden(), /*rank=*/2, max_bytes_, what_);
    }
    return tensor_.Append(piece->mutable_hidden()->mutable_data());
  }
  bool started() const { return tensor_.started(); }
  bool complete() const { return tensor_.complete(); }
  int64_t remaining() const { return tensor_.remaining(); }
  // The first piece's fields (an empty message before the first Add()).
  const Message& header() const { return header_; }
  Message* mutable_header() { return &header_; }
  // Call once, after complete().
  HostTensor TakeHidden() { return tensor_.Take(); }
  // TensorAssembler's: the memory held for the tensor, and freeing it before complete().
  int64_t buffered_bytes() const { return tensor_.buffered_bytes(); }
  void Release() { tensor_.Release(); }

 private:
  const int64_t max_bytes_;
  const std::string what_;
  Message header_;
  TensorAssembler tensor_;
};

}  // namespace swarm::rpc

#endif  // SWARM_RPC_TENSOR_CODEC_H_
