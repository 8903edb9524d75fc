// The quantized row kernel (model/cpu_qmatmul.h). Structure, as model/cpu_matmul.cc's:
//   QMatmulRows → at::parallel_for over blocks of kColumnBlock output columns → per block, the
//   columns in register tiles of one output × RB rows. Per group of 32 inputs a tile converts
//   the output's 32 codes to floats once (4 vectors of 8, or 2 of 16) and feeds them to its RB
//   rows, so W is read from memory once per call whatever the number of rows.
// The scalar fallback dequantizes a block of rows into a small buffer and runs the f32 scalar
// kernel on it.
#include "model/cpu_qmatmul.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/host_tensor.h"
#include "model/cpu_kernel_common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define SWARM_QMATMUL_X86 1
#endif

namespace swarm::model {
namespace {

constexpr int64_t kColumnBlock = 16;
using kernel::ForTileSize;
using kernel::kRowTile;
using kernel::PrefetchWeights;

inline int64_t RowBytes(const QuantMatrixView& w) { return QuantRowBytes(w.format, w.k); }

// Group g of row j dequantized: out[0..32).
void DequantGroup(const QuantMatrixView& w, int64_t j, int64_t g, float* out) {
  const int64_t groups = QuantGroups(w.k);
  const float d = HalfToFloat(w.scales[j * groups + g]);
  const uint8_t* p = w.data + j * RowBytes(w);
  if (w.format == WeightQuant::kQ8) {
    p += g * kQuantGroup;
    for (int i = 0; i < kQuantGroup; ++i)
      out[i] = static_cast<float>(static_cast<int8_t>(p[i])) * d;
  } else {
    p += g * (kQuantGroup / 2);
    for (int b = 0; b < kQuantGroup / 2; ++b) {
      out[b] = static_cast<float>((p[b] & 0x0F) - 8) * d;
      out[b + kQuantGroup / 2] = static_cast<float>((p[b] >> 4) - 8) * d;
    }
  }
}

// Scalar: block [j0, j1) dequantized into `buf` (padded rows), then the f32 scalar kernel.
void BlockScalar(const float* x, int64_t rows, int64_t xs, const QuantMatrixView& w,
                 const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1,
                 std::vector<float>& buf) {
  const int64_t groups = QuantGroups(w.k), kp = groups * kQuantGroup;
  buf.resize(static_cast<size_t>((j1 - j0) * kp));
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t g = 0; g < groups; ++g) DequantGroup(w, j, g, buf.data() + (j - j0) * kp + g * 32);
  }
  MatrixView view;
  view.data = buf.data();
  view.n = j1 - j0;
  view.k = w.k;
  view.row_stride = kp;
  view.col_stride = 1;
  MatmulRows(x, rows, xs, view, bias != nullptr ? bias + j0 : nullptr, y + j0, ys,
             MatmulIsa::kScalar);
}

#ifdef SWARM_QMATMUL_X86

#define SWARM_QAVX2 __attribute__((target("avx2,fma,f16c")))

using kernel::HorizontalSum;

SWARM_QAVX2 inline __m256 Int8ToFloat(__m128i v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

// A group's 32 codes at p as floats, c[v] holding inputs 8v..8v+7 (the codes' own values: an
// integer's conversion is exact).
template <WeightQuant F>
SWARM_QAVX2 inline void Codes32(const uint8_t* p, __m256 c[4]) {
  if constexpr (F == WeightQuant::kQ8) {
    for (int v = 0; v < 4; ++v) {
      c[v] = Int8ToFloat(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * v)));
    }
  } else {
    // Byte b holds input b (low nibble) and input b + 16 (high nibble), so bytes 0..7 hold inputs
    // 0..7 and 16..23, bytes 8..15 inputs 8..15 and 24..31. A nibble n becomes the float 2^23 + n
    // by setting the exponent bits above it, and n − 8 exactly by subtracting 2^23 + 8 (fewer ops
    // than subtracting 8 and converting).
    const __m256i exponent = _mm256_set1_epi32(0x4B000000), low = _mm256_set1_epi32(0x0F);
    const __m256 offset = _mm256_set1_ps(8388616.0f);
    for (int half = 0; half < 2; ++half) {
      const __m256i bytes =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * half)));
      c[half] = _mm256_sub_ps(
          _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bytes, low), exponent)), offset);
      c[half + 2] = _mm256_sub_ps(
          _mm256_castsi256_ps(_mm256_or_si256(_mm256_srli_epi32(bytes, 4), exponent)), offset);
    }
  }
}

