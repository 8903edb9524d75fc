// The batch-invariant row kernel (model/cpu_matmul.h). Structure, for every implementation:
//   MatmulRows → one contiguous range of kColumnBlock-column blocks per team member → per block,
//   the columns in register tiles of JB outputs × RB rows; per tile element, the fixed reduction
//   the header describes.
// An element's operations depend only on x's row, W's row (column), k and the ISA — never on RB,
// JB, the tile it falls in or the thread — which is what makes a row's result independent of the
// batch. The weight type only changes how W is loaded (bf16 widened exactly), never the order.
#include "model/cpu_matmul.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

#include "model/cpu_kernel_common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SWARM_MATMUL_X86 1
#endif

namespace swarm::model {
namespace {

// Output columns per block, the unit a team member's share is made of (a multiple of 16, the
// widest column-major strip).
constexpr int64_t kColumnBlock = 16;
using kernel::ForTileSize;
using kernel::kRowTile;
using kernel::PrefetchWeights;
#ifdef SWARM_MATMUL_X86
using kernel::HorizontalSum;
using kernel::HorizontalSum16;
using kernel::kAll16;
using kernel::Load16;
using kernel::Load8;
using kernel::LoadPartial16;
using kernel::LoadPartial8;
using kernel::TailMask;
#endif
// Products of fewer multiply-adds than this run on the calling thread: waking the team costs
// about a microsecond, which such a product does not repay.
constexpr int64_t kMinParallelWork = 1 << 17;

using kernel::DotLanesScalar;
using kernel::Widen;

// ---------------------------------------------------------------------------------------------
// Portable scalar fallback (row-major W: DotLanesScalar's 8 lanes per element).

template <typename WT>
void BlockScalar(const float* x, int64_t rows, int64_t xs, const MatrixView& w, const float* bias,
                 float* y, int64_t ys, int64_t j0, int64_t j1) {
  const WT* data = static_cast<const WT*>(w.data);
  if (w.col_stride == 1) {
    for (int64_t j = j0; j < j1; ++j) {
      const WT* wj = data + j * w.row_stride;
      for (int64_t r = 0; r < rows; ++r) {
        float s = DotLanesScalar(x + r * xs, wj, w.k);
        if (bias != nullptr) s += bias[j];
        y[r * ys + j] = s;
      }
    }
    return;
  }
  // Column-major W: W[j][i] = data[j + i * col_stride]; each element sums in increasing i.
  float acc[kColumnBlock];
  const int64_t nj = j1 - j0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * xs;
    std::fill(acc, acc + nj, 0.0f);
    for (int64_t i = 0; i < w.k; ++i) {
      const WT* wi = data + i * w.col_stride + j0;
      for (int64_t j = 0; j < nj; ++j) acc[j] += xr[i] * Widen(wi[j]);
    }
    for (int64_t j = 0; j < nj; ++j)
      y[r * ys + j0 + j] = bias != nullptr ? acc[j] + bias[j0 + j] : acc[j];
  }
}

// The row-major tiling both vector kernels share: outputs [j0, j1) in tiles of jt (the last one
// narrower), each for all rows in tiles of up to kRows; tile(rb, jb, r, j, ahead) computes rows
// r..r+rb-1 × outputs j..j+jb-1, rb and jb as integral constants. Outputs outer, rows inner: a
// tile's few weight rows stay in cache while every row tile reads them, so W comes from memory
// once. The first row tile streams them from memory; the others (`ahead`) find them in cache and
// prefetch the next output tile's rows meanwhile, so that memory keeps streaming while they
// compute (8 rows of the 12 × d768 stack: 24–27 → 16–18 ms, about the time of 1 row).
template <int kRows, typename Tile>
void RowMajorTiles(int64_t rows, int64_t j0, int64_t j1, int64_t jt, Tile&& tile) {
  for (int64_t j = j0; j < j1; j += jt) {
    const int64_t nj = std::min(jt, j1 - j);
    for (int64_t r = 0; r < rows; r += kRows) {
      kernel::ForCountUpTo<kRows>(std::min<int64_t>(kRows, rows - r), [&](auto rb) {
        ForTileSize(nj, [&](auto jb) { tile(rb, jb, r, j, r > 0); });
      });
    }
  }
}

// One weight row per tile, one stream per thread, prefetched far ahead, is what keeps memory
// busiest: for one row, and for up to kStreamRows rows at a time while their slice of x stays in
// L1 beside the streaming weights (kSingleStreamXBytes of this CPU's 48 KB) — every product of the
// 12 × d768 model but the down projection (its batch-8 step with AVX-512: 24.1–24.8 → 21.8–21.9
// ms, `model_bench --batch-steps`). Wider rows of x, or more rows, take the multi-output tiles:
// with 8 rows of 8 KB a single stream waits on x from L2 (docs/benchmarks.md, "On this machine's
// new CPU").
constexpr int kStreamRows = 8;
constexpr int64_t kSingleStreamXBytes = 32 << 10;
inline bool SingleStream(int64_t rows, int64_t k) {
  return rows == 1 || (rows <= kStreamRows &&
                       rows * k * static_cast<int64_t>(sizeof(float)) <= kSingleStreamXBytes);
}

// A row-major block through `tile` (as RowMajorTiles's): single-stream tiles where SingleStream
// says so, else tiles of jt outputs × up to kRowTile rows.
template <typename Tile>
void RowMajorBlock(int64_t rows, int64_t k, int64_t j0, int64_t j1, int64_t jt, Tile&& tile) {
  if (SingleStream(rows, k)) return RowMajorTiles<kStreamRows>(rows, j0, j1, 1, tile);
  RowMajorTiles<kRowTile>(rows, j0, j1, jt, tile);
}

// ---------------------------------------------------------------------------------------------
// Panel-major W, shared by every implementation: panels [p0, p1), each for all rows in row tiles
// of at most `max_rows` rows, balanced (16 rows are 6 + 5 + 5, not 6 + 6 + 4). A tile loads each
// input's 64 panel weights once for its rows and broadcasts x[r][i] against them: element (r, j) is
// one accumulator lane, an FMA per input in increasing i.
//
// Prefetching keeps memory streaming while the cores compute (`matmul_bench --layouts
// panel,row`, docs/benchmarks.md "Panel-major weights"):
//   * a panel of several row tiles: each tile prefetches its share of the next panel's lines into
//     L2, spread evenly over its inputs (without it, each panel's first tile waits on memory and
//     the others leave memory idle: 32 rows of the 12 × d768 stack 41 → 31 ms);
//   * a panel of one row tile (memory-bound: up to 8 rows with AVX-512, 3 with AVX2): the panel
//     itself, kPanelNearBytes ahead into L1, as the row-major single stream does (one row: 20.8 →
//     17.0 ms); AVX-512 takes up to 6 rows two panels at a time (PanelsAvx512).
constexpr int64_t kPanelNearBytes = 4096;
// The second pass over a panel at 7–8 rows (its other half) finds it in cache; meanwhile it
// prefetches the first 1/kSecondPassShare of the next panel into L2, so that memory keeps
// streaming (8 rows of the 12 × d768 model's step: layers 20.5 → 19.4 ms; 1/2 gave 20.0–20.3,
// 1/8 the same as 1/4; the same for a pair's second row group at 4–6 rows was slower).
constexpr int64_t kSecondPassShare = 4;
// Up to this many rows a panel-major product is memory-bound and split into 4 ranges per team
// member as row-major ones are; beyond, one range per member (MatmulRows).
constexpr int64_t kPanelSharedTaskRows = 6;

// The row tiles of a panel: `count` tiles over `rows` rows, sizes differing by at most one.
struct PanelRowTiles {
  int64_t count, base, extra;
  PanelRowTiles(int64_t rows, int64_t max)
      : count((rows + max - 1) / max), base(rows / count), extra(rows % count) {}
  int64_t Start(int64_t t) const { return t * base + std::min(t, extra); }
  int64_t Size(int64_t t) const { return base + (t < extra ? 1 : 0); }
};

// `lines` prefetches of consecutive cache lines from `from` (into L1 when `near`, else L2), spread
// evenly over `steps` calls of Step(). Never changes a result.
class SpreadPrefetch {
 public:
  SpreadPrefetch(const char* from, int64_t lines, int64_t steps, bool near)
      : next_(from), lines_(lines), steps_(steps), near_(near) {}
  void Step() {
#ifdef SWARM_MATMUL_X86
    budget_ += lines_;
    while (budget_ >= steps_) {
      if (near_) {
        _mm_prefetch(next_, _MM_HINT_T0);
      } else {
        _mm_prefetch(next_, _MM_HINT_T1);
      }
      next_ += 64;
      budget_ -= steps_;
    }
#endif
  }

