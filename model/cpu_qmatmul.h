// The batch-invariant CPU row kernel for quantized weights (common/weight_format.h: q8, q4 in
// groups of 32 with f16 scales), torch-free: y = x·Wᵀ (+ bias) for the few rows of a decode step,
// dequantizing W inside the kernel, activations f32. Linear() in model/layers.cc chooses it for
// quantized weights exactly where it chooses model/cpu_matmul.h's kernel for f32 ones; it also
// quantizes at load (the loader, `swarm quantize`) and dequantizes blocks of rows for the gemm path
// of long prefill chunks.
//
// Order: every output element is reduced in a fixed order that depends only on its row of x,
// its row of W, k and the ISA; with AVX2, per group of 32 inputs, 8 lanes (lane l: the products x·q
// of the 4 inputs ≡ l mod 8, in increasing order, q the integer code), each lane then added into
// its accumulator times the group's scale (one FMA), the 8 accumulators summed pairwise at the end,
// then + bias. So a row's result depends only on that row: batch-invariant, bit for bit, whatever
// the number of rows, their order or the split of columns between threads.
//
// Three implementations, chosen at run time as model/cpu_matmul.h's: AVX-512 (16 lanes: per
// group, lane l the products of inputs l and l + 16, then times the scale into its accumulator;
// the lanes summed as the f32 AVX-512 kernel does), AVX2+FMA+F16C (the order above), and a
// portable scalar fallback (which dequantizes blocks of rows, exactly — q·d is an f32 — and runs
// model/cpu_matmul.h's scalar kernel on them; batch-invariant in its own order); they agree to
// rounding. Parallel over output columns on LibTorch's intra-op threads.
//
// Thread-safe (pure functions of their inputs).
#ifndef SWARM_MODEL_CPU_QMATMUL_H_
#define SWARM_MODEL_CPU_QMATMUL_H_

#include <cstdint>

#include "common/weight_format.h"
#include "model/cpu_matmul.h"

namespace swarm::model {

// A read-only quantized matrix W [n, k]: row j's codes at data + j * QuantRowBytes(format, k),
// its QuantGroups(k) f16 scales (raw bits) at scales + j * QuantGroups(k). The padding of the
// last group holds code 0 (q8) or 8 (q4): a zero weight.
struct QuantMatrixView {
  WeightQuant format = WeightQuant::kQ8;
  const uint8_t* data = nullptr;
  const uint16_t* scales = nullptr;
  int64_t n = 0, k = 0;
};

// y[r][j] = Σ_i x[r][i]·W[j][i] (+ bias[j] when bias is not null) for r < rows, j < w.n; layout of
// x and y as MatmulRows. Rows beyond kInvariantMaxRows are allowed (the same per-row result).
void QMatmulRows(const float* x, int64_t rows, int64_t x_stride, const QuantMatrixView& w,
                 const float* bias, float* y, int64_t y_stride, MatmulIsa isa = MatmulIsa::kAuto);

// Quantizes rows [0, n) of an f32 matrix (row j at src + j * src_stride, k values) into
// `data` (n * QuantRowBytes bytes) and `scales` (n * QuantGroups(k) f16 bits), as the header of
// common/weight_format.h says. Deterministic (scalar code): the same values give the same bytes.
void QuantizeRows(WeightQuant format, const float* src, int64_t n, int64_t k, int64_t src_stride,
                  uint8_t* data, uint16_t* scales);

// Rows [j0, j1) of W dequantized to f32: out[(j - j0) * k + i] = W[j][i] (exact).
void DequantizeRows(const QuantMatrixView& w, int64_t j0, int64_t j1, float* out);

}  // namespace swarm::model

#endif  // SWARM_MODEL_CPU_QMATMUL_H_