// The f16 scales of groups g..g+n-1 (n ≤ 8) widened into out[0..n), so that each group's scale is
// one broadcast load in the tiles rather than a scalar conversion and a shuffle.
SWARM_QAVX2 inline void WidenScales8(const uint16_t* sp, int64_t n, float* out) {
  uint16_t h[8] = {};
  if (n < 8) std::memcpy(h, sp, sizeof(uint16_t) * static_cast<size_t>(n));
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(n < 8 ? h : sp));
  _mm256_storeu_ps(out, _mm256_cvtph_ps(v));
}

// RB rows × output j. x rows hold QuantGroups(k)·32 readable floats (zero past k). Per (row,
// output) one accumulator of 8 lanes: per group, lane l gets the products x·q of the 4 inputs
// ≡ l mod 8 in increasing order, added times the group's scale (one FMA); the lanes summed at the
// end as the f32 kernel does.
template <WeightQuant F, int RB>
SWARM_QAVX2 void Tile(const float* x, int64_t xs, const QuantMatrixView& w, const float* bias,
                      float* y, int64_t ys, int64_t j, bool ahead) {
  const int64_t groups = QuantGroups(w.k), row_bytes = RowBytes(w);
  constexpr int64_t kGroupBytes = F == WeightQuant::kQ8 ? kQuantGroup : kQuantGroup / 2;
  const uint8_t* wp[1] = {w.data + j * row_bytes};
  const uint16_t* sp = w.scales + j * groups;
  __m256 acc[RB];
  for (int r = 0; r < RB; ++r) acc[r] = _mm256_setzero_ps();
  float scale[8];
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t off = g * kGroupBytes;
    if ((off & 63) == 0) PrefetchWeights<1>(wp, off, ahead, row_bytes);  // One per 64-byte line.
    if ((g & 7) == 0) WidenScales8(sp + g, std::min<int64_t>(8, groups - g), scale);
    __m256 c[4];
    Codes32<F>(wp[0] + off, c);
    const __m256 d = _mm256_set1_ps(scale[g & 7]);
    const float* xg = x + g * kQuantGroup;
    for (int r = 0; r < RB; ++r) {
      __m256 sum = _mm256_mul_ps(_mm256_loadu_ps(xg + r * xs), c[0]);
      for (int v = 1; v < 4; ++v) {
        sum = _mm256_fmadd_ps(_mm256_loadu_ps(xg + r * xs + 8 * v), c[v], sum);
      }
      acc[r] = _mm256_fmadd_ps(d, sum, acc[r]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    float s = HorizontalSum(acc[r]);
    if (bias != nullptr) s += bias[j];
    y[r * ys + j] = s;
  }
}

template <WeightQuant F>
SWARM_QAVX2 void BlockAvx2(const float* x, int64_t rows, int64_t xs, const QuantMatrixView& w,
                           const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
  // One output per tile whatever the rows: a row tile of 4 rows then holds 8 vector registers of
  // sums and accumulators, and a single row streams one row of codes per thread, prefetched
  // PrefetchBytes(1) ahead, which keeps memory busiest (batch-1 q8 decode of the 12 × d768 model:
  // 73–82 tokens/s with 4 outputs per tile, 137–192 with 1; q4 and 8 × d2048 gain too).
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t r = 0; r < rows; r += kRowTile) {
      ForTileSize(std::min<int64_t>(kRowTile, rows - r), [&](auto rb) {
        Tile<F, decltype(rb)::value>(x + r * xs, xs, w, bias, y + r * ys, ys, j, r > 0);
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512: a group's 32 codes as two vectors of 16 (inputs 0..15 and 16..31), converted in half
// the instructions of the AVX2 tile, which bounds the quantized products at one row (q4 above all:
// its nibbles cost more to unpack than its bytes cost to read).

#define SWARM_QAVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

using kernel::HorizontalSum16;
using kernel::kAll16;

// Inputs 0..15 (*lo) and 16..31 (*hi) of the group at p as floats (the maskz forms: see
// cpu_kernel_common.h).
template <WeightQuant F>
SWARM_QAVX512 inline void Codes16(const uint8_t* p, __m512* lo, __m512* hi) {
  if constexpr (F == WeightQuant::kQ8) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    *lo = _mm512_maskz_cvtepi32_ps(kAll16, _mm512_maskz_cvtepi8_epi32(kAll16, a));
    *hi = _mm512_maskz_cvtepi32_ps(kAll16, _mm512_maskz_cvtepi8_epi32(kAll16, b));
  } else {
    // Byte b holds input b (low nibble) and input b + 16 (high nibble). A nibble n becomes the
    // float 2^23 + n by setting the exponent bits above it (one ternary-logic op: (b & 0xF) | e),
    // and n − 8 exactly by subtracting 2^23 + 8: two fewer integer ops per group than masking,
    // subtracting 8 and converting, for the same values.
    const __m512i bytes =
        _mm512_maskz_cvtepu8_epi32(kAll16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i exponent = _mm512_set1_epi32(0x4B000000);  // The bits of 2^23.
    const __m512 offset = _mm512_set1_ps(8388616.0f);        // 2^23 + 8.
    const __m512i l = _mm512_maskz_ternarylogic_epi32(kAll16, bytes, _mm512_set1_epi32(0x0F),
                                                      exponent, 0xEA);  // (a & b) | c.
    const __m512i h =
        _mm512_maskz_or_epi32(kAll16, _mm512_maskz_srli_epi32(kAll16, bytes, 4), exponent);
    *lo = _mm512_maskz_sub_ps(kAll16, _mm512_castsi512_ps(l), offset);
    *hi = _mm512_maskz_sub_ps(kAll16, _mm512_castsi512_ps(h), offset);
  }
}

// As WidenScales8, 16 groups at a time.
SWARM_QAVX512 inline void WidenScales16(const uint16_t* sp, int64_t n, float* out) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
  _mm512_storeu_ps(out, _mm512_maskz_cvtph_ps(kAll16, _mm256_maskz_loadu_epi16(m, sp)));
}

// RB rows × output j. Per (row, output) one accumulator of 16 lanes: per group, lane l gets
// x[l]·q[l] + x[l+16]·q[l+16] (a product, then one FMA), added times the group's scale (one
// FMA); the lanes summed at the end as the f32 AVX-512 kernel does.
template <WeightQuant F, int RB>
SWARM_QAVX512 void Tile512(const float* x, int64_t xs, const QuantMatrixView& w, const float* bias,
                           float* y, int64_t ys, int64_t j, bool ahead) {
  const int64_t groups = QuantGroups(w.k), row_bytes = RowBytes(w);
  constexpr int64_t kGroupBytes = F == WeightQuant::kQ8 ? kQuantGroup : kQuantGroup / 2;
  const uint8_t* wp[1] = {w.data + j * row_bytes};
  const uint16_t* sp = w.scales + j * groups;
  __m512 acc[RB];
  for (int r = 0; r < RB; ++r) acc[r] = _mm512_setzero_ps();
  float scale[16];
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t off = g * kGroupBytes;
    if ((off & 63) == 0) PrefetchWeights<1>(wp, off, ahead, row_bytes);
    if ((g & 15) == 0) WidenScales16(sp + g, std::min<int64_t>(16, groups - g), scale);
    __m512 lo, hi;
    Codes16<F>(wp[0] + off, &lo, &hi);
    const __m512 d = _mm512_set1_ps(scale[g & 15]);
    const float* xg = x + g * kQuantGroup;
    for (int r = 0; r < RB; ++r) {
      const __m512 sum = _mm512_fmadd_ps(_mm512_loadu_ps(xg + r * xs + 16), hi,
                                         _mm512_mul_ps(_mm512_loadu_ps(xg + r * xs), lo));
      acc[r] = _mm512_fmadd_ps(d, sum, acc[r]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    float s = HorizontalSum16(acc[r]);
    if (bias != nullptr) s += bias[j];
    y[r * ys + j] = s;
  }
}

template <WeightQuant F>
SWARM_QAVX512 void BlockAvx512(const float* x, int64_t rows, int64_t xs, const QuantMatrixView& w,
                               const float* bias, float* y, int64_t ys, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {  // One output per tile, as BlockAvx2.
    for (int64_t r = 0; r < rows; r += kRowTile) {
      ForTileSize(std::min<int64_t>(kRowTile, rows - r), [&](auto rb) {
        Tile512<F, decltype(rb)::value>(x + r * xs, xs, w, bias, y + r * ys, ys, j, r > 0);
      });
    }
  }
}

// CPUID leaf 1, ECX bit 29 (bit_F16C): __builtin_cpu_supports("f16c") is gcc's only (clang 14, the
// libFuzzer build's compiler, rejects the feature name). Only asked after the AVX2 check, which
// covers the OS's support for the VEX registers.
bool CpuHasF16c() {
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  }();
  return has;
}

#endif  // SWARM_QMATMUL_X86

// Rounds half away from zero, as llama.cpp's quantizers (roundf).
inline int RoundAway(float v) { return static_cast<int>(std::round(v)); }

}  // namespace

void QMatmulRows(const float* x, int64_t rows, int64_t x_stride, const QuantMatrixView& w,
                 const float* bias, float* y, int64_t y_stride, MatmulIsa isa) {
  if (rows <= 0 || w.n <= 0) return;
  isa = ResolveIsa(isa);  // kAuto as ResolveIsa (SWARM_CPU_ISA caps it).
  bool avx2 = isa == MatmulIsa::kAvx2 || isa == MatmulIsa::kAvx512;
  const int64_t kp = QuantGroups(w.k) * kQuantGroup;
  // The vector tiles read whole groups of x: rows padded with zeros when k is not a multiple of 32.
  std::vector<float> padded;
  const float* xp = x;
  int64_t xps = x_stride;
#ifdef SWARM_QMATMUL_X86
  avx2 = avx2 && CpuHasF16c();
  const bool avx512 = avx2 && isa == MatmulIsa::kAvx512;
  if (avx2 && kp != w.k) {
    padded.assign(static_cast<size_t>(rows * kp), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(padded.data() + r * kp, x + r * x_stride, sizeof(float) * w.k);
    }
    xp = padded.data();
    xps = kp;
  }
#else
  avx2 = false;
#endif
  const int64_t blocks = (w.n + kColumnBlock - 1) / kColumnBlock;
  const int64_t grain =
      std::max<int64_t>(1, 65536 / std::max<int64_t>(1, kColumnBlock * w.k * rows));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * kColumnBlock, j1 = std::min(w.n, b1 * kColumnBlock);
#ifdef SWARM_QMATMUL_X86
    if (avx2) {
      const bool q8 = w.format == WeightQuant::kQ8;
      const auto block = avx512
                             ? (q8 ? BlockAvx512<WeightQuant::kQ8> : BlockAvx512<WeightQuant::kQ4>)
                             : (q8 ? BlockAvx2<WeightQuant::kQ8> : BlockAvx2<WeightQuant::kQ4>);
      block(xp, rows, xps, w, bias, y, y_stride, j0, j1);
      return;
    }
#endif
    std::vector<float> buf;
    for (int64_t j = j0; j < j1; j += kColumnBlock) {
      BlockScalar(x, rows, x_stride, w, bias, y, y_stride, j, std::min(w.n, j + kColumnBlock), buf);
    }
  });
}

