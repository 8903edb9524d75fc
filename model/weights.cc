// Weight loading. Decode reads every weight once per token, so how a tensor lands in memory is
// the decode speed: same-dtype CPU weights are copied into huge-page-backed memory (or, zero-copy,
// left in the file mapping); anything else is converted by LibTorch onto the device.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/cpu_qmatmul.h"
#include "model/weights_torch.h"

namespace swarm::model {
namespace {

absl::StatusOr<at::ScalarType> ToTorch(StDType dtype) {
  switch (dtype) {
    case StDType::kF32:
      return at::kFloat;
    case StDType::kF16:
      return at::kHalf;
    case StDType::kBF16:
      return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", StDTypeName(dtype), " is not a floating weight type"));
  }
}

// A checkpoint tensor viewed in place (no copy); valid while the checkpoint is open.
at::Tensor View(const TensorView& view) {
  return at::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                       at::TensorOptions().dtype(*ToTorch(view.dtype)));
}

// Drops a mapped tensor's whole file pages from this process's resident set (it was copied or
// quantized out of them; the page cache keeps them for other processes).
void DropFilePages(const TensorView& v) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(v.data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(v.data) + v.nbytes) & ~(page - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// An uninitialised CPU tensor in anonymous memory backed by transparent huge pages (2 MiB pages
// take the TLB misses of 4 KiB pages off the decode path); a plain allocation if mmap fails.
at::Tensor HugePageEmpty(const std::vector<int64_t>& shape, at::ScalarType type) {
  size_t nbytes = c10::elementSize(type);
  for (int64_t d : shape) nbytes *= static_cast<size_t>(d);
  // Rounded to base pages only: THP backs every aligned 2 MiB stretch inside the region (and
  // adjacent regions merge), so small tensors waste at most a page.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = (nbytes + page - 1) & ~(page - 1);
  void* p = len == 0
                ? MAP_FAILED
                : mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return at::empty(shape, at::TensorOptions().dtype(type));
  madvise(p, len, MADV_HUGEPAGE);
  return at::from_blob(
      p, shape, [len](void* q) { munmap(q, len); }, at::TensorOptions().dtype(type));
}

// Copies tensors (concatenated along dim 0) out of the checkpoint mapping into huge-page memory,
// converted to `type` where theirs differs (f32 → bf16 for `--dtype bf16`: a plain conversion's
// allocation has 4 KiB pages, on which a bf16 decode read its weights at 55 % of the bandwidth
// against 68–70 % from huge pages, `model_bench --dtypes f32,bf16`), then drops the file pages
// from this process's resident set.
at::Tensor CopyToHugePages(const std::vector<TensorView>& views, at::ScalarType type) {
  std::vector<int64_t> shape = views[0].shape;
  shape[0] = 0;
  for (const TensorView& v : views) shape[0] += v.shape[0];
  at::Tensor out = HugePageEmpty(shape, type);
  int64_t row = 0;
  for (const TensorView& v : views) {
    at::Tensor part = out.narrow(0, row, v.shape[0]);
    if (*ToTorch(v.dtype) == type) {
      std::memcpy(part.data_ptr(), v.data, v.nbytes);
    } else {
      part.copy_(View(v));
    }
    row += v.shape[0];
    DropFilePages(v);
  }
  return out;
}

// Rows of a matrix quantized per slice: this many f32 values converted at a time at most.
constexpr int64_t kQuantizeSliceValues = int64_t{1} << 20;

}  // namespace

int64_t LinearWeights::out() const {
  if (quant.defined()) return quant.out();
  return panels() ? panel_out : weight.size(0);
}

int64_t LinearWeights::in() const {
  if (quant.defined()) return quant.in;
  return weight.size(1);
}

bool PanelsPay() {
  if (const char* env = std::getenv("SWARM_WEIGHT_LAYOUT")) {
    if (std::strcmp(env, "rows") == 0) return false;
    if (std::strcmp(env, "panels") == 0) return true;
  }
  return ResolveIsa(MatmulIsa::kAuto) == MatmulIsa::kAvx512;
}

at::Tensor ToPanels(const at::Tensor& w) {
  const int64_t n = w.size(0), k = w.size(1);
  const int64_t panels = (n + kMatmulPanel - 1) / kMatmulPanel, full = n / kMatmulPanel;
  at::Tensor out = HugePageEmpty({panels, k, kMatmulPanel}, w.scalar_type());
  // out[p][i][c] = w[p·64 + c][i]: panel p is w's rows p·64 … p·64 + 63 transposed.
  if (full > 0) {
    out.narrow(0, 0, full)
        .copy_(
            w.narrow(0, 0, full * kMatmulPanel).reshape({full, kMatmulPanel, k}).transpose(1, 2));
  }
  if (const int64_t rest = n - full * kMatmulPanel; rest > 0) {
    at::Tensor last = out[full];
    last.zero_();
    last.narrow(1, 0, rest).copy_(w.narrow(0, full * kMatmulPanel, rest).t());
  }
  return out;
}

QuantMatrixView QuantizedWeight::View() const {
  QuantMatrixView v;
  v.format = format;
  v.data = data.data_ptr<uint8_t>();
  v.scales = reinterpret_cast<const uint16_t*>(scales.data_ptr());
  v.n = out();
  v.k = in;
  return v;
}

at::Tensor Dequantize(const QuantizedWeight& q) {
  at::Tensor out = at::empty({q.out(), q.in}, at::kFloat);
  DequantizeRows(q.View(), 0, q.out(), out.data_ptr<float>());
  return out;
}

absl::StatusOr<at::Device> ParseDevice(const std::string& device) {
  if (device == "cpu") return at::Device(at::kCPU);
  if (absl::StartsWith(device, "cuda")) {
    try {
      const size_t gpus = at::getNumGPUs();
      if (gpus == 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("device ", device, " requested but CUDA is not available in this build"));
      }
      at::Device d(device);
      if (d.has_index() && d.index() >= static_cast<int>(gpus)) {
        return absl::InvalidArgumentError(
            absl::StrCat("device ", device, " does not exist (", gpus, " GPUs)"));
      }
      return d;
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", device, "'"));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad device '", device, "' (expected cpu or cuda:N)"));
}

SplitLinearWeights SplitLinearWeights::From(std::vector<at::Tensor> weights,
                                            std::vector<at::Tensor> biases) {
  SplitLinearWeights out;
  for (size_t i = 0; i < weights.size(); ++i) {
    LinearWeights w;
    w.weight = std::move(weights[i]);
    if (!biases.empty()) w.bias = biases[i];
    out.parts.push_back(std::move(w));
  }
  return out;
}

SplitLinearWeights SplitLinearWeights::From(std::vector<LinearWeights> weights,
                                            std::vector<at::Tensor> biases) {
  SplitLinearWeights out;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!biases.empty()) weights[i].bias = biases[i];
    out.parts.push_back(std::move(weights[i]));
  }
  return out;
}

