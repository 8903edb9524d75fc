// The fused CPU layer routines (model/cpu_layer_torch.h). Work that is not a weight product (norms,
// rotary, activations, the residual adds) is a few loops over the step's rows on the calling
// thread; attention fans (row, head) tasks out to the team when there are enough of them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/host_tensor.h"
#include "model/cpu_attention.h"
#include "model/cpu_layer_torch.h"

namespace swarm::model {
namespace {

// Attention with fewer multiply-adds than this runs on the calling thread.
constexpr int64_t kMinParallelAttention = 1 << 15;

// Elementwise work (an MLP's activation) of fewer elements than this runs on the calling thread.
// Above it on the step's team: at 32 rows of a d768 model the SwiGLU activation, serial, was
// 32 x 2048 exponentials a layer while the other members spun.
constexpr int64_t kMinParallelElementwise = 2048;

// fn(begin, end) over [0, n) in contiguous ranges, a few per member of `team` (or one range on the
// caller). Each element must be computed on its own, so that the split changes no result.
template <typename Fn>
void ForRanges(ComputeTeam* team, int64_t n, Fn&& fn) {
  if (team == nullptr || team->size() < 2 || n < kMinParallelElementwise) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t tasks = std::min<int64_t>(4 * team->size(), n / (kMinParallelElementwise / 2));
  team->Run(tasks, [&](int64_t t, int /*member*/) { fn(n * t / tasks, n * (t + 1) / tasks); });
}

void AddInto(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

// The parts of a split product side by side in y (row stride `width`).
void SplitRows(const SplitLinearWeights& w, const float* x, int64_t rows, int64_t x_stride,
               float* y, int64_t width, const RowStep& step) {
  int64_t col = 0;
  for (const LinearWeights& part : w.parts) {
    LinearRows(part, x, rows, x_stride, y + col, width, step.isa(), step.team());
    col += part.out();
  }
}

}  // namespace

RowStep::RowStep(std::vector<RowSequence> sequences, ComputeTeam* team, MatmulIsa isa,
                 at::ScalarType kv_dtype)
    : sequences_(std::move(sequences)), team_(team), isa_(isa), kv_dtype_(kv_dtype) {
  for (const RowSequence& s : sequences_) rows_ += s.rows;
}

float* RowStep::Scratch(Slot slot, int64_t floats) {
  std::vector<float>& b = scratch_[slot];
  if (static_cast<int64_t>(b.size()) < floats) b.resize(floats);
  return b.data();
}

RowNorm RowNorm::From(const NormWeights& w) {
  auto copy = [](const at::Tensor& t) {
    std::vector<float> v;
    if (!t.defined()) return v;
    at::Tensor f = t.to(at::kCPU, at::kFloat).contiguous();
    v.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
    return v;
  };
  return {copy(w.weight), copy(w.bias)};
}

void RowsRmsNorm(const float* x, int64_t rows, int64_t d, const RowNorm& w, double eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = w.weight[i] * (xr[i] * inv);
  }
}

void RowsLayerNorm(const float* x, int64_t rows, int64_t d, const RowNorm& w, double eps,
                   float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double sum = 0;
    for (int64_t i = 0; i < d; ++i) sum += xr[i];
    const double mean = sum / d;
    double var = 0;
    for (int64_t i = 0; i < d; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const double inv = 1.0 / std::sqrt(var / d + eps);
    for (int64_t i = 0; i < d; ++i) {
      const float n = static_cast<float>((xr[i] - mean) * inv);
      yr[i] = n * w.weight[i] + (w.bias.empty() ? 0.0f : w.bias[i]);
    }
  }
}

bool RowsSupported(const AttentionWeights& w) {
  for (const LinearWeights& p : w.qkv.parts) {
    if (!RowKernelSupports(p)) return false;
  }
  return !w.qkv.parts.empty() && RowKernelSupports(w.out);
}

bool RowsSupported(const GatedMlpWeights& w) {
  for (const LinearWeights& p : w.gate_up.parts) {
    if (!RowKernelSupports(p)) return false;
  }
  return !w.gate_up.parts.empty() && RowKernelSupports(w.down);
}

bool RowsSupported(const MlpWeights& w) {
  return RowKernelSupports(w.up) && RowKernelSupports(w.down);
}

void RowsAttention(const AttentionWeights& w, const AttentionShape& shape, const Rotary* rotary,
                   const float* xn, float* x, RowStep& step, int layer) {
  const int64_t T = step.rows(), H = shape.heads, KV = shape.kv_heads, hd = shape.head_dim;
  const int64_t G = H / KV, qd = H * hd, kvd = KV * hd, width = qd + 2 * kvd;
  const int64_t d = w.qkv.parts[0].in();
  float* qkv = step.Scratch(RowStep::kQkv, T * width);
  SplitRows(w.qkv, xn, T, d, qkv, width, step);

  // Rotary on the query and key heads at each row's position: t·cos + roll(t, hd/2)·sin_signed.
  std::vector<TorchKvCache::Storage> kv(step.sequences().size());
  std::vector<float> head(hd);
  const int64_t half = hd / 2;
  int64_t max_len = 0;
  for (size_t si = 0; si < step.sequences().size(); ++si) {
    const RowSequence& s = step.sequences()[si];
    for (int64_t t = 0; t < s.rows; ++t) {
      float* row = qkv + (s.row + t) * width;
      if (rotary != nullptr) {
        const float* cos = rotary->CosF32(s.start_pos + t);
        const float* sin = rotary->SinSignedF32(s.start_pos + t);
        for (int64_t h = 0; h < H + KV; ++h) {
          float* v = row + h * hd;
          std::copy(v, v + hd, head.begin());
          for (int64_t i = 0; i < hd; ++i) v[i] = head[i] * cos[i] + head[(i + half) % hd] * sin[i];
        }
      }
    }
    // Keys and values into the cache, in its dtype.
    kv[si] = s.cache->Reserve(layer, KV, hd, step.kv_dtype(), s.start_pos, s.rows);
    const TorchKvCache::Storage& st = kv[si];
    for (int64_t t = 0; t < s.rows; ++t) {
      const float* row = qkv + (s.row + t) * width;
      for (int64_t g = 0; g < KV; ++g) {
        const float* k = row + qd + g * hd;
        const float* v = row + qd + kvd + g * hd;
        const int64_t at = (g * st.capacity + s.start_pos + t) * hd;
        if (st.dtype == at::kBFloat16) {
          auto* kd = static_cast<uint16_t*>(st.k) + at;
          auto* vd = static_cast<uint16_t*>(st.v) + at;
          for (int64_t i = 0; i < hd; ++i) {
            kd[i] = FloatToBf16(k[i]);
            vd[i] = FloatToBf16(v[i]);
          }
        } else {
          std::copy(k, k + hd, static_cast<float*>(st.k) + at);
          std::copy(v, v + hd, static_cast<float*>(st.v) + at);
        }
      }
    }
    max_len = std::max(max_len, s.start_pos + s.rows);
  }

  // One task per (row, query head), in row order; each computed whole by one thread.
  const int64_t tasks = T * H;
  std::vector<int> seq_of(T);
  for (size_t si = 0; si < step.sequences().size(); ++si) {
    const RowSequence& s = step.sequences()[si];
    for (int64_t t = 0; t < s.rows; ++t) seq_of[s.row + t] = static_cast<int>(si);
  }
  float* out = step.Scratch(RowStep::kAttention, T * qd);
  ComputeTeam* team = step.team();
  int64_t work = 0;
  for (const RowSequence& s : step.sequences()) work += s.rows * (s.start_pos + s.rows);
  work *= H * hd * 2;
  const bool parallel = work >= kMinParallelAttention && team != nullptr;
  const int members = parallel ? team->size() : 1;
  float* scores_all = step.Scratch(RowStep::kScores, members * max_len);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  // Task `task` covers (row, head) pairs [task·per, (task+1)·per) — a few tasks per member.
  const int64_t chunks = parallel ? std::min<int64_t>(tasks, 4 * members) : 1;
  auto run = [&](int64_t chunk, int member) {
    float* scores = scores_all + member * max_len;
    for (int64_t task = tasks * chunk / chunks; task < tasks * (chunk + 1) / chunks; ++task) {
      const int64_t r = task / H, h = task % H, g = h / G;
      const RowSequence& s = step.sequences()[seq_of[r]];
      const TorchKvCache::Storage& st = kv[seq_of[r]];
      const int64_t pos = s.start_pos + (r - s.row);
      const int64_t lo =
          shape.sliding_window > 0 ? std::max<int64_t>(0, pos - shape.sliding_window + 1) : 0;
      const float* q = qkv + r * width + h * hd;
      float* o = out + r * qd + h * hd;
      const int64_t off = g * st.capacity * hd;
      if (st.dtype == at::kBFloat16) {
        AttendRow(step.isa(), KvType::kBf16, q, static_cast<const uint16_t*>(st.k) + off,
                  static_cast<const uint16_t*>(st.v) + off, lo, pos, hd, scale, scores, o);
      } else {
        AttendRow(step.isa(), KvType::kF32, q, static_cast<const float*>(st.k) + off,
                  static_cast<const float*>(st.v) + off, lo, pos, hd, scale, scores, o);
      }
    }
  };
  if (parallel) {
    team->Run(chunks, run);
  } else {
    run(0, 0);
  }

  float* y = step.Scratch(RowStep::kOut, T * d);
  LinearRows(w.out, out, T, qd, y, d, step.isa(), step.team());
  AddInto(x, y, T * d);
}

void RowsGatedMlp(const GatedMlpWeights& w, int64_t intermediate, const float* xn, float* x,
                  RowStep& step) {
  const int64_t T = step.rows(), I = intermediate, d = w.gate_up.parts[0].in();
  float* gu = step.Scratch(RowStep::kMlp, T * 2 * I);
  SplitRows(w.gate_up, xn, T, d, gu, 2 * I, step);
  float* act = step.Scratch(RowStep::kActivation, T * I);
  // act[r][i] = silu(gate[r][i]) · up[r][i], gu's rows being gate | up.
  ForRanges(step.team(), T * I, [&](int64_t begin, int64_t end) {
    int64_t r = begin / I, i = begin % I;
    for (int64_t e = begin; e < end; ++e) {
      const float g = gu[r * 2 * I + i], u = gu[r * 2 * I + I + i];
      act[e] = g / (1.0f + std::exp(-g)) * u;
      if (++i == I) {
        i = 0;
        ++r;
      }
    }
  });
  float* y = step.Scratch(RowStep::kOut, T * d);
  LinearRows(w.down, act, T, I, y, d, step.isa(), step.team());
  AddInto(x, y, T * d);
}

void RowsMlp(const MlpWeights& w, Gelu gelu, const float* xn, float* x, RowStep& step) {
  const int64_t T = step.rows(), I = w.up.out(), d = w.up.in();
  float* h = step.Scratch(RowStep::kMlp, T * I);
  LinearRows(w.up, xn, T, d, h, I, step.isa(), step.team());
  const float c = static_cast<float>(std::sqrt(2.0 / M_PI));
  ForRanges(step.team(), T * I, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = h[i];
      h[i] = gelu == Gelu::kErf ? 0.5f * v * (1.0f + std::erf(v * static_cast<float>(M_SQRT1_2)))
                                : 0.5f * v * (1.0f + std::tanh(c * (v + 0.044715f * v * v * v)));
    }
  });
  float* y = step.Scratch(RowStep::kOut, T * d);
  LinearRows(w.down, h, T, I, y, d, step.isa(), step.team());
  AddInto(x, y, T * d);
}

}  // namespace swarm::model