void QuantizeRows(WeightQuant format, const float* src, int64_t n, int64_t k, int64_t src_stride,
                  uint8_t* data, uint16_t* scales) {
  const int64_t groups = QuantGroups(k), row_bytes = QuantRowBytes(format, k);
  float group[kQuantGroup];
  for (int64_t j = 0; j < n; ++j) {
    const float* row = src + j * src_stride;
    uint8_t* out = data + j * row_bytes;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * kQuantGroup, len = std::min<int64_t>(kQuantGroup, k - begin);
      std::fill(group, group + kQuantGroup, 0.0f);
      std::copy(row + begin, row + begin + len, group);
      if (format == WeightQuant::kQ8) {
        float amax = 0;
        for (float v : group) amax = std::max(amax, std::fabs(v));
        const uint16_t h = FloatToHalf(amax / 127.0f);
        const float d = HalfToFloat(h);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        for (int i = 0; i < kQuantGroup; ++i) {
          const int q = std::clamp(RoundAway(group[i] * id), -127, 127);
          out[g * kQuantGroup + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
        }
        scales[j * groups + g] = h;
      } else {
        float amax = 0, m = 0;
        for (float v : group) {
          if (std::fabs(v) > amax) {
            amax = std::fabs(v);
            m = v;
          }
        }
        const uint16_t h = FloatToHalf(m / -8.0f);
        const float d = HalfToFloat(h);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        uint8_t* o = out + g * (kQuantGroup / 2);
        for (int b = 0; b < kQuantGroup / 2; ++b) {
          const int q0 = std::clamp(RoundAway(group[b] * id) + 8, 0, 15);
          const int q1 = std::clamp(RoundAway(group[b + kQuantGroup / 2] * id) + 8, 0, 15);
          o[b] = static_cast<uint8_t>(q0 | (q1 << 4));
        }
        scales[j * groups + g] = h;
      }
    }
  }
}

void DequantizeRows(const QuantMatrixView& w, int64_t j0, int64_t j1, float* out) {
  const int64_t groups = QuantGroups(w.k);
  float group[kQuantGroup];
  for (int64_t j = j0; j < j1; ++j) {
    float* row = out + (j - j0) * w.k;
    for (int64_t g = 0; g < groups; ++g) {
      DequantGroup(w, j, g, group);
      const int64_t begin = g * kQuantGroup, len = std::min<int64_t>(kQuantGroup, w.k - begin);
      std::copy(group, group + len, row + begin);
    }
  }
}

}  // namespace swarm::model
