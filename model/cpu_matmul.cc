// The batch-invariant row kernel (model/cpu_matmul.h). Structure, for both implementations:
//   MatmulRows → at::parallel_for over blocks of kColumnBlock output columns → per block, the
//   columns in register tiles of JB outputs × RB rows; per tile element, the fixed reduction
//   the header describes.
// An element's operations depend only on x's row, W's row (column) and k — never on RB, JB, the
// tile it falls in or the thread — which is what makes a row's result independent of the batch.
#include "model/cpu_matmul.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SWARM_MATMUL_X86 1
#endif

namespace swarm::model {
namespace {

// Output columns per parallel task unit (a multiple of 16, the widest tile).
constexpr int64_t kColumnBlock = 16;
// Rows per register tile: the rows that share one load of each weight vector.
constexpr int kRowTile = 4;

// ---------------------------------------------------------------------------------------------
// Portable scalar fallback.

// Row-major W: lane l (of 8) sums x[i]·w[i] for i % 8 == l in increasing i, then the lanes are
// summed pairwise in the order the AVX2 kernel's horizontal sum uses.
float DotLanesScalar(const float* x, const float* w, int64_t k) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += x[i + l] * w[i + l];
  }
  for (int l = 0; i + l < k; ++l) lane[l] += x[i + l] * w[i + l];
  const float s0 = lane[0] + lane[4], s1 = lane[1] + lane[5];
  const float s2 = lane[2] + lane[6], s3 = lane[3] + lane[7];
  return (s0 + s2) + (s1 + s3);
}

void BlockScalar(const float* x, int64_t rows, int64_t xs, const MatrixView& w, const float* bias,
                 float* y, int64_t ys, int64_t j0, int64_t j1) {
  if (w.col_stride == 1) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* wj = w.data + j * w.row_stride;
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
      const float* wi = w.data + i * w.col_stride + j0;
      for (int64_t j = 0; j < nj; ++j) acc[j] += xr[i] * wi[j];
    }
    for (int64_t j = 0; j < nj; ++j)
      y[r * ys + j0 + j] = bias != nullptr ? acc[j] + bias[j0 + j] : acc[j];
  }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA.
#ifdef SWARM_MATMUL_X86

#define SWARM_AVX2 __attribute__((target("avx2,fma")))

