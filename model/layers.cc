#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "common/compute_team.h"
#include "common/host_tensor.h"
#include "common/weight_format.h"
#include "model/cpu_qmatmul.h"
#include "model/layers_torch.h"

namespace swarm::model {

namespace {

// Whether Linear() computes x · w through the row kernel: f32 activations (and weights the row
// kernel reads with a bias of f32: bf16 weights keep LibTorch's bf16 path there).
// Quantized weights take the row kernel for any activations (converted to f32).
bool RowKernelApplies(const at::Tensor& x, const LinearWeights& w) {
  if (w.quant.defined()) return x.dim() == 2 && RowKernelSupports(w);
  return x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2 &&
         w.weight.scalar_type() == at::kFloat && RowKernelSupports(w);
}

at::Tensor RowKernelLinear(const at::Tensor& x, const LinearWeights& w) {
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({xc.size(0), w.out()}, xc.options());
  LinearRows(w, xc.data_ptr<float>(), xc.size(0), xc.stride(0), y.data_ptr<float>(), y.stride(0),
             MatmulIsa::kAuto, nullptr);
  return y;
}

// Rows of output columns dequantized to f32 at a time on the gemm path of quantized weights:
// bounded scratch (this many weights, 4 MiB) whatever the matrix.
constexpr int64_t kDequantBlockValues = int64_t{1} << 20;

// Quantized weights, many rows (prefill chunks): per block of output columns, the block's weights
// dequantized to f32 and one gemm, so no f32 copy of the whole matrix exists.
at::Tensor QuantGemmLinear(const at::Tensor& x, const LinearWeights& w) {
  const at::Tensor xc = x.to(at::kFloat).contiguous();
  const QuantMatrixView view = w.quant.View();
  at::Tensor y = at::empty({xc.size(0), view.n}, xc.options());
  const int64_t block = std::max<int64_t>(16, kDequantBlockValues / std::max<int64_t>(1, view.k));
  at::Tensor scratch = at::empty({std::min(block, view.n), view.k}, at::kFloat);
  for (int64_t j0 = 0; j0 < view.n; j0 += block) {
    const int64_t nb = std::min(block, view.n - j0);
    at::Tensor wb = scratch.narrow(0, 0, nb);
    DequantizeRows(view, j0, j0 + nb, wb.data_ptr<float>());
    y.narrow(1, j0, nb).copy_(at::mm(xc, wb.t()));
  }
  if (w.bias.defined()) y.add_(w.bias);
  return y;
}

at::Tensor TorchLinear(const at::Tensor& x, const LinearWeights& w) {
  if (w.quant.defined()) return QuantGemmLinear(x, w);
  if (w.panels()) {
    // x [T, in] against panels [P, in, 64]: [P, T, 64] → [T, P·64] → the first `out` columns.
    const int64_t T = x.size(0);
    at::Tensor y = at::matmul(x, w.weight).permute({1, 0, 2}).reshape({T, -1});
    y = y.narrow(1, 0, w.panel_out);
    return w.bias.defined() ? y + w.bias : y.contiguous();
  }
  if (x.dim() == 2 && x.size(0) == 1) {
    at::Tensor y = at::mv(w.weight, x[0]);
    if (w.bias.defined()) y.add_(w.bias);
    return y.unsqueeze(0);
  }
  return w.bias.defined() ? at::linear(x, w.weight, w.bias) : at::linear(x, w.weight);
}

// f (elementwise) over x's rows: the first `invariant_rows` one row at a time, the rest in one
// call. LibTorch's vectorised elementwise kernels take a scalar path on the tail of a contiguous
// run and at the edges of its threads' chunks, where silu's exp and gelu's tanh round differently
// from the vector path (measured: a few elements per row in 10^3 differ); applied to one row, a
// row's elements take the same paths whatever else is in the batch.
template <typename F>
at::Tensor RowWise(const at::Tensor& x, int64_t invariant_rows, F f) {
  const int64_t T = x.size(0);
  const int64_t a = std::clamp<int64_t>(invariant_rows, 0, T);
  // Only where invariance is claimed (f32 on the CPU); elsewhere one call (one launch on a GPU).
  if (a == 0 || T == 1 || !x.device().is_cpu() || x.scalar_type() != at::kFloat) return f(x);
  std::vector<at::Tensor> parts;
  parts.reserve(a + 1);
  for (int64_t r = 0; r < a; ++r) parts.push_back(f(x.narrow(0, r, 1)));
  if (a < T) parts.push_back(f(x.narrow(0, a, T - a)));
  return at::cat(parts);
}

// A bias as f32 values: `w`'s own (f32) or widened from bf16 into `widened`; null without one.
const float* F32Bias(const LinearWeights& w, std::vector<float>* widened) {
  if (!w.bias.defined()) return nullptr;
  if (w.bias.scalar_type() == at::kFloat) return w.bias.data_ptr<float>();
  const auto* b = static_cast<const uint16_t*>(w.bias.data_ptr());
  widened->resize(w.bias.numel());
  for (int64_t j = 0; j < w.bias.numel(); ++j) (*widened)[j] = Bf16ToFloat(b[j]);
  return widened->data();
}

// LinearRows for quantized weights: QMatmulRows over contiguous ranges of output columns on the
// team (each output's sum is the kernel's own, in its fixed order, whatever the split).
void QuantLinearRows(const LinearWeights& w, const float* x, int64_t rows, int64_t x_stride,
                     float* y, int64_t y_stride, MatmulIsa isa, ComputeTeam* team) {
  const QuantMatrixView view = w.quant.View();
  std::vector<float> widened;
  const float* bias = F32Bias(w, &widened);
  const int64_t row_bytes = QuantRowBytes(view.format, view.k);
  const int64_t groups = QuantGroups(view.k);
  auto run = [&](int64_t j0, int64_t j1) {
    if (j0 >= j1) return;
    QuantMatrixView part = view;
    part.data = view.data + j0 * row_bytes;
    part.scales = view.scales + j0 * groups;
    part.n = j1 - j0;
    QMatmulRows(x, rows, x_stride, part, bias == nullptr ? nullptr : bias + j0, y + j0, y_stride,
                isa);
  };
  constexpr int64_t kColumns = 64;  // Output columns per task, at least.
  constexpr int64_t kMinParallelWork = 1 << 17;
  if (rows * view.n * view.k < kMinParallelWork || view.n < 2 * kColumns) return run(0, view.n);
  std::shared_ptr<ComputeTeam> held;
  if (team == nullptr) {
    held = SharedComputeTeam();
    team = held.get();
  }
  const int64_t blocks = (view.n + kColumns - 1) / kColumns;
  const int64_t tasks = std::min<int64_t>(blocks, 4 * team->size());
  team->Run(tasks, [&](int64_t t, int /*member*/) {
    run(std::min(view.n, blocks * t / tasks * kColumns),
        std::min(view.n, blocks * (t + 1) / tasks * kColumns));
  });
}

}  // namespace

bool RowKernelSupports(const LinearWeights& w) {
  // Quantized weights live on the CPU (the loader dequantizes them elsewhere); a bias as loaded.
  if (w.quant.defined()) {
    return !w.bias.defined() ||
           (w.bias.device().is_cpu() && w.bias.is_contiguous() &&
            (w.bias.scalar_type() == at::kFloat || w.bias.scalar_type() == at::kBFloat16));
  }
  const at::Tensor& W = w.weight;
  const at::ScalarType t = W.scalar_type();
  const bool layout =
      w.panels() ? W.is_contiguous() : W.dim() == 2 && (W.stride(1) == 1 || W.stride(0) == 1);
  return W.device().is_cpu() && layout && (t == at::kFloat || t == at::kBFloat16) &&
         (!w.bias.defined() || (w.bias.scalar_type() == t && w.bias.is_contiguous()));
}

void LinearRows(const LinearWeights& w, const float* x, int64_t rows, int64_t x_stride, float* y,
                int64_t y_stride, MatmulIsa isa, ComputeTeam* team) {
  if (w.quant.defined()) return QuantLinearRows(w, x, rows, x_stride, y, y_stride, isa, team);
  const at::Tensor& W = w.weight;
  MatrixView view;
  view.data = W.data_ptr();
  view.type = W.scalar_type() == at::kBFloat16 ? WeightType::kBf16 : WeightType::kF32;
  view.n = w.out();
  view.k = w.in();
  if (w.panels()) {
    view.panel = kMatmulPanel;
  } else {
    view.row_stride = W.stride(1) == 1 ? W.stride(0) : 1;
    view.col_stride = W.stride(1) == 1 ? 1 : W.stride(1);
  }
  std::vector<float> widened;
  const float* bias = F32Bias(w, &widened);
  MatmulRows(x, rows, x_stride, view, bias, y, y_stride, isa, team);
}

at::Tensor Linear(const at::Tensor& x, const LinearWeights& w, int64_t invariant_rows) {
  const int64_t T = x.size(0);
  // Panel-major weights with f32 activations: every row through the row kernel, whose panel
  // tiles are a gemm at any row count (at::matmul over the panels prefilled 64 tokens of the
  // 12 × d768 model at 306–314 tokens/s, against 817–822 for gemm on row-major weights).
  if (w.panels() && RowKernelApplies(x, w)) return RowKernelLinear(x, w);
  const int64_t a = std::clamp<int64_t>(invariant_rows, 0, T);
  if (a == 0 || !RowKernelApplies(x, w)) return TorchLinear(x, w);
  at::Tensor head = RowKernelLinear(x.narrow(0, 0, a), w);
  if (a == T) return head;
  // A mixed step: the invariant rows through the kernel, the chunk's through gemm (two products).
  return at::cat({head, TorchLinear(x.narrow(0, a, T - a), w)});
}

BatchRows BatchRows::Make(std::vector<SequenceRows> sequences, int64_t invariant_rows,
                          at::Device device) {
  BatchRows b;
  int64_t total = 0;
  for (const SequenceRows& s : sequences) total += s.rows;
  at::Tensor pos = at::empty({total}, at::kLong);
  int64_t* p = pos.data_ptr<int64_t>();
  for (const SequenceRows& s : sequences) {
    for (int64_t i = 0; i < s.rows; ++i) p[s.row + i] = s.start_pos + i;
  }
  b.positions = pos.to(device);
  b.sequences = std::move(sequences);
  b.invariant_rows = invariant_rows;
  return b;
}

at::Tensor RmsNorm(const at::Tensor& x, const NormWeights& w, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return w.weight * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

at::Tensor LayerNorm(const at::Tensor& x, const NormWeights& w, double eps) {
  return at::layer_norm(x, {x.size(-1)}, w.weight, w.bias, eps);
}

Rotary::Rotary(int64_t head_dim, int64_t positions, double theta, at::Device device,
               at::ScalarType dtype)
    : head_dim_(head_dim) {
  at::Tensor inv_freq = 1.0 / at::pow(theta, at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) /
                                                 static_cast<double>(head_dim));
  at::Tensor pos = at::arange(positions, at::kLong).to(at::kFloat);
  at::Tensor freqs = at::outer(pos, inv_freq.to(at::kFloat));
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  cos_ = emb.cos().to(device, dtype);
  at::Tensor sin = freqs.sin();
  sin_signed_ = at::cat({-sin, sin}, -1).to(device, dtype);
  if (device.is_cpu()) {
    cos_f32_ = cos_.to(at::kFloat).contiguous();
    sin_f32_ = sin_signed_.to(at::kFloat).contiguous();
  }
}

at::Tensor Rotary::Apply(const at::Tensor& t, const at::Tensor& positions) const {
  at::Tensor cos = cos_.index_select(0, positions).unsqueeze(1);  // [T, 1, hd]
  at::Tensor sin = sin_signed_.index_select(0, positions).unsqueeze(1);
  return t * cos + at::roll(t, head_dim_ / 2, -1) * sin;
}

AttentionShape AttentionShape::Of(const ModelConfig& config) {
  AttentionShape s;
  s.heads = config.num_heads;
  s.kv_heads = config.num_kv_heads;
  s.head_dim = config.head_dim;
  s.sliding_window = config.sliding_window;
  return s;
}

namespace {

// Attention of one sequence: q [H, T, hd] at positions start_pos.., keys and values [KV, L, hd]
// for positions 0..L-1 (L = start_pos + T) → [T, H·hd]. The same shapes and code whether the
// sequence runs alone or in a batch.
at::Tensor SequenceAttention(const AttentionShape& shape, const at::Tensor& q,
                             const at::Tensor& keys, const at::Tensor& vals, int64_t start_pos) {
  const int64_t T = q.size(1), H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t G = H / KV;
  const int64_t total = start_pos + T;
  // Grouped-query attention without repeating K/V: fold the G query heads of a KV head into rows.
  at::Tensor qg = q.reshape({KV, G * T, hd});
  at::Tensor scores = at::matmul(qg, keys.transpose(1, 2)).to(at::kFloat);
  scores = scores.mul_(1.0 / std::sqrt(static_cast<double>(hd))).view({KV, G, T, total});
  // Mask: query at position start_pos+t sees keys j <= start_pos+t (and within the window).
  if (T > 1 || shape.sliding_window > 0) {
    at::Tensor qpos =
        at::arange(start_pos, total, at::TensorOptions().device(q.device())).unsqueeze(1);
    at::Tensor kpos = at::arange(total, at::TensorOptions().device(q.device())).unsqueeze(0);
    at::Tensor masked = kpos > qpos;
    if (shape.sliding_window > 0) {
      masked = masked.logical_or(kpos <= qpos - shape.sliding_window);
    }
    scores.masked_fill_(masked, -std::numeric_limits<float>::infinity());
  }
  at::Tensor probs = at::softmax(scores, -1).to(q.scalar_type()).view({KV, G * T, total});
  at::Tensor out = at::matmul(probs, vals);  // [KV, G*T, hd]
  return out.view({H, T, hd}).transpose(0, 1).reshape({T, H * hd});
}

}  // namespace

at::Tensor Attention(const AttentionWeights& w, const AttentionShape& shape, const Rotary* rotary,
                     const at::Tensor& x, const BatchRows& batch, int layer) {
  const int64_t T = x.size(0), H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t inv = batch.invariant_rows;
  auto rotate = [&](const at::Tensor& t) {  // t: [T, heads, hd]
    return rotary != nullptr ? rotary->Apply(t, batch.positions) : t;
  };
  at::Tensor q, k, v;  // [T, heads, hd]
  if (w.qkv.fused()) {
    at::Tensor qkv = Linear(x, w.qkv.parts[0], inv).view({T, H + 2 * KV, hd});
    at::Tensor qk = rotate(qkv.narrow(1, 0, H + KV));
    q = qk.narrow(1, 0, H);
    k = qk.narrow(1, H, KV);
    v = qkv.narrow(1, H + KV, KV);
  } else {
    q = rotate(Linear(x, w.qkv.parts[0], inv).view({T, H, hd}));
    k = rotate(Linear(x, w.qkv.parts[1], inv).view({T, KV, hd}));
    v = Linear(x, w.qkv.parts[2], inv).view({T, KV, hd});
  }
  at::Tensor out;
  if (batch.sequences.size() == 1) {
    const SequenceRows& s = batch.sequences[0];
    auto [keys, vals] = s.cache->Append(layer, k.transpose(0, 1), v.transpose(0, 1), s.start_pos);
    out = SequenceAttention(shape, q.transpose(0, 1), keys, vals, s.start_pos);
  } else {
    out = at::empty({T, H * hd}, x.options());
    for (const SequenceRows& s : batch.sequences) {
      auto rows = [&](const at::Tensor& t) { return t.narrow(0, s.row, s.rows).transpose(0, 1); };
      auto [keys, vals] = s.cache->Append(layer, rows(k), rows(v), s.start_pos);  // [KV, L, hd]
      out.narrow(0, s.row, s.rows)
          .copy_(SequenceAttention(shape, rows(q), keys, vals, s.start_pos));
    }
  }
  return Linear(out, w.out, inv);
}

at::Tensor GatedMlp(const GatedMlpWeights& w, int64_t intermediate, const at::Tensor& x,
                    int64_t invariant_rows) {
  at::Tensor act;
  if (w.gate_up.fused()) {
    act = RowWise(Linear(x, w.gate_up.parts[0], invariant_rows), invariant_rows,
                  [&](const at::Tensor& gu) {
                    return at::silu(gu.narrow(-1, 0, intermediate)) *
                           gu.narrow(-1, intermediate, intermediate);
                  });
  } else {
    at::Tensor g = RowWise(Linear(x, w.gate_up.parts[0], invariant_rows), invariant_rows,
                           [](const at::Tensor& t) { return at::silu(t); });
    act = g * Linear(x, w.gate_up.parts[1], invariant_rows);
  }
  return Linear(act, w.down, invariant_rows);
}

at::Tensor Mlp(const MlpWeights& w, Gelu gelu, const at::Tensor& x, int64_t invariant_rows) {
  at::Tensor h = RowWise(Linear(x, w.up, invariant_rows), invariant_rows, [&](const at::Tensor& t) {
    return gelu == Gelu::kErf ? at::gelu(t) : at::gelu(t, "tanh");
  });
  return Linear(h, w.down, invariant_rows);
}

}  // namespace swarm::model