 private:
  const char* next_;
  int64_t lines_, steps_, budget_ = 0;
  bool near_;
};

// Calls tile(p, panel, r0, rb, prefetch) for every row tile of every panel p in [p0, p1): rows
// r0 … r0 + rb − 1 of panel p (at `panel`), with the tile's prefetches (one Step() per input).
template <typename WT, typename Tile>
void PanelTiles(const MatrixView& w, int64_t rows, int64_t max_rows, int64_t p0, int64_t p1,
                Tile&& tile) {
  const int64_t panels = (w.n + kMatmulPanel - 1) / kMatmulPanel;
  const int64_t elements = w.k * kMatmulPanel;
  const int64_t bytes = elements * static_cast<int64_t>(sizeof(WT)), lines = bytes / 64;
  const PanelRowTiles tiles(rows, max_rows);
  for (int64_t p = p0; p < p1; ++p) {
    const WT* panel = static_cast<const WT*>(w.data) + p * elements;
    const char* own = reinterpret_cast<const char*>(panel);
    if (tiles.count == 1) {
      tile(p, panel, 0, rows, SpreadPrefetch(own + kPanelNearBytes, lines, w.k, true));
      continue;
    }
    const int64_t ahead = p + 1 < panels ? lines : 0;  // Nothing after the last panel.
    for (int64_t t = 0; t < tiles.count; ++t) {
      const int64_t l0 = ahead * t / tiles.count, l1 = ahead * (t + 1) / tiles.count;
      tile(p, panel, tiles.Start(t), tiles.Size(t),
           SpreadPrefetch(own + bytes + 64 * l0, l1 - l0, w.k, false));
    }
  }
}

// Portable: one row at a time, the panel's outputs in increasing i (no FMA).
template <typename WT>
void PanelsScalar(const float* x, int64_t rows, int64_t xs, const MatrixView& w, const float* bias,
                  float* y, int64_t ys, int64_t p0, int64_t p1) {
  PanelTiles<WT>(w, rows, 1, p0, p1, [&](int64_t p, const WT* panel, int64_t r, int64_t, auto) {
    const int64_t j0 = p * kMatmulPanel, valid = std::min(kMatmulPanel, w.n - j0);
    float acc[kMatmulPanel] = {};
    for (int64_t i = 0; i < w.k; ++i) {
      const float xv = x[r * xs + i];
      const WT* wi = panel + i * kMatmulPanel;
      for (int64_t j = 0; j < valid; ++j) acc[j] += xv * Widen(wi[j]);
    }
    for (int64_t j = 0; j < valid; ++j) {
      y[r * ys + j0 + j] = bias != nullptr ? acc[j] + bias[j0 + j] : acc[j];
    }
  });
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA.
#ifdef SWARM_MATMUL_X86

// Row-major W: RB rows × JB outputs starting at output j. Each (row, output) accumulates in one
// vector: lane l gets an FMA for every i ≡ l (mod 8), in increasing i; the partial last vector is
// a masked load (absent lanes read 0 and add +0·0).
template <typename WT, int RB, int JB>
SWARM_AVX2 void TileRowMajor(const float* x, int64_t xs, const MatrixView& w, const float* bias,
                             float* y, int64_t ys, int64_t j, bool ahead) {
  const int64_t k = w.k;
  const WT* wp[JB];
  for (int b = 0; b < JB; ++b) wp[b] = static_cast<const WT*>(w.data) + (j + b) * w.row_stride;
  __m256 acc[RB][JB];
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < JB; ++b) acc[r][b] = _mm256_setzero_ps();
  }
  constexpr int64_t kLine = 64 / sizeof(WT);  // Elements per cache line.
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    if ((i & (kLine - 1)) == 0) {  // One prefetch per line.
      PrefetchWeights<JB>(wp, i, ahead, w.row_stride);
    }
    __m256 wv[JB];
    for (int b = 0; b < JB; ++b) wv[b] = Load8(wp[b] + i);
    for (int r = 0; r < RB; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * xs + i);
      for (int b = 0; b < JB; ++b) acc[r][b] = _mm256_fmadd_ps(xv, wv[b], acc[r][b]);
    }
  }
  if (i < k) {
    __m256 wv[JB];
    for (int b = 0; b < JB; ++b) wv[b] = LoadPartial8(wp[b] + i, k - i);
    for (int r = 0; r < RB; ++r) {
      const __m256 xv = LoadPartial8(x + r * xs + i, k - i);
      for (int b = 0; b < JB; ++b) acc[r][b] = _mm256_fmadd_ps(xv, wv[b], acc[r][b]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < JB; ++b) {
      float s = HorizontalSum(acc[r][b]);
      if (bias != nullptr) s += bias[j + b];
      y[r * ys + j + b] = s;
    }
  }
}