// Lanes 0..n-1 set (n in 0..8): the mask of a partial vector at the end of a row.
SWARM_AVX2 inline __m256i TailMask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// (a0+a4 + a2+a6) + (a1+a5 + a3+a7): the scalar fallback's order.
SWARM_AVX2 inline float HorizontalSum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // s0..s3
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                  // s0+s2, s1+s3
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Row-major W: RB rows × JB outputs starting at output j. Each (row, output) accumulates in one
// vector: lane l gets an FMA for every i ≡ l (mod 8), in increasing i; the partial last vector is
// a masked load (absent lanes read 0 and add +0·0).
template <int RB, int JB>
SWARM_AVX2 void TileRowMajor(const float* x, int64_t xs, const MatrixView& w, const float* bias,
                             float* y, int64_t ys, int64_t j) {
  const int64_t k = w.k;
  const float* wp[JB];
  for (int b = 0; b < JB; ++b) wp[b] = w.data + (j + b) * w.row_stride;
  __m256 acc[RB][JB];
  for (int r = 0; r < RB; ++r) {
    for (int b = 0; b < JB; ++b) acc[r][b] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    if ((i & 15) == 0) {  // One prefetch per 64-byte line, 1 KiB ahead (does not change results).
      for (int b = 0; b < JB; ++b)
        _mm_prefetch(reinterpret_cast<const char*>(wp[b] + i + 256), _MM_HINT_T0);
    }
    __m256 wv[JB];
    for (int b = 0; b < JB; ++b) wv[b] = _mm256_loadu_ps(wp[b] + i);
    for (int r = 0; r < RB; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * xs + i);
      for (int b = 0; b < JB; ++b) acc[r][b] = _mm256_fmadd_ps(xv, wv[b], acc[r][b]);
    }
  }
  if (i < k) {
    const __m256i m = TailMask(k - i);
    __m256 wv[JB];
    for (int b = 0; b < JB; ++b) wv[b] = _mm256_maskload_ps(wp[b] + i, m);
    for (int r = 0; r < RB; ++r) {
      const __m256 xv = _mm256_maskload_ps(x + r * xs + i, m);
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
template <int RB, int JV>
SWARM_AVX2 void TileColMajor(const float* x, int64_t xs, const MatrixView& w, const float* bias,
                             float* y, int64_t ys, int64_t j, int64_t last) {
  const __m256i m = TailMask(last);
  __m256 acc[RB][JV];
  for (int r = 0; r < RB; ++r) {
    for (int v = 0; v < JV; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  const float* wp = w.data + j;
  for (int64_t i = 0; i < w.k; ++i, wp += w.col_stride) {
    __m256 wv[JV];
    for (int v = 0; v < JV; ++v) {
      wv[v] =
          v == JV - 1 && last < 8 ? _mm256_maskload_ps(wp + 8 * v, m) : _mm256_loadu_ps(wp + 8 * v);
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

// fn(std::integral_constant<int, rb>) for a row-tile height rb in 1..kRowTile known at run time.
template <typename Fn>
void ForRowTile(int64_t rb, Fn&& fn) {
  static_assert(kRowTile == 4, "one case per row-tile height");
  switch (rb) {
    case 4:
      return fn(std::integral_constant<int, 4>());
    case 3:
      return fn(std::integral_constant<int, 3>());
    case 2:
      return fn(std::integral_constant<int, 2>());
    default:
      return fn(std::integral_constant<int, 1>());
  }
}

// One block of columns [j0, j1) for all rows. Outputs outer, rows inner: a tile's few weight rows
// (row-major: 2 or 3 of them; column-major: a 16-column strip) stay in cache while every row tile
// (kRowTile rows, the last one shorter) reads them, so W comes from memory once.
SWARM_AVX2 void BlockAvx2(const float* x, int64_t rows, int64_t xs, const MatrixView& w,
                          const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
  if (w.col_stride == 1) {
    // Outputs per tile: 3 (12 accumulators for 4 rows, 7 loads per 12 FMAs), 2 for a single row
    // (measured faster there); the block's last outputs in a narrower tile.
    const int64_t jt = rows == 1 ? 2 : 3;
    for (int64_t j = j0; j < j1; j += jt) {
      const int64_t nj = std::min(jt, j1 - j);
      for (int64_t r = 0; r < rows; r += kRowTile) {
        ForRowTile(std::min<int64_t>(kRowTile, rows - r), [&](auto rb) {
          constexpr int RB = decltype(rb)::value;
          const float* xr = x + r * xs;
          float* yr = y + r * ys;
          switch (nj) {
            case 4:
              TileRowMajor<RB, 4>(xr, xs, w, bias, yr, ys, j);
              break;
            case 3:
              TileRowMajor<RB, 3>(xr, xs, w, bias, yr, ys, j);
              break;
            case 2:
              TileRowMajor<RB, 2>(xr, xs, w, bias, yr, ys, j);
              break;
            default:
              TileRowMajor<RB, 1>(xr, xs, w, bias, yr, ys, j);
              break;
          }
        });
      }
    }
    return;
  }
  for (int64_t j = j0; j < j1; j += 16) {
    const int64_t cols = std::min<int64_t>(16, j1 - j);
    const int64_t last = cols > 8 ? cols - 8 : cols;  // Outputs in the strip's last vector.
    for (int64_t r = 0; r < rows; r += kRowTile) {
      ForRowTile(std::min<int64_t>(kRowTile, rows - r), [&](auto rb) {
        constexpr int RB = decltype(rb)::value;
        if (cols > 8) {
          TileColMajor<RB, 2>(x + r * xs, xs, w, bias, y + r * ys, ys, j, last);
        } else {
          TileColMajor<RB, 1>(x + r * xs, xs, w, bias, y + r * ys, ys, j, last);
        }
      });
    }
  }
}

#endif  // SWARM_MATMUL_X86

}  // namespace

bool CpuHasAvx2Fma() {
#ifdef SWARM_MATMUL_X86
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

void MatmulRows(const float* x, int64_t rows, int64_t x_stride, const MatrixView& w,
                const float* bias, float* y, int64_t y_stride, MatmulIsa isa) {
  if (rows <= 0 || w.n <= 0) return;
  const bool avx2 = isa == MatmulIsa::kAvx2 || (isa == MatmulIsa::kAuto && CpuHasAvx2Fma());
  const int64_t blocks = (w.n + kColumnBlock - 1) / kColumnBlock;
  // About 64K multiply-adds per task at least, so small products stay on the calling thread.
  const int64_t grain =
      std::max<int64_t>(1, 65536 / std::max<int64_t>(1, kColumnBlock * w.k * rows));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * kColumnBlock, j1 = std::min(w.n, b1 * kColumnBlock);
#ifdef SWARM_MATMUL_X86
    if (avx2) {
      BlockAvx2(x, rows, x_stride, w, bias, y, y_stride, j0, j1);
      return;
    }
#endif
    for (int64_t j = j0; j < j1; j += kColumnBlock) {
      BlockScalar(x, rows, x_stride, w, bias, y, y_stride, j, std::min(w.n, j + kColumnBlock));
    }
  });
  (void)avx2;
}

}  // namespace swarm::model