absl::StatusOr<WeightLoader> WeightLoader::Create(const Checkpoint& checkpoint,
                                                  const LoadOptions& options) {
  ASSIGN_OR_RETURN(at::Device device, ParseDevice(options.device));
  const WeightQuant stored = checkpoint.config().quantization;
  if (stored != WeightQuant::kNone && options.quant != WeightQuant::kNone &&
      options.quant != stored) {
    return absl::InvalidArgumentError(absl::StrCat(
        checkpoint.dir(), " stores ", WeightQuantName(stored), " weights (swarm_quantization); ",
        "it cannot load as ", WeightQuantName(options.quant)));
  }
  const WeightQuant quant = LoadedQuant(stored, options);
  if (quant != WeightQuant::kNone && device.is_cpu() && options.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(WeightQuantName(quant),
                                                   " weights compute in f32 on the CPU, not ",
                                                   DTypeName(options.dtype)));
  }
  // Quantized weights are always built in new memory, and the fused parts with them.
  WeightLoader loader(checkpoint, device, ToTorch(options.dtype),
                      options.copy_weights || quant != WeightQuant::kNone);
  loader.quant_ = quant;
  loader.prequantized_ = stored != WeightQuant::kNone;
  loader.panels_ = options.layout == CpuWeightLayout::kPanels ||
                   (options.layout == CpuWeightLayout::kAuto && PanelsPay());
  loader.on_layer_loaded_ = options.on_layer_loaded;
  return loader;
}