// Column-major W: RB rows × JV vectors of 8 consecutive outputs starting at output j, the last
// vector holding `last` (1..8) outputs. Each (row, output) is one lane summing x[r][i]·W[j][i] in
// increasing i, one FMA each.
template <typename WT, int RB, int JV>
SWARM_AVX2 void TileColMajor(const float* x, int64_t xs, const MatrixView& w, const float* bias,
                             float* y, int64_t ys, int64_t j, int64_t last) {
  const __m256i m = TailMask(last);
  __m256 acc[RB][JV];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < JV; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  const WT* wp = static_cast<const WT*>(w.data) + j;
  for (int64_t i = 0; i < w.k; ++i, wp += w.col_stride) {
    __m256 wv[JV];
    for (int v = 0; v < JV; ++v) {
      wv[v] = v == JV - 1 && last < 8 ? LoadPartial8(wp + 8 * v, last) : Load8(wp + 8 * v);
    }
    for (int r = 0; r < RB; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * xs + i);
      for (int v = 0; v < JV; ++v) acc[r][v] = _mm256_fmadd_ps(xv, wv[v], acc[r][v]);
    }
  }
  for (int v = 0; v < JV; ++v) {
    const bool partial = v == JV - 1 && last < 8;
    __m256 bv = _mm256_setzero_ps();
    if (bias != nullptr) {
      bv = partial ? _mm256_maskload_ps(bias + j + 8 * v, m) : _mm256_loadu_ps(bias + j + 8 * v);
    }
    for (int r = 0; r < RB; ++r) {
      const __m256 out = bias != nullptr ? _mm256_add_ps(acc[r][v], bv) : acc[r][v];
      float* yp = y + r * ys + j + 8 * v;
      if (partial) {
        _mm256_maskstore_ps(yp, m, out);
      } else {
        _mm256_storeu_ps(yp, out);
      }
    }
  }
}

