// Weight loading, internal to model/ (model/weights.h has the public LoadOptions): checkpoint
// tensors validated against the shapes the config implies, then brought onto the device in the
// compute dtype, as huge-page copies, zero-copy views of the file mapping, or converted copies.
// The architecture families (model/llama.cc, model/gpt2.cc) call it for every tensor they load;
// LayerHost and ModelEnds create one WeightLoader per load. Also the weight containers the
// building blocks (model/layers_torch.h) consume. Later quantized formats (q8, q4) plug in here:
// the loader produces them, LinearWeights carries them, and Linear() computes with them.
//
// A WeightLoader is used by one thread (the one loading); the tensors it returns are immutable.
#ifndef SWARM_MODEL_WEIGHTS_TORCH_H_
#define SWARM_MODEL_WEIGHTS_TORCH_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/checkpoint.h"
#include "model/tensor_torch.h"
#include "model/weights.h"

namespace swarm::model {

// "cpu", or "cuda" / "cuda:N" when this LibTorch has CUDA and that GPU exists.
absl::StatusOr<at::Device> ParseDevice(const std::string& device);

// y = x·weightᵀ + bias (bias optional): what model/layers_torch.h's Linear() multiplies by.
struct LinearWeights {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
};

// A linear map whose output is consecutive parts (q|k|v, gate|up): one fused LinearWeights (fewer,
// larger matmuls on the decode path), or one per part (zero-copy views of the mapping).
struct SplitLinearWeights {
  std::vector<LinearWeights> parts;

  bool fused() const { return parts.size() == 1; }
  // From WeightLoader::LoadSplit's weights and biases (empty: no biases; else as many as weights).
  static SplitLinearWeights From(std::vector<at::Tensor> weights, std::vector<at::Tensor> biases);
};

// A tensor to load: its logical name (Checkpoint::Resolve) and the shape the config implies.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

class WeightLoader {
 public:
  // A loader from `checkpoint` (which must outlive it) onto options.device in options.dtype.
  // FailedPrecondition for CUDA without a CUDA build, InvalidArgument for a bad device.
  static absl::StatusOr<WeightLoader> Create(const Checkpoint& checkpoint,
                                             const LoadOptions& options);

  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }
  // Zero copy: tensors stay views of the checkpoint mapping (CPU, copy_weights false).
  bool zero_copy() const { return device_.is_cpu() && !copy_; }
  // Bytes of every tensor loaded so far, as resident on the device.
  int64_t bytes() const { return bytes_; }
  // The families call this after loading each layer (LoadOptions::on_layer_loaded).
  void LayerLoaded() const {
    if (on_layer_loaded_) on_layer_loaded_();
  }

  // Loads one tensor. InvalidArgument when its shape differs from `shape` or its dtype is not a
  // floating type, NotFound when it is missing; the message names the file and the tensor.
  absl::StatusOr<at::Tensor> Load(absl::string_view logical, std::vector<int64_t> shape);
  // Loads tensors with the same trailing dimensions that are parts of one (q/k/v, gate/up): one
  // tensor concatenated along dim 0, or in zero-copy mode one view per part.
  absl::StatusOr<std::vector<at::Tensor>> LoadSplit(const std::vector<TensorSpec>& parts);

 private:
  WeightLoader(const Checkpoint& checkpoint, at::Device device, at::ScalarType dtype, bool copy)
      : checkpoint_(&checkpoint), device_(device), dtype_(dtype), copy_(copy) {}
  // `parts` concatenated along dim 0 into one tensor (a single part in zero-copy mode).
  absl::StatusOr<at::Tensor> LoadConcat(const std::vector<TensorSpec>& parts);

  const Checkpoint* checkpoint_;
  at::Device device_;
  at::ScalarType dtype_;
  bool copy_;
  std::function<void()> on_layer_loaded_;
  int64_t bytes_ = 0;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_WEIGHTS_TORCH_H_
