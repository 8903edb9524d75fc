// Attention of one query row and one head over a KV head's cached keys and values, for the fused
// CPU path (model/cpu_layer_torch.h): scores q·k_p·scale for the positions lo..hi, their softmax
// in f32, and the weighted sum of the values. Torch-free, internal to model/.
//
// Batch-invariant: the operations for (q, keys, values, lo, hi, hd) depend only on those and on
// the ISA — never on which other rows or heads are computed, or on which thread — so a row gets
// the same bits alone or in any batch (RowsAttention runs one call per (row, head) task). The
// three implementations, chosen like the row kernel's (model/cpu_matmul.h), agree to rounding,
// not bit for bit:
//   * scalar: each score a sum in 8 interleaved lanes (lane l the products of i ≡ l mod 8, in
//     increasing i), the lanes summed pairwise; the values accumulated in increasing position;
//   * AVX2+FMA: the same lanes, one FMA each, and the AVX2 horizontal sum;
//   * AVX-512: 16 lanes, summed in halves and then as AVX2;
// the softmax's exponentials (std::exp) and sum, in increasing position, are the same in all.
#ifndef SWARM_MODEL_CPU_ATTENTION_H_
#define SWARM_MODEL_CPU_ATTENTION_H_

#include <cstdint>

#include "model/cpu_matmul.h"

namespace swarm::model {

// The cache's element type for keys and values.
enum class KvType {
  kF32,
  kBf16,  // uint16_t storage, widened exactly.
};

// out[0..hd) = Σ_p softmax_p(q·k_p·scale) v_p for p in [lo, hi], where k_p = keys + p·hd and
// v_p = values + p·hd (elements of `type`). `scores` has room for hi − lo + 1 floats. `isa` is
// resolved (not kAuto).
void AttendRow(MatmulIsa isa, KvType type, const float* q, const void* keys, const void* values,
               int64_t lo, int64_t hi, int64_t hd, float scale, float* scores, float* out);

}  // namespace swarm::model

#endif  // SWARM_MODEL_CPU_ATTENTION_H_
