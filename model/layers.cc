#include <cmath>
#include <limits>

#include "model/layers_torch.h"

namespace swarm::model {

at::Tensor Linear(const at::Tensor& x, const LinearWeights& w, LinearRows rows) {
  if (rows == LinearRows::kGemvForOneRow && x.dim() == 2 && x.size(0) == 1) {
    at::Tensor y = at::mv(w.weight, x[0]);
    if (w.bias.defined()) y.add_(w.bias);
    return y.unsqueeze(0);
  }
  return w.bias.defined() ? at::linear(x, w.weight, w.bias) : at::linear(x, w.weight);
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
}

at::Tensor Rotary::Apply(const at::Tensor& t, int64_t start_pos) const {
  const int64_t T = t.size(0);
  at::Tensor cos = cos_.narrow(0, start_pos, T).unsqueeze(1);  // [T, 1, hd]
  at::Tensor sin = sin_signed_.narrow(0, start_pos, T).unsqueeze(1);
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

at::Tensor Attention(const AttentionWeights& w, const AttentionShape& shape, const Rotary* rotary,
                     const at::Tensor& x, int64_t start_pos, TorchKvCache& cache, int layer) {
  const int64_t T = x.size(0), H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t G = H / KV;
  auto rotate = [&](const at::Tensor& t) {  // t: [T, heads, hd]
    return rotary != nullptr ? rotary->Apply(t, start_pos) : t;
  };
  at::Tensor q, k, v;
  if (w.qkv.fused()) {
    at::Tensor qkv = Linear(x, w.qkv.parts[0]).view({T, H + 2 * KV, hd});
    at::Tensor qk = rotate(qkv.narrow(1, 0, H + KV));
    q = qk.narrow(1, 0, H).transpose(0, 1);  // [H, T, hd]
    k = qk.narrow(1, H, KV).transpose(0, 1);
    v = qkv.narrow(1, H + KV, KV).transpose(0, 1);
  } else {
    q = rotate(Linear(x, w.qkv.parts[0]).view({T, H, hd})).transpose(0, 1);
    k = rotate(Linear(x, w.qkv.parts[1]).view({T, KV, hd})).transpose(0, 1);
    v = Linear(x, w.qkv.parts[2]).view({T, KV, hd}).transpose(0, 1);
  }
  auto [keys, vals] = cache.Append(layer, k, v, start_pos);  // [KV, L, hd]
  const int64_t total = start_pos + T;

  // Grouped-query attention without repeating K/V: fold the G query heads of a KV head into rows.
  at::Tensor qg = q.reshape({KV, G * T, hd});
  at::Tensor scores = at::matmul(qg, keys.transpose(1, 2)).to(at::kFloat);
  scores = scores.mul_(1.0 / std::sqrt(static_cast<double>(hd))).view({KV, G, T, total});
  // Mask: query at position start_pos+t sees keys j <= start_pos+t (and within the window).
  if (T > 1 || shape.sliding_window > 0) {
    at::Tensor qpos =
        at::arange(start_pos, total, at::TensorOptions().device(x.device())).unsqueeze(1);
    at::Tensor kpos = at::arange(total, at::TensorOptions().device(x.device())).unsqueeze(0);
    at::Tensor masked = kpos > qpos;
    if (shape.sliding_window > 0) {
      masked = masked.logical_or(kpos <= qpos - shape.sliding_window);
    }
    scores.masked_fill_(masked, -std::numeric_limits<float>::infinity());
  }
  at::Tensor probs = at::softmax(scores, -1).to(x.scalar_type()).view({KV, G * T, total});
  at::Tensor out = at::matmul(probs, vals);  // [KV, G*T, hd]
  out = out.view({H, T, hd}).transpose(0, 1).reshape({T, H * hd});
  return Linear(out, w.out);
}

at::Tensor GatedMlp(const GatedMlpWeights& w, int64_t intermediate, const at::Tensor& x) {
  if (w.gate_up.fused()) {
    auto gu = Linear(x, w.gate_up.parts[0]).split(intermediate, -1);
    return Linear(at::silu(gu[0]) * gu[1], w.down);
  }
  at::Tensor g = at::silu(Linear(x, w.gate_up.parts[0]));
  return Linear(g * Linear(x, w.gate_up.parts[1]), w.down);
}

at::Tensor Mlp(const MlpWeights& w, Gelu gelu, const at::Tensor& x) {
  at::Tensor h = Linear(x, w.up);
  h = gelu == Gelu::kErf ? at::gelu(h) : at::gelu(h, "tanh");
  return Linear(h, w.down);
}

}  // namespace swarm::model
