// The fused CPU path for decode and small batches, internal to model/: a layer's rows of f32
// hidden states through RMSNorm/LayerNorm, the q/k/v product (fused or in parts, with biases),
// rotary (Llama, Mistral, Qwen2; none for GPT-2, whose learned positions are in the embeddings),
// attention over the KV cache (grouped-query, sliding window, f32 accumulation, each sequence of
// the step at its own position), the output product, and the SwiGLU or GELU MLP — raw loops over
// f32 buffers and the row kernel, without LibTorch's per-operator dispatch (about 55 operators a
// layer on the LibTorch path). The families (model/llama.cc, model/gpt2.cc) compose a layer from
// these; LayerHost (model/layer_host.cc) runs the sequences of at most kInvariantMaxRows rows of
// a step through them, longer chunks (prefill) through LibTorch.
//
// Every weight product goes through LinearRows (model/layers_torch.h), the one entry to the row
// kernel. Batch-invariant: every row's result is computed by the same operations whatever else is
// in the step (products over output columns split between threads; attention one (row, head) per
// task; norms and activations row by row), so a sequence gets the same bits alone or batched.
//
// Threading: one RowStep per call, used by the calling thread (which fans work out to the step's
// ComputeTeam); the weights are shared and read-only. Functions may throw (LibTorch, when a KV
// cache grows): LayerHost runs them inside TorchCall.
#ifndef SWARM_MODEL_CPU_LAYER_TORCH_H_
#define SWARM_MODEL_CPU_LAYER_TORCH_H_

#include <cstdint>
#include <vector>

#include "common/compute_team.h"
#include "model/cpu_matmul.h"
#include "model/kv_cache_torch.h"
#include "model/layers_torch.h"
#include "model/weights_torch.h"

namespace swarm::model {

// One sequence of a fused step: rows [row, row + rows) of the step, at positions start_pos.. of
// the sequence whose keys and values are in `cache` (its length at every layer is start_pos).
struct RowSequence {
  int64_t row = 0;
  int64_t rows = 0;
  int64_t start_pos = 0;
  TorchKvCache* cache = nullptr;
};

// What the layers of one fused step share: its sequences, the team and ISA the products use, the
// dtype the KV cache stores (the host's compute dtype), and scratch buffers reused from layer to
// layer.
class RowStep {
 public:
  RowStep(std::vector<RowSequence> sequences, ComputeTeam* team, MatmulIsa isa,
          at::ScalarType kv_dtype);

  int64_t rows() const { return rows_; }
  const std::vector<RowSequence>& sequences() const { return sequences_; }
  ComputeTeam* team() const { return team_; }
  MatmulIsa isa() const { return isa_; }
  at::ScalarType kv_dtype() const { return kv_dtype_; }
  // What each scratch buffer holds (one buffer per use, so that pointers into different ones
  // stay valid together).
  enum Slot { kNorm, kQkv, kAttention, kScores, kOut, kMlp, kActivation, kSlots };
  // Buffer `slot` with room for at least `floats` floats; valid until the next call for the same
  // slot.
  float* Scratch(Slot slot, int64_t floats);

 private:
  std::vector<RowSequence> sequences_;
  int64_t rows_ = 0;
  ComputeTeam* team_;
  MatmulIsa isa_;
  at::ScalarType kv_dtype_;
  std::vector<float> scratch_[kSlots];
};

// The weights of a norm in f32 (copies, for the fused path when the compute dtype is narrower).
struct RowNorm {
  std::vector<float> weight, bias;  // bias empty: RMSNorm.
  static RowNorm From(const NormWeights& w);
};

// y = RMSNorm(x) row by row as Hugging Face computes it in f32: x·rsqrt(mean(x²) + eps)·weight.
void RowsRmsNorm(const float* x, int64_t rows, int64_t d, const RowNorm& w, double eps, float* y);
// y = LayerNorm(x) row by row: (x − mean)·rsqrt(var + eps)·weight + bias (biased variance).
void RowsLayerNorm(const float* x, int64_t rows, int64_t d, const RowNorm& w, double eps, float* y);

// Whether every product of these weights goes through LinearRows.
bool RowsSupported(const AttentionWeights& w);
bool RowsSupported(const GatedMlpWeights& w);
bool RowsSupported(const MlpWeights& w);

// x += Attention(xn): q/k/v of the step's rows, `rotary` at each row's position (null: none),
// keys and values written to layer `layer` of each sequence's cache, attention per (row, head)
// over that sequence's positions (within the sliding window), the output product. x, xn:
// step.rows() × hidden f32 rows.
void RowsAttention(const AttentionWeights& w, const AttentionShape& shape, const Rotary* rotary,
                   const float* xn, float* x, RowStep& step, int layer);
// x += down(silu(gate(xn))·up(xn)).
void RowsGatedMlp(const GatedMlpWeights& w, int64_t intermediate, const float* xn, float* x,
                  RowStep& step);
// x += down(gelu(up(xn))).
void RowsMlp(const MlpWeights& w, Gelu gelu, const float* xn, float* x, RowStep& step);

}  // namespace swarm::model

#endif  // SWARM_MODEL_CPU_LAYER_TORCH_H_
