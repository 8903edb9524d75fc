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
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/weight_format.h"
#include "model/checkpoint.h"
#include "model/cpu_qmatmul.h"
#include "model/tensor_torch.h"
#include "model/weights.h"

namespace swarm::model {

// "cpu", or "cuda" / "cuda:N" when this LibTorch has CUDA and that GPU exists.
absl::StatusOr<at::Device> ParseDevice(const std::string& device);

// A weight matrix [out, in] in a quantized format (common/weight_format.h), on the CPU: the
// layout model/cpu_qmatmul.h's QuantMatrixView describes.
struct QuantizedWeight {
  WeightQuant format = WeightQuant::kNone;
  at::Tensor data;    // uint8 [out, QuantRowBytes(format, in)]
  at::Tensor scales;  // f16 [out, QuantGroups(in)]
  int64_t in = 0;

  bool defined() const { return format != WeightQuant::kNone; }
  int64_t out() const { return data.size(0); }
  // The kernels' view (valid while this is).
  QuantMatrixView View() const;
};

// q dequantized: an f32 CPU tensor [out, in] (exact: every q·d is an f32).
at::Tensor Dequantize(const QuantizedWeight& q);

// y = x·weightᵀ + bias (bias optional): what model/layers_torch.h's Linear() multiplies by. The
// weight is either a floating tensor or, with q8/q4 weights on the CPU, `quant` (weight then
// undefined). A floating weight is [out, in] (any strides), or — what the loader builds as
// LoadOptions::layout says — panel-major: [P, in, kMatmulPanel] holding `panel_out` outputs as
// model/cpu_matmul.h describes (padding zero).
struct LinearWeights {
  at::Tensor weight;  // [out, in], or [P, in, kMatmulPanel] when panel_out > 0
  at::Tensor bias;    // [out] or undefined
  QuantizedWeight quant;
  int64_t panel_out = 0;

  bool panels() const { return panel_out > 0; }
  int64_t out() const;  // Outputs, whatever the form.
  int64_t in() const;   // Inputs.
};

// w ([out, in], f32 or bf16, on the CPU, any strides) copied panel-major into huge-page memory.
at::Tensor ToPanels(const at::Tensor& w);

// A linear map whose output is consecutive parts (q|k|v, gate|up): one fused LinearWeights (fewer,
// larger matmuls on the decode path), or one per part (zero-copy views of the mapping).
struct SplitLinearWeights {
  std::vector<LinearWeights> parts;

  bool fused() const { return parts.size() == 1; }
  // From WeightLoader::LoadSplit's weights and biases (empty: no biases; else as many as weights).
  static SplitLinearWeights From(std::vector<at::Tensor> weights, std::vector<at::Tensor> biases);
  // From WeightLoader::LoadSplitLinear's weights (biases as above).
  static SplitLinearWeights From(std::vector<LinearWeights> weights,
                                 std::vector<at::Tensor> biases);
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

  // The weight of a linear map (no bias), `spec` its shape as stored: [out, in], or [in, out]
  // when `transposed` (GPT-2's Conv1D). Floating: Load's tensor ([out, in], a transposed view
  // when `transposed`). Quantized (LoadOptions::quant, or a checkpoint written by `swarm
  // quantize`): quantized on the CPU one slice of rows at a time from the mapped file (no f32 copy
  // of the whole tensor), or read as stored; on CUDA dequantized again to the compute dtype (the
  // values carry the format's rounding). Errors name the tensor.
  absl::StatusOr<LinearWeights> LoadLinear(const TensorSpec& spec, bool transposed = false);
  // Parts of one linear map (q/k/v, gate/up), [out_p, in] each: as LoadSplit (one fused weight, or
  // one per part in zero-copy mode), quantized as LoadLinear.
  absl::StatusOr<std::vector<LinearWeights>> LoadSplitLinear(const std::vector<TensorSpec>& parts);

  // The quantized format of the linear weights (kNone: floating).
  WeightQuant quant() const { return quant_; }
  // Called with each quantized part as LoadLinear/LoadSplitLinear produce it (its file name and
  // its rows of the quantized weight): `swarm quantize` writes them out. Null: none.
  using QuantizedSink = std::function<void(const std::string& file_name, const QuantizedWeight&)>;
  void set_quantized_sink(QuantizedSink sink) { sink_ = std::move(sink); }

 private:
  WeightLoader(const Checkpoint& checkpoint, at::Device device, at::ScalarType dtype, bool copy)
      : checkpoint_(&checkpoint), device_(device), dtype_(dtype), copy_(copy) {}
  // `parts` concatenated along dim 0 into one tensor (a single part in zero-copy mode).
  absl::StatusOr<at::Tensor> LoadConcat(const std::vector<TensorSpec>& parts);
  // w as loaded, made panel-major where this loader builds panels (panels_: LoadOptions::layout)
  // — CPU copies of f32 or bf16 weights; else w as it is.
  absl::StatusOr<LinearWeights> MaybePanels(LinearWeights w);
  // `parts` quantized (or read quantized) into one QuantizedWeight, rows in part order.
  absl::StatusOr<QuantizedWeight> LoadQuantized(const std::vector<TensorSpec>& parts,
                                                bool transposed);

  const Checkpoint* checkpoint_;
  at::Device device_;
  at::ScalarType dtype_;
  bool copy_;
  WeightQuant quant_ = WeightQuant::kNone;
  bool prequantized_ = false;  // The checkpoint stores the linear weights quantized.
  bool panels_ = false;
  std::function<void()> on_layer_loaded_;
  QuantizedSink sink_;
  int64_t bytes_ = 0;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_WEIGHTS_TORCH_H_
