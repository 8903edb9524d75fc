// Plain C++ over decoded f32 values: the combine is elementwise and small next to the layers it
// combines, so it needs no LibTorch (only c10's half-precision encoder, the one torch uses).
#include "model/combine.h"

#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/safetensors.h"

namespace swarm::model {
namespace {

// f32 values → `dtype` bytes, rounding to nearest even as torch's conversions do.
HostTensor Encode(DType dtype, std::vector<int64_t> shape, const std::vector<float>& values) {
  HostTensor out;
  out.dtype = dtype;
  out.shape = std::move(shape);
  out.data.resize(values.size() * DTypeSize(dtype));
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out.data.data(), values.data(), out.data.size());
      break;
    case DType::kBF16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t v = FloatToBf16(values[i]);
        std::memcpy(out.data.data() + 2 * i, &v, 2);
      }
      break;
    case DType::kF16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t v = c10::Half(values[i]).x;
        std::memcpy(out.data.data() + 2 * i, &v, 2);
      }
      break;
  }
  return out;
}

}  // namespace

absl::StatusOr<HostTensor> CombineResiduals(const HostTensor& h,
                                            const std::vector<HostTensor>& outs,
                                            absl::Span<const float> weights) {
  RETURN_IF_ERROR(h.Validate());
  if (outs.size() != weights.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(outs.size(), " block outputs but ", weights.size(), " weights"));
  }
  for (const HostTensor& o : outs) {
    if (o.shape != h.shape || o.dtype != h.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "block output ", ShapeString(o.shape), " does not match input ", ShapeString(h.shape)));
    }
  }
  const std::vector<float> x = h.ToFloats();
  std::vector<float> acc = x;
  for (size_t b = 0; b < outs.size(); ++b) {
    const float w = weights[b];
    const std::vector<float> o = outs[b].ToFloats();  // One block's output decoded at a time.
    for (size_t i = 0; i < acc.size(); ++i) acc[i] = std::fma(o[i] - x[i], w, acc[i]);
  }
  return Encode(h.dtype, h.shape, acc);
}

absl::StatusOr<HostTensor> GateResidual(const HostTensor& h, HostTensor block_out, float gate) {
  if (gate == 1.0f) return block_out;
  std::vector<HostTensor> outs;
  outs.push_back(std::move(block_out));
  const float weights[1] = {gate};
  return CombineResiduals(h, outs, weights);
}

}  // namespace swarm::model
