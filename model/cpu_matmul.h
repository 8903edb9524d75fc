// A batch-invariant CPU matrix product for the few rows of a decode step: y = x·Wᵀ (+ bias) over
// raw f32 storage, torch-free. Linear() in model/layers.cc is the one caller that chooses it (rows
// of short sequences: decode tokens and small chunks, and the LM head's last rows); prefill chunks
// go through gemm.
//
// Why: BLAS gemm blocks its reduction by the number of rows M (and OpenBLAS switches kernels with
// M), so a row's bits depend on what else is in the batch. Here every output element y[r][j] is
// computed by the same sequence of floating-point operations whatever the number of rows, the
// row's place among them, or how the output columns are split between threads:
//   * row-major W [n, k] (W[j] contiguous): 8 partial sums (one per SIMD lane; lane l sums the
//     products of the k with k % 8 == l, in increasing k, one FMA each), then a fixed pairwise
//     sum of the 8 lanes, then + bias[j];
//   * column-major W (a transposed view: GPT-2's Conv1D [k, n] weights): one sum per element, in
//     increasing k, one FMA each, then + bias[j];
//   * panel-major W (what the loader builds from every f32/bf16 projection it copies, see
//     kMatmulPanel): the same, one sum per element in increasing k, one FMA each, then + bias[j].
// Rows are processed in register tiles that share each load of W — for row-major W one output for
// up to 8 rows when their slice of x fits in L1, else up to 4 outputs × 4 rows; for panel-major W
// a panel's 64 outputs × up to 6 rows, each x[r][i] broadcast against 64 consecutive weights, no
// horizontal sums — so W is streamed from memory once per call (the later row tiles re-read it
// from cache, prefetching the next weights meanwhile); the work is split over output columns j
// between the threads of a ComputeTeam, which never changes any element's reduction.
//
// Weights are f32 or bf16 (bf16 stays bf16 in memory and is widened in registers: exact, so a bf16
// matrix gives the bits of its f32 widening).
//
// Three implementations, chosen at run time: AVX-512 (16 lanes instead of 8 for row-major W, the
// lanes summed in a fixed tree; column-major W as AVX2; panel-major W 16 outputs per vector),
// AVX2+FMA, and a portable scalar fallback (no FMA, sequential in k within each lane). Each is
// batch-invariant on its own; they agree to rounding, not bit for bit, except that AVX2 and
// AVX-512 give the same bits on panel-major W (tests/model/cpu_matmul_test.cc checks all three
// on every layout). The environment
// variable SWARM_CPU_ISA=scalar|avx2|avx512 caps the choice (tests and benchmarks force the
// fallback with it). The work is split over output columns between the members of a ComputeTeam
// (common/compute_team.h); products too small to be worth waking them run on the caller.
//
// Thread-safe (pure function of its inputs).
#ifndef SWARM_MODEL_CPU_MATMUL_H_
#define SWARM_MODEL_CPU_MATMUL_H_

#include <cstdint>

#include "common/compute_team.h"

namespace swarm::model {

// Sequences of at most this many rows (decode tokens, short chunks), and LM heads over at most this
// many rows, are computed through this kernel; longer ones through gemm, where it is faster.
inline constexpr int64_t kInvariantMaxRows = 16;

enum class WeightType {
  kF32,
  kBf16,  // The upper 16 bits of an f32 (uint16_t storage).
};

// Outputs per panel of a panel-major matrix: W [n, k] as ceil(n / 64) panels, panel p holding
// outputs 64p … 64p + 63 as k rows of 64 consecutive values (input i's weights for the panel's
// outputs), the outputs past n zero. A panel is one sequential stream of k · 64 values, and a
// decode step's rows multiply it by broadcasts (16 outputs per AVX-512 FMA) rather than by dot
// products, whose lanes must be summed at the end: at 32 rows of the 12 × d768 stack the products
// take about half the time of row-major tiles' (docs/benchmarks.md, "Panel-major weights").
inline constexpr int64_t kMatmulPanel = 64;

// Floats (or bf16 values) a panel-major W [n, k] occupies: its panels, padding included.
inline int64_t PanelElements(int64_t n, int64_t k) {
  return (n + kMatmulPanel - 1) / kMatmulPanel * k * kMatmulPanel;
}

// A read-only matrix W [n, k] (n outputs, k inputs) of `type`. Strided (panel == 0): element
// W[j][i] is element j * row_stride + i * col_stride of data, exactly one of the strides 1.
// Panel-major (panel == kMatmulPanel): element (j / 64) · 64k + 64i + j % 64; strides unused.
struct MatrixView {
  const void* data = nullptr;
  WeightType type = WeightType::kF32;
  int64_t n = 0, k = 0;
  int64_t row_stride = 0, col_stride = 1;
  int64_t panel = 0;
};

enum class MatmulIsa {
  kAuto,    // The best this CPU has, capped by SWARM_CPU_ISA.
  kScalar,  // The portable fallback.
  kAvx2,    // AVX2+FMA (the caller has checked CpuHasAvx2Fma()).
  kAvx512,  // AVX-512 F/BW/VL (the caller has checked CpuHasAvx512()).
};

// True when this CPU runs the AVX2+FMA kernel.
bool CpuHasAvx2Fma();
// True when this CPU runs the AVX-512 kernel (F, BW and VL, besides AVX2+FMA).
bool CpuHasAvx512();
// kAuto → the best of avx512, avx2, scalar the CPU has, at most SWARM_CPU_ISA when that is set
// (read at each call); another value as it is.
MatmulIsa ResolveIsa(MatmulIsa isa);
// "scalar", "avx2", "avx512" or "auto".
const char* MatmulIsaName(MatmulIsa isa);

// y[r][j] = Σ_i x[r][i]·W[j][i] (+ bias[j] when bias is not null) for r < rows, j < w.n.
// x: rows × w.k floats, row r at x + r * x_stride; y: rows × w.n floats, row r at y + r * y_stride
// (y must not overlap x or W). Parallel over j on `team` (null: SharedComputeTeam()).
void MatmulRows(const float* x, int64_t rows, int64_t x_stride, const MatrixView& w,
                const float* bias, float* y, int64_t y_stride, MatmulIsa isa = MatmulIsa::kAuto,
                ComputeTeam* team = nullptr);

}  // namespace swarm::model

#endif  // SWARM_MODEL_CPU_MATMUL_H_