// Column-major blocks (AVX2 for both the AVX2 and the AVX-512 kernels): 16-column strips, each
// read once from memory while every row tile reads it from cache.
template <typename WT>
SWARM_AVX2 void ColumnMajorAvx2(const float* x, int64_t rows, int64_t xs, const MatrixView& w,
                                const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; j += 16) {
    const int64_t cols = std::min<int64_t>(16, j1 - j);
    const int64_t last = cols > 8 ? cols - 8 : cols;  // Outputs in the strip's last vector.
    for (int64_t r = 0; r < rows; r += kRowTile) {
      ForTileSize(std::min<int64_t>(kRowTile, rows - r), [&](auto rb) {
        constexpr int RB = decltype(rb)::value;
        if (cols > 8) {
          TileColMajor<WT, RB, 2>(x + r * xs, xs, w, bias, y + r * ys, ys, j, last);
        } else {
          TileColMajor<WT, RB, 1>(x + r * xs, xs, w, bias, y + r * ys, ys, j, last);
        }
      });
    }
  }
}

// Panel-major W: RB rows × V vectors of 8 outputs from vector v0 of a panel (one row × the whole
// panel, V = 8; up to 3 rows × half of it, V = 4: 12 accumulators and a broadcast, the weights
// loaded by the FMAs, within AVX2's 16 registers), `valid` of the panel's outputs real.
template <typename WT, int RB, int V>
SWARM_AVX2 void TilePanelAvx2(const float* x, int64_t xs, const WT* panel, int64_t k, int v0,
                              const float* bias, float* y, int64_t ys, int64_t valid,
                              SpreadPrefetch pf) {
  __m256 acc[RB][V];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  const WT* p = panel + 8 * v0;
  for (int64_t i = 0; i < k; ++i, p += kMatmulPanel) {
    pf.Step();
    for (int r = 0; r < RB; ++r) {
      const __m256 xb = _mm256_broadcast_ss(x + r * xs + i);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(xb, Load8(p + 8 * v), acc[r][v]);
    }
  }
  for (int v = 0; v < V; ++v) {
    const int64_t j = 8 * (v0 + v), n = std::clamp<int64_t>(valid - j, 0, 8);
    if (n == 0) break;
    const __m256i m = TailMask(n);
    const __m256 bv = bias != nullptr ? _mm256_maskload_ps(bias + j, m) : _mm256_setzero_ps();
    for (int r = 0; r < RB; ++r) {
      const __m256 out = bias != nullptr ? _mm256_add_ps(acc[r][v], bv) : acc[r][v];
      _mm256_maskstore_ps(y + r * ys + j, m, out);
    }
  }
}