absl::StatusOr<LinearWeights> WeightLoader::LoadLinear(const TensorSpec& spec, bool transposed) {
  LinearWeights out;
  if (quant_ == WeightQuant::kNone) {
    ASSIGN_OR_RETURN(at::Tensor t, Load(spec.name, spec.shape));
    out.weight = transposed ? t.t() : t;
    return MaybePanels(std::move(out));
  }
  ASSIGN_OR_RETURN(QuantizedWeight q, LoadQuantized({spec}, transposed));
  if (device_.is_cpu()) {
    out.quant = std::move(q);
    return out;
  }
  // CUDA: no quantized kernel there yet; the dequantized values in the compute dtype.
  bytes_ -= static_cast<int64_t>(q.data.nbytes() + q.scales.nbytes());
  ASSIGN_OR_RETURN(out.weight, TorchCall(absl::StrCat("dequantizing '", spec.name, "'"),
                                         [&]() -> absl::StatusOr<at::Tensor> {
                                           return Dequantize(q).to(device_, dtype_);
                                         }));
  bytes_ += static_cast<int64_t>(out.weight.nbytes());
  return out;
}

absl::StatusOr<LinearWeights> WeightLoader::MaybePanels(LinearWeights w) {
  const at::ScalarType t = w.weight.scalar_type();
  if (!panels_ || !device_.is_cpu() || zero_copy() || (t != at::kFloat && t != at::kBFloat16)) {
    return w;
  }
  ASSIGN_OR_RETURN(at::Tensor p,
                   TorchCall("building weight panels",
                             [&]() -> absl::StatusOr<at::Tensor> { return ToPanels(w.weight); }));
  // bytes_ keeps counting the weight as loaded: the padding of its last panel (under 64 outputs;
  // none where the output count is a multiple of 64, as in every real model's projections) is
  // left out, so that the counts agree with `swarm memory`'s estimates on any CPU.
  w.panel_out = w.weight.size(0);
  w.weight = std::move(p);
  return w;
}

absl::StatusOr<std::vector<LinearWeights>> WeightLoader::LoadSplitLinear(
    const std::vector<TensorSpec>& parts) {
  std::vector<LinearWeights> out;
  if (quant_ == WeightQuant::kNone) {
    ASSIGN_OR_RETURN(std::vector<at::Tensor> ts, LoadSplit(parts));
    for (at::Tensor& t : ts) {
      LinearWeights w;
      w.weight = std::move(t);
      ASSIGN_OR_RETURN(w, MaybePanels(std::move(w)));
      out.push_back(std::move(w));
    }
    return out;
  }
  ASSIGN_OR_RETURN(QuantizedWeight q, LoadQuantized(parts, /*transposed=*/false));
  LinearWeights w;
  if (device_.is_cpu()) {
    w.quant = std::move(q);
  } else {
    bytes_ -= static_cast<int64_t>(q.data.nbytes() + q.scales.nbytes());
    ASSIGN_OR_RETURN(w.weight, TorchCall(absl::StrCat("dequantizing '", parts[0].name, "'"),
                                         [&]() -> absl::StatusOr<at::Tensor> {
                                           return Dequantize(q).to(device_, dtype_);
                                         }));
    bytes_ += static_cast<int64_t>(w.weight.nbytes());
  }
  out.push_back(std::move(w));
  return out;
}

