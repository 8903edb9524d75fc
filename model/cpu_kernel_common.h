// What the CPU kernels (cpu_matmul.cc, cpu_qmatmul.cc, cpu_attention.cc) share, in one place
// because their results must agree bit for bit where cpu_qmatmul.h promises it: the row-tile
// height, the dispatch from a run-time tile size to a compile-time one, the weight prefetches, the
// bf16 widening, the scalar lane-wise dot product, the vector loads, and the horizontal sums whose
// order the scalar fallbacks reproduce. Internal to model/ (stateless,
// header-only, torch-free).
#ifndef SWARM_MODEL_CPU_KERNEL_COMMON_H_
#define SWARM_MODEL_CPU_KERNEL_COMMON_H_

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace swarm::model::kernel {

// Rows per register tile: the rows that share one load of each weight vector.
inline constexpr int kRowTile = 4;

// fn(std::integral_constant<int, n>) for n in 1..N known only at run time (n outside 1..N runs
// as 1).
template <int N, typename Fn>
void ForCountUpTo(int64_t n, Fn&& fn) {
  if constexpr (N <= 1) {
    fn(std::integral_constant<int, 1>());
  } else {
    if (n == N) return fn(std::integral_constant<int, N>());
    ForCountUpTo<N - 1>(n, fn);
  }
}

// The same for a tile size n in 1..kRowTile.
template <typename Fn>
void ForTileSize(int64_t n, Fn&& fn) {
  ForCountUpTo<kRowTile>(n, fn);
}

// f32 from f32, or from bf16 (the upper 16 bits of an f32: exact).
inline float Widen(float v) { return v; }
inline float Widen(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Σ x[i]·w[i] in the scalar fallbacks' order: lane l (of 8) sums the products of the i with
// i % 8 == l in increasing i, then the lanes are summed pairwise in the order of the AVX2
// horizontal sum (HorizontalSum below).
template <typename WT>
float DotLanesScalar(const float* x, const WT* w, int64_t k) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += x[i + l] * Widen(w[i + l]);
  }
  for (int l = 0; i + l < k; ++l) lane[l] += x[i + l] * Widen(w[i + l]);
  const float s0 = lane[0] + lane[4], s1 = lane[1] + lane[5];
  const float s2 = lane[2] + lane[6], s3 = lane[3] + lane[7];
  return (s0 + s2) + (s1 + s3);
}

#if defined(__x86_64__) || defined(__i386__)
// Software prefetch distance along a weight row, for tiles of JB weight rows: 1 KB ahead in each
// of several rows, 4 KB in a tile of one row — a single stream needs more lines in flight to
// keep memory busy (the 12 × d768 stack of products at one row: 19–24 ms at 1 KB in a 2-row tile,
// 15–18 ms at 4 KB in a 1-row tile, interleaved runs).
constexpr int64_t PrefetchBytes(int jb) { return jb == 1 ? 4096 : 1024; }

// The prefetches for one cache line of a tile's JB weight rows (row b at wp[b], rows row_stride
// elements apart) at element i: PrefetchBytes(JB) ahead in its own rows into L1, or — for a row
// tile after the first (`ahead`), whose rows are in cache already — the same line of the next
// tile's rows (JB rows on) into L2, so that memory keeps streaming while it computes. Never changes
// a result.
template <int JB, typename WT>
inline void PrefetchWeights(const WT* const* wp, int64_t i, bool ahead, int64_t row_stride) {
  for (int b = 0; b < JB; ++b) {
    if (ahead) {
      _mm_prefetch(reinterpret_cast<const char*>(wp[b] + JB * row_stride + i), _MM_HINT_T1);
    } else {
      _mm_prefetch(reinterpret_cast<const char*>(wp[b] + i) + PrefetchBytes(JB), _MM_HINT_T0);
    }
  }
}

#define SWARM_AVX2 __attribute__((target("avx2,fma")))
#define SWARM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

// (a0+a4 + a2+a6) + (a1+a5 + a3+a7): the order of the scalar fallbacks.
SWARM_AVX2 inline float HorizontalSum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // s0..s3
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                  // s0+s2, s1+s3
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// Loads of 8 f32 lanes from f32 or bf16 (uint16_t, widened exactly) storage.

// Lanes 0..n-1 set (n in 0..8): the mask of a partial vector at the end of a row.
SWARM_AVX2 inline __m256i TailMask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SWARM_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
SWARM_AVX2 inline __m256 Load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// The first n (0..8) elements, the others 0.
SWARM_AVX2 inline __m256 LoadPartial8(const float* p, int64_t n) {
  return _mm256_maskload_ps(p, TailMask(n));
}
SWARM_AVX2 inline __m256 LoadPartial8(const uint16_t* p, int64_t n) {
  uint16_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(buf, p, n * sizeof(uint16_t));
  return Load8(buf);
}

// The same for 16 lanes (AVX-512). The maskz forms with a full mask throughout: GCC 12's plain
// forms start from a self-initialised "undefined" vector that its own -Wuninitialized flags (an
// error under -Werror).
constexpr __mmask16 kAll16 = 0xFFFF;
SWARM_AVX512 inline __m512 Load16(const float* p) { return _mm512_loadu_ps(p); }
SWARM_AVX512 inline __m512 Load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(kAll16, _mm512_maskz_cvtepu16_epi32(kAll16, h), 16));
}
// The lanes of m (the others 0); masked-off elements are not read.
SWARM_AVX512 inline __m512 LoadPartial16(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}
SWARM_AVX512 inline __m512 LoadPartial16(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(kAll16, _mm512_maskz_cvtepu16_epi32(kAll16, h), 16));
}

// The 16 lanes summed in a fixed tree: halves, then the AVX2 order on the 8 sums.
SWARM_AVX512 inline float HorizontalSum16(__m512 a) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, a);
  return HorizontalSum(_mm256_add_ps(_mm256_load_ps(lanes), _mm256_load_ps(lanes + 8)));
}
#endif

}  // namespace swarm::model::kernel

#endif  // SWARM_MODEL_CPU_KERNEL_COMMON_H_
