// How a model's weights are loaded: the device, the dtype they are computed and stored in, and
// whether CPU weights are copied or mapped. Passed to LayerHost::Create, ModelEnds::Create and
// Engine::Create by the engine, the worker, the coordinator, the CLI and the benchmarks. The
// loading itself (validation against the config, fused q/k/v and gate/up, huge-page copies,
// zero-copy views, dtype/device conversion) is model/weights_torch.h's WeightLoader, the place
// later quantized formats (q8, q4) plug in. Plain value type; torch-free.
#ifndef SWARM_MODEL_WEIGHTS_H_
#define SWARM_MODEL_WEIGHTS_H_

#include <functional>
#include <string>

#include "common/host_tensor.h"
#include "common/weight_format.h"

namespace swarm::model {

enum class CpuWeightLayout { kAuto, kPanels, kRows };

struct LoadOptions {
  std::string device = "cpu";  // "cpu" or "cuda:N".
  DType dtype = DType::kF32;   // Compute/storage dtype on the device.
  // q8/q4: the big linear weights (attention and MLP projections, the LM head) quantized at load
  // (common/weight_format.h); dtype must then be f32 on the CPU (activations, norms, biases and
  // embeddings stay f32); on CUDA they are dequantized again into dtype (no GPU kernel yet). A
  // checkpoint written by `swarm quantize` loads in its own format whatever this says (kNone or the
  // same format).
  WeightQuant quant = WeightQuant::kNone;
  // CPU, checkpoint dtype == dtype: true copies weights into huge-page-backed memory (fastest
  // decode); false keeps them as views of the file mapping (zero copy, shared page cache between
  // processes on one host, paged in on first use). Other cases always convert into new memory.
  bool copy_weights = true;
  // The layout of the floating linear weights (projections, an untied LM head) in CPU copies
  // (copy_weights): panel-major (model/cpu_matmul.h, kMatmulPanel) or [out, in] as the
  // checkpoint has them. kAuto: SWARM_WEIGHT_LAYOUT=panels|rows where set, else panels where
  // their kernel is the fast one (AVX-512). The results agree to rounding; the trade-off (panels
  // faster from 16 rows and in prefill, within ~2 % at 1–8) is in docs/benchmarks.md.
  CpuWeightLayout layout = CpuWeightLayout::kAuto;
  // Called on the loading thread after each layer is loaded (may be null): progress reports.
  std::function<void()> on_layer_loaded;
};

// Whether the loader builds panel-major weights for LoadOptions::layout kAuto: as the
// environment variable SWARM_WEIGHT_LAYOUT=panels|rows says where it is set, else when the row
// kernel this process runs (ResolveIsa: the CPU, capped by SWARM_CPU_ISA) is AVX-512's (its AVX2
// and scalar panel tiles exist for correctness but are slower than their row-major ones at
// several rows). Read at each load.
bool PanelsPay();

// The format the linear weights load in: a quantized checkpoint's own (`stored`, its config's
// swarm_quantization), else options.quant. (WeightLoader refuses a stored format that differs from
// a requested one.)
inline WeightQuant LoadedQuant(WeightQuant stored, const LoadOptions& options) {
  return stored != WeightQuant::kNone ? stored : options.quant;
}

}  // namespace swarm::model

#endif  // SWARM_MODEL_WEIGHTS_H_
