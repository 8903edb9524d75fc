// The LibTorch boundary of the model library, internal to model/: the dtype mapping, HostTensor
// in and out of torch, and TorchCall, which turns LibTorch's exceptions into absl::Status at each
// call site (our code does not throw). Every model/*.cc that computes on LibTorch includes it,
// through the other model/*_torch.h headers; nothing outside model/*.cc may include a
// model/*_torch.h (tests/layering checks it).
//
// It includes <ATen/ATen.h> (the tensor library, ~8 s to parse here) rather than <torch/torch.h>
// (~24 s: autograd, nn modules, optimisers, data loaders), which the model library does not use.
// Stateless inline helpers; thread-safe.
#ifndef SWARM_MODEL_TENSOR_TORCH_H_
#define SWARM_MODEL_TENSOR_TORCH_H_

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/host_tensor.h"

namespace swarm::model {

inline at::ScalarType ToTorch(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

// Hidden states in: a HostTensor viewed (not copied) as a CPU tensor; valid while `h` is.
inline at::Tensor FromHost(const HostTensor& h) {
  return at::from_blob(const_cast<char*>(h.data.data()), h.shape,
                       at::TensorOptions().dtype(ToTorch(h.dtype)));
}

// Hidden states out: `t` copied to host memory in `dtype`.
inline HostTensor ToHost(const at::Tensor& t, DType dtype) {
  at::Tensor c = t.to(at::kCPU, ToTorch(dtype)).contiguous();
  HostTensor out;
  out.dtype = dtype;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.data.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}

// Runs `fn` (returning absl::Status or absl::StatusOr), turning any exception LibTorch throws into
// an Internal status "what: <exception message>".
template <typename Fn>
auto TorchCall(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace swarm::model

#endif  // SWARM_MODEL_TENSOR_TORCH_H_