template <typename WT>
SWARM_AVX2 void PanelsAvx2(const float* x, int64_t rows, int64_t xs, const MatrixView& w,
                           const float* bias, float* y, int64_t ys, int64_t p0, int64_t p1) {
  constexpr int kMaxRows = 3;
  PanelTiles<WT>(w, rows, kMaxRows, p0, p1,
                 [&](int64_t p, const WT* panel, int64_t r, int64_t rb, SpreadPrefetch pf) {
                   const int64_t j0 = p * kMatmulPanel, valid = std::min(kMatmulPanel, w.n - j0);
                   const float* b = bias == nullptr ? nullptr : bias + j0;
                   if (rb == 1) {
                     return TilePanelAvx2<WT, 1, 8>(x + r * xs, xs, panel, w.k, 0, b,
                                                    y + r * ys + j0, ys, valid, pf);
                   }
                   kernel::ForCountUpTo<kMaxRows>(rb, [&](auto n) {  // Two halves.
                     constexpr int kRb = decltype(n)::value;
                     TilePanelAvx2<WT, kRb, 4>(x + r * xs, xs, panel, w.k, 0, b, y + r * ys + j0,
                                               ys, valid, pf);
                     TilePanelAvx2<WT, kRb, 4>(x + r * xs, xs, panel, w.k, 4, b, y + r * ys + j0,
                                               ys, valid, SpreadPrefetch(nullptr, 0, w.k, false));
                   });
                 });
}

// One block of columns [j0, j1) for all rows.
template <typename WT>
SWARM_AVX2 void BlockAvx2(const float* x, int64_t rows, int64_t xs, const MatrixView& w,
                          const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
  if (w.col_stride != 1) return ColumnMajorAvx2<WT>(x, rows, xs, w, bias, y, ys, j0, j1);
  auto tile = [&](auto rb, auto jb, int64_t r, int64_t j, bool ahead) {
    constexpr int kRb = decltype(rb)::value, kJb = decltype(jb)::value;
    if constexpr (kJb == 1 || kRb <= kRowTile) {  // The tiles RowMajorBlock asks for.
      TileRowMajor<WT, kRb, kJb>(x + r * xs, xs, w, bias, y + r * ys, ys, j, ahead);
    }
  };
  // Multi-output tiles of 3 outputs: 12 accumulators for 4 rows, 7 loads per 12 FMAs.
  RowMajorBlock(rows, w.k, j0, j1, 3, tile);
}

// ---------------------------------------------------------------------------------------------
// AVX-512 (row-major W; column-major W goes through the AVX2 tiles).