absl::StatusOr<QuantizedWeight> WeightLoader::LoadQuantized(const std::vector<TensorSpec>& parts,
                                                            bool transposed) {
  // Each part's stored view, [out_p, in] in the quantized orientation.
  struct Part {
    std::string name;
    TensorView view;
    TensorView scales;  // Pre-quantized checkpoints only.
    int64_t out = 0;
  };
  std::vector<Part> ps;
  int64_t total = 0, in = -1;
  for (const TensorSpec& spec : parts) {
    Part p;
    ASSIGN_OR_RETURN(p.name, checkpoint_->Resolve(spec.name));
    ASSIGN_OR_RETURN(p.view, checkpoint_->store().Get(p.name));
    if (spec.shape.size() != 2) {
      return absl::InternalError(absl::StrCat("'", p.name, "' is not a matrix"));
    }
    p.out = transposed ? spec.shape[1] : spec.shape[0];
    const int64_t k = transposed ? spec.shape[0] : spec.shape[1];
    if (in >= 0 && k != in) {
      return absl::InternalError(absl::StrCat("'", p.name, "': parts differ in inputs"));
    }
    in = k;
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("loading ", p.view.file, ": tensor '", p.name, "' ", what));
    };
    if (prequantized_) {
      const StDType want = quant_ == WeightQuant::kQ8 ? StDType::kI8 : StDType::kU8;
      const std::vector<int64_t> shape = {p.out, QuantRowBytes(quant_, k)};
      if (p.view.dtype != want) {
        return bad(absl::StrCat("has dtype ", StDTypeName(p.view.dtype), ", a ",
                                WeightQuantName(quant_), " checkpoint stores it as ",
                                StDTypeName(want)));
      }
      if (p.view.shape != shape) {
        return bad(absl::StrCat("has shape ", ShapeString(p.view.shape), ", ",
                                WeightQuantName(quant_), " of the config's [", p.out, ",", k,
                                "] is ", ShapeString(shape)));
      }
      const std::string scales = p.name + ".scales";
      if (!checkpoint_->store().Has(scales)) {
        return bad(absl::StrCat("has no scales: missing tensor '", scales, "'"));
      }
      ASSIGN_OR_RETURN(p.scales, checkpoint_->store().Get(scales));
      const std::vector<int64_t> sshape = {p.out, QuantGroups(k)};
      if (p.scales.dtype != StDType::kF16 || p.scales.shape != sshape) {
        return absl::InvalidArgumentError(absl::StrCat(
            "loading ", p.scales.file, ": tensor '", scales, "' is ", StDTypeName(p.scales.dtype),
            " ", ShapeString(p.scales.shape), ", expected F16 ", ShapeString(sshape),
            " (one scale per ", kQuantGroup, " inputs)"));
      }
    } else {
      if (p.view.shape != spec.shape) {
        return bad(absl::StrCat("has shape ", ShapeString(p.view.shape), ", config says ",
                                ShapeString(spec.shape)));
      }
      auto type = ToTorch(p.view.dtype);
      if (!type.ok()) return bad(std::string(": ") + std::string(type.status().message()));
    }
    total += p.out;
    ps.push_back(std::move(p));
  }
  return TorchCall(absl::StrCat("quantizing tensor '", ps[0].name, "'"),
                   [&]() -> absl::StatusOr<QuantizedWeight> {
                     QuantizedWeight q;
                     q.format = quant_;
                     q.in = in;
                     const int64_t row_bytes = QuantRowBytes(quant_, in), groups = QuantGroups(in);
                     q.data = HugePageEmpty({total, row_bytes}, at::kByte);
                     q.scales = HugePageEmpty({total, groups}, at::kHalf);
                     uint8_t* data = q.data.data_ptr<uint8_t>();
                     auto* scales = reinterpret_cast<uint16_t*>(q.scales.data_ptr());
                     int64_t row = 0;
                     for (const Part& p : ps) {
                       uint8_t* d = data + row * row_bytes;
                       uint16_t* s = scales + row * groups;
                       if (prequantized_) {
                         std::memcpy(d, p.view.data, p.view.nbytes);
                         std::memcpy(s, p.scales.data, p.scales.nbytes);
                         DropFilePages(p.scales);
                       } else {
                         // A slice of rows at a time in f32 (a view, when the file is f32 and not
                         // transposed).
                         const at::Tensor src = View(p.view);
                         const int64_t slice = std::max<int64_t>(1, kQuantizeSliceValues / in);
                         for (int64_t r0 = 0; r0 < p.out; r0 += slice) {
                           const int64_t rows = std::min(slice, p.out - r0);
                           const at::Tensor f =
                               (transposed ? src.narrow(1, r0, rows).t() : src.narrow(0, r0, rows))
                                   .to(at::kFloat)
                                   .contiguous();
                           QuantizeRows(quant_, f.data_ptr<float>(), rows, in, in,
                                        d + r0 * row_bytes, s + r0 * groups);
                         }
                       }
                       DropFilePages(p.view);
                       if (sink_) {
                         QuantizedWeight part;
                         part.format = quant_;
                         part.in = in;
                         part.data = q.data.narrow(0, row, p.out);
                         part.scales = q.scales.narrow(0, row, p.out);
                         sink_(p.name, part);
                       }
                       row += p.out;
                     }
                     bytes_ += static_cast<int64_t>(q.data.nbytes() + q.scales.nbytes());
                     return q;
                   });
}

