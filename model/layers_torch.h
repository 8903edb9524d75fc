// The building blocks every architecture family wires its layers from, internal to model/:
// Linear (the one place a weight matrix multiplies activations; later quantized kernels replace
// it there), RMSNorm and LayerNorm, rotary position embeddings, causal grouped-query attention
// over the KV cache (with an optional sliding window), the SwiGLU MLP and the GELU MLP. The
// families (model/llama.cc, model/gpt2.cc) call them; nothing here knows which family it serves.
//
// Functions of tensors on the weights' device in the compute dtype; they may throw (LibTorch), so
// callers run them inside TorchCall. Const and thread-safe, except that Attention writes the
// cache it is given (one thread per cache).
#ifndef SWARM_MODEL_LAYERS_TORCH_H_
#define SWARM_MODEL_LAYERS_TORCH_H_

#include <cstdint>

#include "model/config.h"
#include "model/kv_cache_torch.h"
#include "model/tensor_torch.h"
#include "model/weights_torch.h"

namespace swarm::model {

// How Linear() treats a single row of x.
enum class LinearRows {
  // A one-row x (a decode step) is a matrix-vector product: through gemm, BLAS packs the whole
  // weight matrix on every call, reading it twice; gemv streams it once.
  kGemvForOneRow,
  // Always gemm (the LM head, whose logits the golden tests pin to these exact products).
  kGemm,
};

// x [T, in] · weightᵀ (+ bias) → [T, out].
at::Tensor Linear(const at::Tensor& x, const LinearWeights& w,
                  LinearRows rows = LinearRows::kGemvForOneRow);

struct NormWeights {
  at::Tensor weight;  // [hidden]
  at::Tensor bias;    // [hidden], LayerNorm only
};

// RMSNorm as Hugging Face computes it: in float32, then back to x's dtype, times the weight.
at::Tensor RmsNorm(const at::Tensor& x, const NormWeights& w, double eps);
// LayerNorm over the last dimension, with weight and bias.
at::Tensor LayerNorm(const at::Tensor& x, const NormWeights& w, double eps);

// Rotary position embedding tables for `positions` positions, as transformers' default rope
// computes them (inverse frequencies and angles in float32), stored in the compute dtype.
class Rotary {
 public:
  Rotary(int64_t head_dim, int64_t positions, double theta, at::Device device,
         at::ScalarType dtype);
  // t [T, heads, head_dim] at positions start_pos.. rotated: t·cos + roll(t, head_dim/2)·sin with
  // the sine's first half negated (= t·cos + rotate_half(t)·sin, the same products). Query and key
  // heads fused into one tensor are rotated at once.
  at::Tensor Apply(const at::Tensor& t, int64_t start_pos) const;

 private:
  int64_t head_dim_;
  at::Tensor cos_, sin_signed_;  // [positions, head_dim]
};

struct AttentionShape {
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t sliding_window = 0;  // 0 = full causal attention.

  static AttentionShape Of(const ModelConfig& config);
};

struct AttentionWeights {
  SplitLinearWeights qkv;  // [q; k; v] projections.
  LinearWeights out;       // The output projection.
};

// Causal self-attention of x [T, hidden] at positions start_pos..: q/k/v projections, `rotary`
// applied to queries and keys (none when null: positions were added to the embeddings), keys and
// values appended to layer `layer` of `cache`, grouped-query attention over every cached position
// (within the sliding window), the output projection.
at::Tensor Attention(const AttentionWeights& w, const AttentionShape& shape, const Rotary* rotary,
                     const at::Tensor& x, int64_t start_pos, TorchKvCache& cache, int layer);

struct GatedMlpWeights {
  SplitLinearWeights gate_up;  // [gate; up], each [intermediate, hidden].
  LinearWeights down;
};

// SwiGLU: down(silu(gate(x)) · up(x)).
at::Tensor GatedMlp(const GatedMlpWeights& w, int64_t intermediate, const at::Tensor& x);

enum class Gelu { kErf, kTanh };  // gelu, gelu_new (the tanh approximation).

struct MlpWeights {
  LinearWeights up, down;
};

// down(gelu(up(x))).
at::Tensor Mlp(const MlpWeights& w, Gelu gelu, const at::Tensor& x);

}  // namespace swarm::model

#endif  // SWARM_MODEL_LAYERS_TORCH_H_