// As TileRowMajor with 16 lanes: lane l sums the products of i ≡ l (mod 16) in increasing i.
template <typename WT, int RB, int JB>
SWARM_AVX512 void TileRowMajor512(const float* x, int64_t xs, const MatrixView& w,
                                  const float* bias, float* y, int64_t ys, int64_t j, bool ahead) {
  const int64_t k = w.k;
  const WT* wp[JB];
  for (int b = 0; b < JB; ++b) wp[b] = static_cast<const WT*>(w.data) + (j + b) * w.row_stride;
  __m512 acc[RB][JB];
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < JB; ++b) acc[r][b] = _mm512_setzero_ps();
  }
  constexpr int64_t kLine = 64 / sizeof(WT);
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    if ((i & (kLine - 1)) == 0) {
      PrefetchWeights<JB>(wp, i, ahead, w.row_stride);
    }
    __m512 wv[JB];
    for (int b = 0; b < JB; ++b) wv[b] = Load16(wp[b] + i);
    for (int r = 0; r < RB; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * xs + i);
      for (int b = 0; b < JB; ++b) acc[r][b] = _mm512_fmadd_ps(xv, wv[b], acc[r][b]);
    }
  }
  if (i < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - i)) - 1);
    __m512 wv[JB];
    for (int b = 0; b < JB; ++b) wv[b] = LoadPartial16(wp[b] + i, m);
    for (int r = 0; r < RB; ++r) {
      const __m512 xv = LoadPartial16(x + r * xs + i, m);
      for (int b = 0; b < JB; ++b) acc[r][b] = _mm512_fmadd_ps(xv, wv[b], acc[r][b]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < JB; ++b) {
      float s = HorizontalSum16(acc[r][b]);
      if (bias != nullptr) s += bias[j + b];
      y[r * ys + j + b] = s;
    }
  }
}

template <typename WT>
SWARM_AVX512 void BlockAvx512(const float* x, int64_t rows, int64_t xs, const MatrixView& w,
                              const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
  if (w.col_stride != 1) return ColumnMajorAvx2<WT>(x, rows, xs, w, bias, y, ys, j0, j1);
  auto tile = [&](auto rb, auto jb, int64_t r, int64_t j, bool ahead) {
    constexpr int kRb = decltype(rb)::value, kJb = decltype(jb)::value;
    if constexpr (kJb == 1 || kRb <= kRowTile) {  // The tiles RowMajorBlock asks for.
      TileRowMajor512<WT, kRb, kJb>(x + r * xs, xs, w, bias, y + r * ys, ys, j, ahead);
    }
  };
  RowMajorBlock(rows, w.k, j0, j1, 4, tile);
}

// Panel-major W: RB rows × V vectors of 16 outputs from vector v0 of G consecutive panels from
// `panel` (a whole panel, V = 4, for up to 6 rows: 24 accumulators, 4 weight vectors and a
// broadcast of 32 registers; two whole ones for up to 3 rows, two streams and 8·RB accumulators;
// half a panel, V = 2, for 7 or 8), `valid` of the outputs from the first panel's start real.
// Prefetches: kNear, each panel's stream kPanelNearBytes ahead into L1 in a fixed loop per input
// (through SpreadPrefetch's budget, one and 4 rows were 3–7 % slower); else one Step() of `pf`
// per input.
template <typename WT, int RB, int G, int V, bool kNear>
SWARM_AVX512 void TilePanel512(const float* x, int64_t xs, const WT* panel, int64_t k, int v0,
                               const float* bias, float* y, int64_t ys, int64_t valid,
                               SpreadPrefetch pf) {
  constexpr int64_t kLines = kMatmulPanel * sizeof(WT) / 64;  // Per input and panel.
  const int64_t stride = k * kMatmulPanel;                    // From one panel to the next.
  __m512 acc[RB][G * V];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < G * V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < k; ++i) {
    const WT* row = panel + i * kMatmulPanel;
    if constexpr (kNear) {
      for (int g = 0; g < G; ++g) {
        const char* ahead = reinterpret_cast<const char*>(row + g * stride) + kPanelNearBytes;
        for (int64_t l = 0; l < kLines; ++l) _mm_prefetch(ahead + 64 * l, _MM_HINT_T0);
      }
    } else {
      pf.Step();
    }
    __m512 wv[G * V];
    for (int g = 0; g < G; ++g) {
      for (int v = 0; v < V; ++v) wv[g * V + v] = Load16(row + g * stride + 16 * (v0 + v));
    }
    for (int r = 0; r < RB; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * xs + i]);
      for (int v = 0; v < G * V; ++v) acc[r][v] = _mm512_fmadd_ps(xb, wv[v], acc[r][v]);
    }
  }
  for (int g = 0; g < G; ++g) {
    for (int v = 0; v < V; ++v) {
      const int64_t j = g * kMatmulPanel + 16 * (v0 + v);
      const int64_t n = std::clamp<int64_t>(valid - j, 0, 16);
      if (n == 0) continue;
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __m512 bv = bias != nullptr ? LoadPartial16(bias + j, m) : _mm512_setzero_ps();
      for (int r = 0; r < RB; ++r) {
        const __m512 sum = acc[r][g * V + v];
        _mm512_mask_storeu_ps(y + r * ys + j, m, bias != nullptr ? _mm512_add_ps(sum, bv) : sum);
      }
    }
  }
}

