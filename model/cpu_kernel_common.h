// What the CPU row kernels (cpu_matmul.cc, cpu_qmatmul.cc) share, in one place because their
// results must agree bit for bit where cpu_qmatmul.h promises it: the row-tile height, the
// dispatch from a run-time tile size to a compile-time one, the weight prefetches, and the AVX2
// horizontal sum whose order both scalar fallbacks reproduce. Internal to model/ (stateless,
// header-only, torch-free).
#ifndef SWARM_MODEL_CPU_KERNEL_COMMON_H_
#define SWARM_MODEL_CPU_KERNEL_COMMON_H_

#include <cstdint>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace swarm::model::kernel {

// Rows per register tile: the rows that share one load of each weight vector.
inline constexpr int kRowTile = 4;

// fn(std::integral_constant<int, n>) for a tile size n in 1..4 known only at run time (n outside
// 2..4 runs as 1).
template <typename Fn>
void ForTileSize(int64_t n, Fn&& fn) {
  static_assert(kRowTile == 4, "one case per tile size");
  switch (n) {
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

#if defined(__x86_64__) || defined(__i386__)
// Software prefetch distance along a weight row.
inline constexpr int64_t kPrefetchBytes = 1024;

// The prefetches for one cache line of a tile's JB weight rows (row b at wp[b], rows row_stride
// elements apart) at element i: kPrefetchBytes ahead in its own rows into L1, or — for a row tile
// after the first (`ahead`), whose rows are in cache already — the same line of the next tile's
// rows (JB rows on) into L2, so that memory keeps streaming while it computes. Never changes a
// result.
template <int JB, typename WT>
inline void PrefetchWeights(const WT* const* wp, int64_t i, bool ahead, int64_t row_stride) {
  for (int b = 0; b < JB; ++b) {
    if (ahead) {
      _mm_prefetch(reinterpret_cast<const char*>(wp[b] + JB * row_stride + i), _MM_HINT_T1);
    } else {
      _mm_prefetch(reinterpret_cast<const char*>(wp[b] + i) + kPrefetchBytes, _MM_HINT_T0);
    }
  }
}

// (a0+a4 + a2+a6) + (a1+a5 + a3+a7): the order of the scalar fallbacks.
__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  // s0..s3
  __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                  // s0+s2, s1+s3
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#endif

}  // namespace swarm::model::kernel

#endif  // SWARM_MODEL_CPU_KERNEL_COMMON_H_
