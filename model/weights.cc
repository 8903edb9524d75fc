// Weight loading. Decode reads every weight once per token, so how a tensor lands in memory is
// the decode speed: same-dtype CPU weights are copied into huge-page-backed memory (or, zero-copy,
// left in the file mapping); anything else is converted by LibTorch onto the device.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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

// Copies tensors (concatenated along dim 0) out of the checkpoint mapping into anonymous memory
// backed by transparent huge pages (2 MiB pages take the TLB misses of 4 KiB file pages off the
// decode path), then drops the file pages from this process's resident set.
at::Tensor CopyToHugePages(const std::vector<TensorView>& views) {
  size_t nbytes = 0;
  std::vector<int64_t> shape = views[0].shape;
  shape[0] = 0;
  for (const TensorView& v : views) {
    nbytes += v.nbytes;
    shape[0] += v.shape[0];
  }
  // Rounded to base pages only: THP backs every aligned 2 MiB stretch inside the region (and
  // adjacent regions merge), so small tensors waste at most a page.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = (nbytes + page - 1) & ~(page - 1);
  void* p = len == 0
                ? MAP_FAILED
                : mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::vector<at::Tensor> parts;
    for (const TensorView& v : views) parts.push_back(View(v));
    return at::cat(parts, 0);
  }
  madvise(p, len, MADV_HUGEPAGE);
  char* dst = static_cast<char*>(p);
  for (const TensorView& v : views) {
    std::memcpy(dst, v.data, v.nbytes);
    dst += v.nbytes;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(v.data) + page - 1) & ~(page - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(v.data) + v.nbytes) & ~(page - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
  return at::from_blob(
      p, shape, [len](void* q) { munmap(q, len); },
      at::TensorOptions().dtype(*ToTorch(views[0].dtype)));
}

}  // namespace

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
    out.parts.push_back({std::move(weights[i]), biases.empty() ? at::Tensor() : biases[i]});
  }
  return out;
}

absl::StatusOr<WeightLoader> WeightLoader::Create(const Checkpoint& checkpoint,
                                                  const LoadOptions& options) {
  ASSIGN_OR_RETURN(at::Device device, ParseDevice(options.device));
  WeightLoader loader(checkpoint, device, ToTorch(options.dtype), options.copy_weights);
  loader.on_layer_loaded_ = options.on_layer_loaded;
  return loader;
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
        if (device_.is_cpu() && same_type) {
          if (!copy_ && views.size() == 1) return View(views[0]);
          return CopyToHugePages(views);
        }
        std::vector<at::Tensor> converted;
        for (const TensorView& v : views) converted.push_back(View(v).to(device_, dtype_));
        return converted.size() == 1 ? converted[0].contiguous() : at::cat(converted, 0);
      });
  if (loaded.ok()) bytes_ += static_cast<int64_t>(loaded->nbytes());
  return loaded;
}

}  // namespace swarm::model
