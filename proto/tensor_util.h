// Hidden states between model::HostTensor (what the model library computes on) and the wire's
// swarm.v1.Tensor. Bytes are moved, not copied, wherever the source can be consumed: a step's
// hidden state is swapped into the outgoing message and out of the incoming one, so the only
// copies on the hot path are protobuf's own (de)serialisation. Tensors over kMaxTensorPieceBytes
// travel as several messages (see tensor.proto); TensorAssembler puts them back together.
// Used by the worker and the coordinator. Stateless functions are thread-safe; a TensorAssembler
// belongs to one call.
#ifndef SWARM_PROTO_TENSOR_UTIL_H_
#define SWARM_PROTO_TENSOR_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/host_tensor.h"
#include "swarm/v1/tensor.pb.h"

namespace swarm {

// The largest piece of tensor data put in one message: 3 MiB, leaving room under gRPC's 4 MiB
// default for the other fields.
inline constexpr size_t kMaxTensorPieceBytes = size_t{3} << 20;
// The largest message a server or channel accepts (gRPC's default, stated explicitly).
inline constexpr int kMaxMessageBytes = 4 << 20;

v1::DType ToProtoDType(model::DType dtype);
// InvalidArgument for DTYPE_UNSPECIFIED or a value this build does not know.
absl::StatusOr<model::DType> FromProtoDType(int dtype);
// Bytes per element of `dtype`.
int ElementBytes(model::DType dtype);

// Bytes a tensor of `shape` and `dtype` holds, or InvalidArgument for a negative dimension or an
// overflow. `what` names the tensor in the message.
absl::StatusOr<int64_t> TensorBytes(const google::protobuf::RepeatedField<int64_t>& shape,
                                    model::DType dtype, absl::string_view what);

// Moves `t`'s bytes into `out` (t.data is left empty).
void MoveTensorToProto(model::HostTensor&& t, v1::Tensor* out);
// Copies `t` into `out` (for a tensor the caller must keep).
void CopyTensorToProto(const model::HostTensor& t, v1::Tensor* out);
// Copies the shape and dtype of `t` and bytes [offset, offset + len) of its data into `out`:
// one piece of a streamed tensor.
void CopyTensorPieceToProto(const model::HostTensor& t, size_t offset, size_t len, bool with_header,
                            v1::Tensor* out);

// Moves a complete tensor out of `in`: checks the dtype, that the shape has `rank` dimensions
// (any rank when rank < 0) and that data holds exactly the bytes the shape says. `what` names the
// tensor in errors ("hidden"). InvalidArgument otherwise.
absl::StatusOr<model::HostTensor> MoveTensorFromProto(v1::Tensor* in, int rank,
                                                      absl::string_view what);

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
  model::HostTensor Take() { return std::move(t_); }

 private:
  bool started_ = false;
  int64_t expected_ = 0;
  std::string what_;
  model::HostTensor t_;
};

}  // namespace swarm

#endif  // SWARM_PROTO_TENSOR_UTIL_H_