template <typename WT>
SWARM_AVX512 void PanelsAvx512(const float* x, int64_t rows, int64_t xs, const MatrixView& w,
                               const float* bias, float* y, int64_t ys, int64_t p0, int64_t p1) {
  // Up to 8 rows (memory-bound) in one row tile; more in tiles of up to 6.
  constexpr int kOneTile = 8, kMaxRows = 6, kPairRows = 3;
  const int64_t elements = w.k * kMatmulPanel;
  const SpreadPrefetch none(nullptr, 0, w.k, false);
  if (rows <= 2 * kPairRows) {  // Pairs of panels; an odd last one below.
    int64_t p = p0;
    const PanelRowTiles tiles(rows, kPairRows);
    for (; p + 1 < p1; p += 2) {
      const WT* a = static_cast<const WT*>(w.data) + p * elements;
      const int64_t j0 = p * kMatmulPanel;
      for (int64_t t = 0; t < tiles.count; ++t) {
        const int64_t r = tiles.Start(t);
        kernel::ForCountUpTo<kPairRows>(tiles.Size(t), [&](auto n) {
          TilePanel512<WT, decltype(n)::value, 2, 4, true>(
              x + r * xs, xs, a, w.k, 0, bias == nullptr ? nullptr : bias + j0, y + r * ys + j0, ys,
              std::min(2 * kMatmulPanel, w.n - j0), none);
        });
      }
    }
    p0 = p;
  }
  PanelTiles<WT>(
      w, rows, rows <= kOneTile ? kOneTile : kMaxRows, p0, p1,
      [&](int64_t p, const WT* panel, int64_t r, int64_t rb, SpreadPrefetch pf) {
        const int64_t j0 = p * kMatmulPanel, valid = std::min(kMatmulPanel, w.n - j0);
        const float* b = bias == nullptr ? nullptr : bias + j0;
        kernel::ForCountUpTo<kOneTile>(rb, [&](auto n) {
          constexpr int kRb = decltype(n)::value;
          if constexpr (kRb <= kMaxRows) {
            TilePanel512<WT, kRb, 1, 4, false>(x + r * xs, xs, panel, w.k, 0, b, y + r * ys + j0,
                                               ys, valid, pf);
          } else {  // Two halves; the first one's prefetches cover the panel.
            TilePanel512<WT, kRb, 1, 2, false>(x + r * xs, xs, panel, w.k, 0, b, y + r * ys + j0,
                                               ys, valid, pf);
            const int64_t lines =
                (p + 1) * kMatmulPanel < w.n
                    ? elements * static_cast<int64_t>(sizeof(WT)) / 64 / kSecondPassShare
                    : 0;
            TilePanel512<WT, kRb, 1, 2, false>(
                x + r * xs, xs, panel, w.k, 2, b, y + r * ys + j0, ys, valid,
                SpreadPrefetch(reinterpret_cast<const char*>(panel + elements) + kPanelNearBytes,
                               lines, w.k, false));
          }
        });
      });
}

#endif  // SWARM_MATMUL_X86

template <typename WT>
void Block(MatmulIsa isa, const float* x, int64_t rows, int64_t xs, const MatrixView& w,
           const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
#ifdef SWARM_MATMUL_X86
  if (isa == MatmulIsa::kAvx512) return BlockAvx512<WT>(x, rows, xs, w, bias, y, ys, j0, j1);
  if (isa == MatmulIsa::kAvx2) return BlockAvx2<WT>(x, rows, xs, w, bias, y, ys, j0, j1);
#endif
  (void)isa;
  for (int64_t j = j0; j < j1; j += kColumnBlock) {
    BlockScalar<WT>(x, rows, xs, w, bias, y, ys, j, std::min(j1, j + kColumnBlock));
  }
}

// Panels [p0, p1) of a panel-major W for all rows.
template <typename WT>
void Panels(MatmulIsa isa, const float* x, int64_t rows, int64_t xs, const MatrixView& w,
            const float* bias, float* y, int64_t ys, int64_t p0, int64_t p1) {
#ifdef SWARM_MATMUL_X86
  if (isa == MatmulIsa::kAvx512) return PanelsAvx512<WT>(x, rows, xs, w, bias, y, ys, p0, p1);
  if (isa == MatmulIsa::kAvx2) return PanelsAvx2<WT>(x, rows, xs, w, bias, y, ys, p0, p1);
#endif
  (void)isa;
  PanelsScalar<WT>(x, rows, xs, w, bias, y, ys, p0, p1);
}

}  // namespace