absl::StatusOr<at::Tensor> WeightLoader::Load(absl::string_view logical,
                                              std::vector<int64_t> shape) {
  return LoadConcat({{std::string(logical), std::move(shape)}});
}

absl::StatusOr<std::vector<at::Tensor>> WeightLoader::LoadSplit(
    const std::vector<TensorSpec>& parts) {
  std::vector<at::Tensor> out;
  if (zero_copy()) {
    for (const TensorSpec& part : parts) {
      ASSIGN_OR_RETURN(at::Tensor t, Load(part.name, part.shape));
      out.push_back(std::move(t));
    }
  } else {
    ASSIGN_OR_RETURN(at::Tensor t, LoadConcat(parts));
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<at::Tensor> WeightLoader::LoadConcat(const std::vector<TensorSpec>& parts) {
  std::vector<TensorView> views;
  for (const TensorSpec& part : parts) {
    ASSIGN_OR_RETURN(std::string name, checkpoint_->Resolve(part.name));
    ASSIGN_OR_RETURN(TensorView view, checkpoint_->store().Get(name));
    if (view.shape != part.shape) {
      return absl::InvalidArgumentError(absl::StrCat("loading ", view.file, ": tensor '", name,
                                                     "' has shape ", ShapeString(view.shape),
                                                     ", config says ", ShapeString(part.shape)));
    }
    auto src_type = ToTorch(view.dtype);
    if (!src_type.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("loading ", view.file, ": tensor '", name,
                                                     "': ", src_type.status().message()));
    }
    views.push_back(std::move(view));
  }
  absl::StatusOr<at::Tensor> loaded = TorchCall(
      absl::StrCat("loading tensor '", views[0].name, "'"), [&]() -> absl::StatusOr<at::Tensor> {
        const bool same_type = *ToTorch(views[0].dtype) == dtype_ &&
                               std::all_of(views.begin(), views.end(), [&](const TensorView& v) {
                                 return v.dtype == views[0].dtype;
                               });
        if (device_.is_cpu()) {
          if (same_type && !copy_ && views.size() == 1) return View(views[0]);
          return CopyToHugePages(views, dtype_);
        }
        std::vector<at::Tensor> converted;
        for (const TensorView& v : views) converted.push_back(View(v).to(device_, dtype_));
        return converted.size() == 1 ? converted[0].contiguous() : at::cat(converted, 0);
      });
  if (loaded.ok()) bytes_ += static_cast<int64_t>(loaded->nbytes());
  return loaded;
}

}  // namespace swarm::model
