// One (row, head) of attention over the KV cache (model/cpu_attention.h). The vector versions keep
// the query and the output in registers (a compile-time number NV of vectors along the head
// dimension, the last one masked), so every position costs one load and one FMA per vector for
// its score and again for its value, plus one horizontal sum.
#include "model/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "model/cpu_kernel_common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SWARM_ATTENTION_X86 1
#endif

namespace swarm::model {
namespace {

using kernel::DotLanesScalar;
using kernel::Widen;

// The softmax of scores[0..n) in place, in f32, in increasing position; returns the sum of the
// exponentials.
float Softmax(float* scores, int64_t n, float max) {
  float sum = 0;
  for (int64_t p = 0; p < n; ++p) {
    const float e = std::exp(scores[p] - max);
    scores[p] = e;
    sum += e;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Portable scalar fallback.

template <typename T>
void AttendScalar(const float* q, const T* keys, const T* values, int64_t lo, int64_t hi,
                  int64_t hd, float scale, float* scores, float* out) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t p = lo; p <= hi; ++p) {
    const float s = DotLanesScalar(q, keys + p * hd, hd) * scale;
    scores[p - lo] = s;
    max = std::max(max, s);
  }
  const float sum = Softmax(scores, hi - lo + 1, max);
  std::fill(out, out + hd, 0.0f);
  for (int64_t p = lo; p <= hi; ++p) {
    const float w = scores[p - lo];
    const T* v = values + p * hd;
    for (int64_t i = 0; i < hd; ++i) out[i] += w * Widen(v[i]);
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
}

// fn(std::integral_constant<int, nv>) for nv in 1..N known at run time; false (fn not called)
// outside that range.
template <int N, typename Fn>
bool ForVectors(int64_t nv, Fn&& fn) {
  if constexpr (N == 0) {
    return false;
  } else {
    if (nv == N) {
      fn(std::integral_constant<int, N>());
      return true;
    }
    return ForVectors<N - 1>(nv, std::forward<Fn>(fn));
  }
}

#ifdef SWARM_ATTENTION_X86
using kernel::HorizontalSum;
using kernel::HorizontalSum16;
using kernel::kAll16;
using kernel::Load8;
using kernel::LoadPartial16;
using kernel::LoadPartial8;
using kernel::TailMask;

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA: NV vectors of 8 along the head dimension, the last holding `last` (1..8) elements.

// Vector v of p's NV: whole, or the last one's `last` elements.
template <int NV, typename T>
SWARM_AVX2 inline __m256 LoadVector8(const T* p, int v, int64_t last) {
  return v == NV - 1 && last < 8 ? LoadPartial8(p + 8 * v, last) : Load8(p + 8 * v);
}

template <typename T, int NV>
SWARM_AVX2 void AttendAvx2(const float* q, const T* keys, const T* values, int64_t lo, int64_t hi,
                           int64_t hd, float scale, float* scores, float* out) {
  const int64_t last = hd - 8 * (NV - 1);
  __m256 qv[NV];
  for (int v = 0; v < NV; ++v) qv[v] = LoadVector8<NV>(q, v, last);
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t p = lo; p <= hi; ++p) {
    const T* k = keys + p * hd;
    __m256 acc = _mm256_setzero_ps();
    for (int v = 0; v < NV; ++v) acc = _mm256_fmadd_ps(qv[v], LoadVector8<NV>(k, v, last), acc);
    const float s = HorizontalSum(acc) * scale;
    scores[p - lo] = s;
    max = std::max(max, s);
  }
  const float sum = Softmax(scores, hi - lo + 1, max);
  __m256 o[NV];
  for (int v = 0; v < NV; ++v) o[v] = _mm256_setzero_ps();
  for (int64_t p = lo; p <= hi; ++p) {
    const __m256 w = _mm256_set1_ps(scores[p - lo]);
    const T* vp = values + p * hd;
    for (int v = 0; v < NV; ++v) o[v] = _mm256_fmadd_ps(w, LoadVector8<NV>(vp, v, last), o[v]);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (int v = 0; v < NV; ++v) {
    const __m256 r = _mm256_mul_ps(o[v], inv);
    if (v == NV - 1 && last < 8) {
      _mm256_maskstore_ps(out + 8 * v, TailMask(last), r);
    } else {
      _mm256_storeu_ps(out + 8 * v, r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512: NV vectors of 16, the last one under a mask.

template <typename T, int NV>
SWARM_AVX512 void AttendAvx512(const float* q, const T* keys, const T* values, int64_t lo,
                               int64_t hi, int64_t hd, float scale, float* scores, float* out) {
  const int64_t rem = hd - 16 * (NV - 1);
  const __mmask16 last = rem >= 16 ? kAll16 : static_cast<__mmask16>((1u << rem) - 1);
  __mmask16 masks[NV];
  for (int v = 0; v < NV; ++v) masks[v] = v == NV - 1 ? last : kAll16;
  __m512 qv[NV];
  for (int v = 0; v < NV; ++v) qv[v] = LoadPartial16(q + 16 * v, masks[v]);
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t p = lo; p <= hi; ++p) {
    const T* k = keys + p * hd;
    __m512 acc = _mm512_setzero_ps();
    for (int v = 0; v < NV; ++v) {
      acc = _mm512_fmadd_ps(qv[v], LoadPartial16(k + 16 * v, masks[v]), acc);
    }
    const float s = HorizontalSum16(acc) * scale;
    scores[p - lo] = s;
    max = std::max(max, s);
  }
  const float sum = Softmax(scores, hi - lo + 1, max);
  __m512 o[NV];
  for (int v = 0; v < NV; ++v) o[v] = _mm512_setzero_ps();
  for (int64_t p = lo; p <= hi; ++p) {
    const __m512 w = _mm512_set1_ps(scores[p - lo]);
    const T* vp = values + p * hd;
    for (int v = 0; v < NV; ++v)
      o[v] = _mm512_fmadd_ps(w, LoadPartial16(vp + 16 * v, masks[v]), o[v]);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (int v = 0; v < NV; ++v) {
    _mm512_mask_storeu_ps(out + 16 * v, masks[v], _mm512_maskz_mul_ps(kAll16, o[v], inv));
  }
}

// The most vectors each version keeps a head in (head dimensions up to 256 for AVX-512, 128 for
// AVX2); wider heads take the scalar version.
constexpr int kMaxVectors512 = 16;
constexpr int kMaxVectors256 = 16;
#endif  // SWARM_ATTENTION_X86

template <typename T>
void Attend(MatmulIsa isa, const float* q, const T* keys, const T* values, int64_t lo, int64_t hi,
            int64_t hd, float scale, float* scores, float* out) {
#ifdef SWARM_ATTENTION_X86
  if (isa == MatmulIsa::kAvx512 && ForVectors<kMaxVectors512>((hd + 15) / 16, [&](auto nv) {
        AttendAvx512<T, decltype(nv)::value>(q, keys, values, lo, hi, hd, scale, scores, out);
      })) {
    return;
  }
  if (isa == MatmulIsa::kAvx2 && ForVectors<kMaxVectors256>((hd + 7) / 8, [&](auto nv) {
        AttendAvx2<T, decltype(nv)::value>(q, keys, values, lo, hi, hd, scale, scores, out);
      })) {
    return;
  }
#endif
  (void)isa;
  AttendScalar(q, keys, values, lo, hi, hd, scale, scores, out);
}

}  // namespace

void AttendRow(MatmulIsa isa, KvType type, const float* q, const void* keys, const void* values,
               int64_t lo, int64_t hi, int64_t hd, float scale, float* scores, float* out) {
  if (type == KvType::kBf16) {
    Attend(isa, q, static_cast<const uint16_t*>(keys), static_cast<const uint16_t*>(values), lo, hi,
           hd, scale, scores, out);
  } else {
    Attend(isa, q, static_cast<const float*>(keys), static_cast<const float*>(values), lo, hi, hd,
           scale, scores, out);
  }
}

}  // namespace swarm::model