bool CpuHasAvx2Fma() {
#ifdef SWARM_MATMUL_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool CpuHasAvx512() {
#ifdef SWARM_MATMUL_X86
  static const bool has = CpuHasAvx2Fma() && __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return has;
#else
  return false;
#endif
}

MatmulIsa ResolveIsa(MatmulIsa isa) {
  if (isa != MatmulIsa::kAuto) return isa;
  MatmulIsa cap = MatmulIsa::kAvx512;
  if (const char* env = std::getenv("SWARM_CPU_ISA")) {
    if (std::strcmp(env, "scalar") == 0) cap = MatmulIsa::kScalar;
    if (std::strcmp(env, "avx2") == 0) cap = MatmulIsa::kAvx2;
  }
  if (cap == MatmulIsa::kAvx512 && CpuHasAvx512()) return MatmulIsa::kAvx512;
  if (cap != MatmulIsa::kScalar && CpuHasAvx2Fma()) return MatmulIsa::kAvx2;
  return MatmulIsa::kScalar;
}

const char* MatmulIsaName(MatmulIsa isa) {
  switch (isa) {
    case MatmulIsa::kScalar:
      return "scalar";
    case MatmulIsa::kAvx2:
      return "avx2";
    case MatmulIsa::kAvx512:
      return "avx512";
    default:
      return "auto";
  }
}

void MatmulRows(const float* x, int64_t rows, int64_t x_stride, const MatrixView& w,
                const float* bias, float* y, int64_t y_stride, MatmulIsa isa, ComputeTeam* team) {
  if (rows <= 0 || w.n <= 0) return;
  isa = ResolveIsa(isa);
  // The unit of the split: a block of kColumnBlock columns, or of panels — two where a few rows
  // take them in pairs (PanelsAvx512), so that no share ends in a single one.
  const int64_t per_unit = rows <= kPanelSharedTaskRows ? 2 : 1;
  const int64_t panels = (w.n + kMatmulPanel - 1) / kMatmulPanel;
  const int64_t blocks =
      w.panel != 0 ? (panels + per_unit - 1) / per_unit : (w.n + kColumnBlock - 1) / kColumnBlock;
  auto run = [&](int64_t b0, int64_t b1) {
    if (w.panel != 0) {
      const int64_t p0 = b0 * per_unit, p1 = std::min(panels, b1 * per_unit);
      if (p0 >= p1) return;
      if (w.type == WeightType::kBf16) {
        return Panels<uint16_t>(isa, x, rows, x_stride, w, bias, y, y_stride, p0, p1);
      }
      return Panels<float>(isa, x, rows, x_stride, w, bias, y, y_stride, p0, p1);
    }
    const int64_t j0 = b0 * kColumnBlock, j1 = std::min(w.n, b1 * kColumnBlock);
    if (j0 >= j1) return;
    if (w.type == WeightType::kBf16) {
      Block<uint16_t>(isa, x, rows, x_stride, w, bias, y, y_stride, j0, j1);
    } else {
      Block<float>(isa, x, rows, x_stride, w, bias, y, y_stride, j0, j1);
    }
  };
  if (rows * w.n * w.k < kMinParallelWork || blocks < 2) return run(0, blocks);
  std::shared_ptr<ComputeTeam> held;
  if (team == nullptr) {
    held = SharedComputeTeam();
    team = held.get();
  }
  // A few tasks per member, each a contiguous range of blocks, taken as members come free; for
  // panels of several row tiles one range per member, whose tiles prefetch the next panel of
  // their own range (with 4 per member, a range's next panel was often another member's).
  const bool one_range = w.panel != 0 && rows > kPanelSharedTaskRows;
  const int64_t tasks = std::min<int64_t>(blocks, (one_range ? 1 : 4) * team->size());
  team->Run(tasks,
            [&](int64_t t, int /*member*/) { run(blocks * t / tasks, blocks * (t + 1) / tasks); });
}

}  // namespace swarm::model
