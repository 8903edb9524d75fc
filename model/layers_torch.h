// The building blocks every architecture family wires its layers from, internal to model/:
// Linear (the one place a weight matrix multiplies activations, and the one that chooses between
// the batch-invariant row kernel and gemm; later quantized kernels replace it there), RMSNorm and
// LayerNorm, rotary position embeddings, causal grouped-query attention over the KV cache (with an
// optional sliding window), the SwiGLU MLP and the GELU MLP. The families (model/llama.cc,
// model/gpt2.cc) call them; nothing here knows which family it serves.
//
// Functions of tensors on the weights' device in the compute dtype; they may throw (LibTorch), so
// callers run them inside TorchCall. Const and thread-safe, except that Attention writes the
// cache it is given (one thread per cache).
#ifndef SWARM_MODEL_LAYERS_TORCH_H_
#define SWARM_MODEL_LAYERS_TORCH_H_

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/cpu_matmul.h"
#include "model/kv_cache_torch.h"
#include "model/tensor_torch.h"
#include "model/weights_torch.h"

namespace swarm::model {

// One sequence of a batch as the layers see it: rows [row, row + rows) of the batch's hidden
// states, at positions start_pos.. of the sequence whose keys and values are in `cache`.
struct SequenceRows {
  int64_t row = 0;
  int64_t rows = 0;
  int64_t start_pos = 0;
  TorchKvCache* cache = nullptr;
};

// The rows of one step through the layers (LayerHost::Forward and ForwardBatch build it): the
// sequences in row order, each row's position, and how many leading rows are computed
// batch-invariantly — the rows of sequences of at most kInvariantMaxRows rows (decode tokens,
// short chunks), which the caller places first. Those go through the row kernel
// (model/cpu_matmul.h) in Linear() and row by row through the activations, so each of their rows
// gets the same bits whatever else is in the batch; the rest (prefill chunks) through gemm.
struct BatchRows {
  std::vector<SequenceRows> sequences;
  int64_t invariant_rows = 0;
  at::Tensor positions;  // [rows] int64 on the device: each row's position (rotary).

  // From sequences already in row order (contiguous from row 0); `invariant_rows` as above.
  static BatchRows Make(std::vector<SequenceRows> sequences, int64_t invariant_rows,
                        at::Device device);
};

// x [T, in] · weightᵀ (+ bias) → [T, out]: the one place a weight matrix multiplies activations.
// The first `invariant_rows` rows (clamped to T) are computed batch-invariantly where the weights
// are f32 on the CPU (the row kernel, model/cpu_matmul.h): a row's result does not depend on the
// other rows of x. The other rows, and every row of other dtypes and devices (where batch
// invariance is not claimed), go through LibTorch: one gemm (a single row: gemv, which streams the
// weights once where BLAS gemm packs them). A mixed x (both kinds of rows: decode tokens batched
// with a prefill chunk) therefore makes two products, reading the weights twice; that is the price
// of keeping the decode rows invariant in such a step.
// Quantized weights (w.quant, CPU, f32 activations) take the same split: the invariant rows
// through the quantized row kernel (model/cpu_qmatmul.h, dequantizing in registers), the others
// through gemm over blocks of output columns dequantized to f32 one block at a time (4 MiB of
// scratch, never an f32 copy of the whole matrix).
at::Tensor Linear(const at::Tensor& x, const LinearWeights& w, int64_t invariant_rows);

// Whether LinearRows computes with `w`: weights on the CPU in a type the row kernel reads (f32,
// bf16), row-major or a transposed view of a row-major matrix (GPT-2's Conv1D weights), a bias
// (if any) of the weight's type and contiguous.
bool RowKernelSupports(const LinearWeights& w);

// y[r] = x[r]·weightᵀ (+ bias) for r < rows, in f32 (x row r at x + r * x_stride, y row r at
// y + r * y_stride), through the batch-invariant row kernel (model/cpu_matmul.h) on `team` with
// `isa`. Precondition: RowKernelSupports(w). The one entry every row-kernel product goes through:
// Linear()'s invariant rows and the fused CPU layers (model/cpu_layer_torch.h); weight formats
// the kernel learns later plug in here and in RowKernelSupports. A bf16 bias is widened per call.
void LinearRows(const LinearWeights& w, const float* x, int64_t rows, int64_t x_stride, float* y,
                int64_t y_stride, MatmulIsa isa, ComputeTeam* team);

struct NormWeights {
  at::Tensor weight;  // [hidden]
  at::Tensor bias;    // [hidden], LayerNorm only
};

// The norms work row by row (each row's statistics over its own elements only), so they are
// batch-invariant as they are (tests/model/batch_test.cc checks it).
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
  // t [T, heads, head_dim], row i at position positions[i] ([T] int64 on the device), rotated:
  // t·cos + roll(t, head_dim/2)·sin with the sine's first half negated (= t·cos +
  // rotate_half(t)·sin, the same products; elementwise, so each row's result is its own). Query
  // and key heads fused into one tensor are rotated at once.
  at::Tensor Apply(const at::Tensor& t, const at::Tensor& positions) const;

  // The tables in f32 on the CPU for the fused CPU path (model/cpu_layer_torch.h): head_dim
  // values of position `pos` (< positions), the same numbers Apply multiplies by (widened when
  // the compute dtype is narrower). Null when the tables live on another device.
  const float* CosF32(int64_t pos) const {
    return cos_f32_.defined() ? cos_f32_.data_ptr<float>() + pos * head_dim_ : nullptr;
  }
  const float* SinSignedF32(int64_t pos) const {
    return sin_f32_.defined() ? sin_f32_.data_ptr<float>() + pos * head_dim_ : nullptr;
  }
  int64_t head_dim() const { return head_dim_; }

 private:
  int64_t head_dim_;
  at::Tensor cos_, sin_signed_;   // [positions, head_dim]
  at::Tensor cos_f32_, sin_f32_;  // The same in f32, contiguous, CPU only.
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

// Causal self-attention of the batch x [T, hidden] (rows as `batch` says): q/k/v projections of
// all rows at once, `rotary` applied to queries and keys at each row's position (none when null:
// positions were added to the embeddings), then per sequence: its keys and values appended to
// layer `layer` of its cache, grouped-query attention over its cached positions (within the
// sliding window); the output projection of all rows at once.
at::Tensor Attention(const AttentionWeights& w, const AttentionShape& shape, const Rotary* rotary,
                     const at::Tensor& x, const BatchRows& batch, int layer);

struct GatedMlpWeights {
  SplitLinearWeights gate_up;  // [gate; up], each [intermediate, hidden].
  LinearWeights down;
};

// SwiGLU: down(silu(gate(x)) · up(x)); the first `invariant_rows` rows batch-invariantly (Linear).
at::Tensor GatedMlp(const GatedMlpWeights& w, int64_t intermediate, const at::Tensor& x,
                    int64_t invariant_rows);

enum class Gelu { kErf, kTanh };  // gelu, gelu_new (the tanh approximation).

struct MlpWeights {
  LinearWeights up, down;
};

// down(gelu(up(x))); the first `invariant_rows` rows batch-invariantly (Linear).
at::Tensor Mlp(const MlpWeights& w, Gelu gelu, const at::Tensor& x, int64_t invariant_rows);

}  // namespace swarm::model

#endif  // SWARM_MODEL_LAYERS_TORCH_H_
