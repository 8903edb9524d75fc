// Transformer math for the four supported families, on LibTorch. This file is the only place in
// the project that knows how a layer computes.
#include "model/model.h"

#include <sys/mman.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace swarm::model {
namespace {

std::string ShapeStr(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

torch::ScalarType ToTorch(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return torch::kFloat32;
    case DType::kF16:
      return torch::kFloat16;
    case DType::kBF16:
      return torch::kBFloat16;
  }
  return torch::kFloat32;
}

absl::StatusOr<torch::ScalarType> ToTorch(StDType dtype) {
  switch (dtype) {
    case StDType::kF32:
      return torch::kFloat32;
    case StDType::kF16:
      return torch::kFloat16;
    case StDType::kBF16:
      return torch::kBFloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", StDTypeName(dtype), " is not a floating weight type"));
  }
}

absl::StatusOr<torch::Device> ParseDevice(const std::string& device) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (absl::StartsWith(device, "cuda")) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", device, " requested but CUDA is not available in this build"));
    }
    try {
      torch::Device d(device);
      if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count())) {
        return absl::InvalidArgumentError(absl::StrCat("device ", device, " does not exist (",
                                                       torch::cuda::device_count(), " GPUs)"));
      }
      return d;
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", device, "'"));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad device '", device, "' (expected cpu or cuda:N)"));
}

// Hidden states in: a HostTensor viewed (not copied) as a torch tensor.
torch::Tensor FromHost(const HostTensor& h) {
  return torch::from_blob(const_cast<char*>(h.data.data()), h.shape,
                          torch::TensorOptions().dtype(ToTorch(h.dtype)));
}

HostTensor ToHost(const torch::Tensor& t, DType dtype) {
  torch::Tensor c = t.to(torch::kCPU, ToTorch(dtype)).contiguous();
  HostTensor out;
  out.dtype = dtype;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.data.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}

// Runs `fn`, turning any LibTorch exception into an Internal status.
template <typename Fn>
auto TorchCall(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Copies a tensor out of the checkpoint mapping into anonymous memory backed by transparent huge
// pages (decode reads every weight once per token; 2 MiB pages take the TLB misses of 4 KiB
// file pages off that path), then drops the file pages from this process's resident set.
torch::Tensor View(const TensorView& view) {
  return torch::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                          torch::TensorOptions().dtype(*ToTorch(view.dtype)));
}

torch::Tensor CopyToHugePages(const std::vector<TensorView>& views) {
  size_t nbytes = 0;
  std::vector<int64_t> shape = views[0].shape;
  shape[0] = 0;
  for (const TensorView& v : views) {
    nbytes += v.nbytes;
    shape[0] += v.shape[0];
  }
  // Rounded to base pages only: THP backs every aligned 2 MiB stretch inside the region (and
  // adjacent regions merge), so small tensors waste at most a page.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = (nbytes + page - 1) & ~(page - 1);
  void* p = len == 0
                ? MAP_FAILED
                : mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::vector<torch::Tensor> parts;
    for (const TensorView& v : views) parts.push_back(View(v));
    return torch::cat(parts, 0);
  }
  madvise(p, len, MADV_HUGEPAGE);
  char* dst = static_cast<char*>(p);
  for (const TensorView& v : views) {
    std::memcpy(dst, v.data, v.nbytes);
    dst += v.nbytes;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(v.data) + page - 1) & ~(page - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(v.data) + v.nbytes) & ~(page - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
  return torch::from_blob(
      p, shape, [len](void* q) { munmap(q, len); },
      torch::TensorOptions().dtype(*ToTorch(views[0].dtype)));
}

// Weight loading with validation against the config: the shape must match exactly.
class WeightLoader {
 public:
  WeightLoader(const Checkpoint& ckpt, torch::Device device, torch::ScalarType dtype, bool copy)
      : ckpt_(ckpt), device_(device), dtype_(dtype), copy_(copy) {}

  // Zero copy: tensors stay views of the checkpoint mapping.
  bool zero_copy() const { return device_.is_cpu() && !copy_; }

  absl::StatusOr<torch::Tensor> Load(absl::string_view logical, std::vector<int64_t> shape) {
    return LoadConcat({{std::string(logical), std::move(shape)}});
  }

  // Loads tensors with the same trailing dimensions concatenated along dim 0 into one (fewer,
  // larger matmuls on the decode path). In zero-copy mode only a single part is allowed.
  absl::StatusOr<torch::Tensor> LoadConcat(
      const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts) {
    std::vector<TensorView> views;
    for (const auto& [logical, shape] : parts) {
      ASSIGN_OR_RETURN(std::string name, ckpt_.Resolve(logical));
      ASSIGN_OR_RETURN(TensorView view, ckpt_.store().Get(name));
      if (view.shape != shape) {
        return absl::InvalidArgumentError(absl::StrCat("loading ", view.file, ": tensor '", name,
                                                       "' has shape ", ShapeStr(view.shape),
                                                       ", config says ", ShapeStr(shape)));
      }
      auto src_type = ToTorch(view.dtype);
      if (!src_type.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("loading ", view.file, ": tensor '", name,
                                                       "': ", src_type.status().message()));
      }
      views.push_back(std::move(view));
    }
    return TorchCall(
        absl::StrCat("loading tensor '", views[0].name, "'"),
        [&]() -> absl::StatusOr<torch::Tensor> {
          const bool same_type = *ToTorch(views[0].dtype) == dtype_ &&
                                 std::all_of(views.begin(), views.end(), [&](const TensorView& v) {
                                   return v.dtype == views[0].dtype;
                                 });
          if (device_.is_cpu() && same_type) {
            if (!copy_ && views.size() == 1) return View(views[0]);
            return CopyToHugePages(views);
          }
          std::vector<torch::Tensor> converted;
          for (const TensorView& v : views) {
            converted.push_back(View(v).to(device_, dtype_));
          }
          return converted.size() == 1 ? converted[0].contiguous() : torch::cat(converted, 0);
        });
  }

 private:
  const Checkpoint& ckpt_;
  torch::Device device_;
  torch::ScalarType dtype_;
  bool copy_;
};

struct LayerWeights {
  // Llama family: norms are weights only. GPT-2: norms have biases, projections are stored
  // [out, in] here (Conv1D weights transposed as views).
  torch::Tensor norm1_w, norm1_b, norm2_w, norm2_b;
  torch::Tensor q_w, k_w, v_w, q_b, k_b, v_b;  // Llama family, zero-copy mode.
  torch::Tensor qkv_w, qkv_b;                  // Fused [q;k;v] (GPT-2 c_attn, or copied Llama).
  torch::Tensor gate_up_w, gate_up_b;          // Fused [gate;up] (copied Llama).
  torch::Tensor o_w, o_b;
  torch::Tensor gate_w, up_w, down_w, gate_b, up_b, down_b;
  int64_t bytes = 0;
};

std::string LayerName(const ModelConfig& c, int layer, absl::string_view rest) {
  if (c.IsGpt2()) return absl::StrCat("h.", layer, ".", rest);
  return absl::StrCat("model.layers.", layer, ".", rest);
}

absl::StatusOr<LayerWeights> LoadLayer(const ModelConfig& c, int layer, WeightLoader& w) {
  LayerWeights lw;
  const int64_t d = c.hidden_size, hd = c.head_dim, I = c.intermediate_size;
  auto name = [&](absl::string_view rest) { return LayerName(c, layer, rest); };
  if (c.IsGpt2()) {
    ASSIGN_OR_RETURN(lw.norm1_w, w.Load(name("ln_1.weight"), {d}));
    ASSIGN_OR_RETURN(lw.norm1_b, w.Load(name("ln_1.bias"), {d}));
    ASSIGN_OR_RETURN(lw.norm2_w, w.Load(name("ln_2.weight"), {d}));
    ASSIGN_OR_RETURN(lw.norm2_b, w.Load(name("ln_2.bias"), {d}));
    ASSIGN_OR_RETURN(torch::Tensor qkv, w.Load(name("attn.c_attn.weight"), {d, 3 * d}));
    lw.qkv_w = qkv.t();
    ASSIGN_OR_RETURN(lw.qkv_b, w.Load(name("attn.c_attn.bias"), {3 * d}));
    ASSIGN_OR_RETURN(torch::Tensor o, w.Load(name("attn.c_proj.weight"), {d, d}));
    lw.o_w = o.t();
    ASSIGN_OR_RETURN(lw.o_b, w.Load(name("attn.c_proj.bias"), {d}));
    ASSIGN_OR_RETURN(torch::Tensor fc, w.Load(name("mlp.c_fc.weight"), {d, I}));
    lw.up_w = fc.t();
    ASSIGN_OR_RETURN(lw.up_b, w.Load(name("mlp.c_fc.bias"), {I}));
    ASSIGN_OR_RETURN(torch::Tensor proj, w.Load(name("mlp.c_proj.weight"), {I, d}));
    lw.down_w = proj.t();
    ASSIGN_OR_RETURN(lw.down_b, w.Load(name("mlp.c_proj.bias"), {d}));
  } else {
    const int64_t qd = c.num_heads * hd, kvd = c.num_kv_heads * hd;
    ASSIGN_OR_RETURN(lw.norm1_w, w.Load(name("input_layernorm.weight"), {d}));
    ASSIGN_OR_RETURN(lw.norm2_w, w.Load(name("post_attention_layernorm.weight"), {d}));
    using Parts = std::vector<std::pair<std::string, std::vector<int64_t>>>;
    const Parts qkv_w = {{name("self_attn.q_proj.weight"), {qd, d}},
                         {name("self_attn.k_proj.weight"), {kvd, d}},
                         {name("self_attn.v_proj.weight"), {kvd, d}}};
    const Parts qkv_b = {{name("self_attn.q_proj.bias"), {qd}},
                         {name("self_attn.k_proj.bias"), {kvd}},
                         {name("self_attn.v_proj.bias"), {kvd}}};
    const Parts gate_up_w = {{name("mlp.gate_proj.weight"), {I, d}},
                             {name("mlp.up_proj.weight"), {I, d}}};
    const Parts gate_up_b = {{name("mlp.gate_proj.bias"), {I}}, {name("mlp.up_proj.bias"), {I}}};
    if (w.zero_copy()) {
      // Separate views of the mapping.
      ASSIGN_OR_RETURN(lw.q_w, w.Load(qkv_w[0].first, qkv_w[0].second));
      ASSIGN_OR_RETURN(lw.k_w, w.Load(qkv_w[1].first, qkv_w[1].second));
      ASSIGN_OR_RETURN(lw.v_w, w.Load(qkv_w[2].first, qkv_w[2].second));
      ASSIGN_OR_RETURN(lw.gate_w, w.Load(gate_up_w[0].first, gate_up_w[0].second));
      ASSIGN_OR_RETURN(lw.up_w, w.Load(gate_up_w[1].first, gate_up_w[1].second));
      if (c.attention_bias) {
        ASSIGN_OR_RETURN(lw.q_b, w.Load(qkv_b[0].first, qkv_b[0].second));
        ASSIGN_OR_RETURN(lw.k_b, w.Load(qkv_b[1].first, qkv_b[1].second));
        ASSIGN_OR_RETURN(lw.v_b, w.Load(qkv_b[2].first, qkv_b[2].second));
      }
      if (c.mlp_bias) {
        ASSIGN_OR_RETURN(lw.gate_b, w.Load(gate_up_b[0].first, gate_up_b[0].second));
        ASSIGN_OR_RETURN(lw.up_b, w.Load(gate_up_b[1].first, gate_up_b[1].second));
      }
    } else {
      // Fused: one [q;k;v] and one [gate;up] matrix, so decode makes 4 matmuls a layer, not 7.
      ASSIGN_OR_RETURN(lw.qkv_w, w.LoadConcat(qkv_w));
      ASSIGN_OR_RETURN(lw.gate_up_w, w.LoadConcat(gate_up_w));
      if (c.attention_bias) {
        ASSIGN_OR_RETURN(lw.qkv_b, w.LoadConcat(qkv_b));
      }
      if (c.mlp_bias) {
        ASSIGN_OR_RETURN(lw.gate_up_b, w.LoadConcat(gate_up_b));
      }
    }
    ASSIGN_OR_RETURN(lw.o_w, w.Load(name("self_attn.o_proj.weight"), {d, qd}));
    ASSIGN_OR_RETURN(lw.down_w, w.Load(name("mlp.down_proj.weight"), {d, I}));
    if (c.mlp_bias) {
      ASSIGN_OR_RETURN(lw.down_b, w.Load(name("mlp.down_proj.bias"), {d}));
    }
  }
  for (const torch::Tensor* t :
       {&lw.norm1_w, &lw.norm1_b, &lw.norm2_w,   &lw.norm2_b,  &lw.q_w,    &lw.k_w,
        &lw.v_w,     &lw.q_b,     &lw.k_b,       &lw.v_b,      &lw.qkv_w,  &lw.qkv_b,
        &lw.o_w,     &lw.o_b,     &lw.gate_w,    &lw.up_w,     &lw.down_w, &lw.gate_b,
        &lw.up_b,    &lw.down_b,  &lw.gate_up_w, &lw.gate_up_b}) {
    if (t->defined()) lw.bytes += t->nbytes();
  }
  return lw;
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  // One row (a decode step): matrix-vector product. Through gemm, BLAS packs the whole weight
  // matrix on every call, reading it twice; gemv streams it once.
  if (x.dim() == 2 && x.size(0) == 1) {
    torch::Tensor y = torch::mv(w, x[0]);
    if (b.defined()) y.add_(b);
    return y.unsqueeze(0);
  }
  return b.defined() ? torch::nn::functional::linear(x, w, b) : torch::nn::functional::linear(x, w);
}

// RMSNorm as Hugging Face computes it: in float32, then back to the input dtype, times weight.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  torch::Tensor xf = x.to(torch::kFloat32);
  torch::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return w * (xf * torch::rsqrt(var + eps)).to(x.scalar_type());
}

torch::Tensor LayerNorm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                        double eps) {
  return torch::layer_norm(x, {x.size(-1)}, w, b, eps);
}

class KvCacheImpl : public KvCache {
 public:
  struct LayerKv {
    torch::Tensor k, v;  // [kv_heads, capacity, head_dim]
    int64_t length = 0;
  };

  int64_t Length(int layer) const override {
    auto it = layers_.find(layer);
    return it == layers_.end() ? 0 : it->second.length;
  }
  int64_t Bytes() const override {
    int64_t b = 0;
    for (const auto& [layer, kv] : layers_) {
      if (kv.k.defined()) b += kv.k.nbytes() + kv.v.nbytes();
    }
    return b;
  }
  std::map<int, LayerKv> layers_;
  int64_t capacity_hint_ = 0;
};

class LayerHostImpl : public LayerHost {
 public:
  const std::vector<int>& layers() const override { return layers_; }
  bool Hosts(int layer) const override { return weights_.count(layer) > 0; }
  const ModelConfig& config() const override { return config_; }
  int64_t WeightBytes() const override { return weight_bytes_; }
  int64_t KvBytesPerToken() const override {
    return static_cast<int64_t>(layers_.size()) * 2 * config_.num_kv_heads * config_.head_dim *
           torch::elementSize(dtype_);
  }
  std::unique_ptr<KvCache> NewCache(int64_t capacity) const override {
    auto cache = std::make_unique<KvCacheImpl>();
    cache->capacity_hint_ =
        std::min(std::max<int64_t>(capacity, 0), config_.max_position_embeddings);
    return cache;
  }

  absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                     absl::Span<const int> layers, KvCache* cache) const override;

  static absl::StatusOr<std::unique_ptr<LayerHostImpl>> Create(
      std::shared_ptr<const Checkpoint> ckpt, std::vector<int> layers, const LoadOptions& options);

 private:
  torch::Tensor Attention(const LayerWeights& w, const torch::Tensor& x, int64_t start_pos,
                          KvCacheImpl::LayerKv& kv, int64_t capacity_hint) const;
  torch::Tensor Mlp(const LayerWeights& w, const torch::Tensor& x) const;

  std::shared_ptr<const Checkpoint> ckpt_;
  ModelConfig config_;
  std::vector<int> layers_;
  std::map<int, LayerWeights> weights_;
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat32;
  // [max_pos, head_dim] rotary tables in the compute dtype; sin_signed_ = [-sin, sin] halves.
  torch::Tensor cos_, sin_signed_;
  int64_t weight_bytes_ = 0;
};

absl::StatusOr<std::unique_ptr<LayerHostImpl>> LayerHostImpl::Create(
    std::shared_ptr<const Checkpoint> ckpt, std::vector<int> layers, const LoadOptions& options) {
  auto host = std::make_unique<LayerHostImpl>();
  host->config_ = ckpt->config();
  const ModelConfig& c = host->config_;
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  for (int l : layers) {
    if (l < 0 || l >= c.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, " out of range: the model has ", c.num_layers, " layers"));
    }
  }
  host->layers_ = layers;
  ASSIGN_OR_RETURN(host->device_, ParseDevice(options.device));
  host->dtype_ = ToTorch(options.dtype);
  WeightLoader loader(*ckpt, host->device_, host->dtype_, options.copy_weights);
  for (int l : layers) {
    ASSIGN_OR_RETURN(LayerWeights lw, LoadLayer(c, l, loader));
    host->weight_bytes_ += lw.bytes;
    host->weights_.emplace(l, std::move(lw));
  }
  if (!c.IsGpt2()) {
    absl::Status s = TorchCall("building rotary tables", [&]() -> absl::Status {
      // Matches transformers' default rope: inv_freq and angles in float32.
      torch::Tensor inv_freq =
          1.0 / torch::pow(c.rope_theta,
                           torch::arange(0, c.head_dim, 2, torch::kInt64).to(torch::kFloat32) /
                               static_cast<double>(c.head_dim));
      torch::Tensor pos =
          torch::arange(c.max_position_embeddings, torch::kInt64).to(torch::kFloat32);
      torch::Tensor freqs = torch::outer(pos, inv_freq.to(torch::kFloat32));
      torch::Tensor emb = torch::cat({freqs, freqs}, -1);
      host->cos_ = emb.cos().to(host->device_, host->dtype_);
      torch::Tensor sin = freqs.sin();
      host->sin_signed_ = torch::cat({-sin, sin}, -1).to(host->device_, host->dtype_);
      return absl::OkStatus();
    });
    RETURN_IF_ERROR(s);
  }
  host->ckpt_ = std::move(ckpt);
  return host;
}

torch::Tensor LayerHostImpl::Attention(const LayerWeights& w, const torch::Tensor& x,
                                       int64_t start_pos, KvCacheImpl::LayerKv& kv,
                                       int64_t capacity_hint) const {
  const ModelConfig& c = config_;
  const int64_t T = x.size(0), H = c.num_heads, KV = c.num_kv_heads, hd = c.head_dim;
  const int64_t G = H / KV;
  // Rotary embedding as x*cos + roll(x, hd/2)*sin_signed (= x*cos + rotate_half(x)*sin, the same
  // products), applied to query and key heads together where they are fused.
  const bool rope = !c.IsGpt2();
  torch::Tensor cos, sin;
  if (rope) {
    cos = cos_.narrow(0, start_pos, T).unsqueeze(1);  // [T, 1, hd]
    sin = sin_signed_.narrow(0, start_pos, T).unsqueeze(1);
  }
  auto rotate = [&](const torch::Tensor& t) {  // t: [T, heads, hd]
    return rope ? t * cos + torch::roll(t, hd / 2, -1) * sin : t;
  };
  torch::Tensor q, k, v;
  if (w.qkv_w.defined()) {
    torch::Tensor qkv = Linear(x, w.qkv_w, w.qkv_b).view({T, H + 2 * KV, hd});
    torch::Tensor qk = rotate(qkv.narrow(1, 0, H + KV));
    q = qk.narrow(1, 0, H).transpose(0, 1);  // [H, T, hd]
    k = qk.narrow(1, H, KV).transpose(0, 1);
    v = qkv.narrow(1, H + KV, KV).transpose(0, 1);
  } else {
    q = rotate(Linear(x, w.q_w, w.q_b).view({T, H, hd})).transpose(0, 1);
    k = rotate(Linear(x, w.k_w, w.k_b).view({T, KV, hd})).transpose(0, 1);
    v = Linear(x, w.v_w, w.v_b).view({T, KV, hd}).transpose(0, 1);
  }
  // Append to the cache, growing capacity geometrically.
  const int64_t total = start_pos + T;
  if (!kv.k.defined() || kv.k.size(1) < total) {
    int64_t cap = kv.k.defined() ? kv.k.size(1) : 0;
    int64_t want = cap == 0 && capacity_hint > 0
                       ? std::max(capacity_hint, total)
                       : std::max<int64_t>(std::max<int64_t>(cap * 2, 64), total);
    want = std::min<int64_t>(want, std::max<int64_t>(c.max_position_embeddings, total));
    auto opts = torch::TensorOptions().dtype(dtype_).device(device_);
    torch::Tensor nk = torch::empty({KV, want, hd}, opts);
    torch::Tensor nv = torch::empty({KV, want, hd}, opts);
    if (kv.length > 0) {
      nk.narrow(1, 0, kv.length).copy_(kv.k.narrow(1, 0, kv.length));
      nv.narrow(1, 0, kv.length).copy_(kv.v.narrow(1, 0, kv.length));
    }
    kv.k = nk;
    kv.v = nv;
  }
  kv.k.narrow(1, start_pos, T).copy_(k);
  kv.v.narrow(1, start_pos, T).copy_(v);
  kv.length = total;
  torch::Tensor keys = kv.k.narrow(1, 0, total);  // [KV, L, hd]
  torch::Tensor vals = kv.v.narrow(1, 0, total);

  // Grouped-query attention without repeating K/V: fold the G query heads of a KV head into rows.
  torch::Tensor qg = q.reshape({KV, G * T, hd});
  torch::Tensor scores = torch::matmul(qg, keys.transpose(1, 2)).to(torch::kFloat32);
  scores = scores.mul_(1.0 / std::sqrt(static_cast<double>(hd))).view({KV, G, T, total});
  // Mask: query at position start_pos+t sees keys j <= start_pos+t (and within the window).
  if (T > 1 || c.sliding_window > 0) {
    torch::Tensor qpos =
        torch::arange(start_pos, total, torch::TensorOptions().device(device_)).unsqueeze(1);
    torch::Tensor kpos = torch::arange(total, torch::TensorOptions().device(device_)).unsqueeze(0);
    torch::Tensor masked = kpos > qpos;
    if (c.sliding_window > 0) masked = masked.logical_or(kpos <= qpos - c.sliding_window);
    scores.masked_fill_(masked, -std::numeric_limits<float>::infinity());
  }
  torch::Tensor probs = torch::softmax(scores, -1).to(dtype_).view({KV, G * T, total});
  torch::Tensor out = torch::matmul(probs, vals);  // [KV, G*T, hd]
  out = out.view({H, T, hd}).transpose(0, 1).reshape({T, H * hd});
  return Linear(out, w.o_w, w.o_b);
}

torch::Tensor LayerHostImpl::Mlp(const LayerWeights& w, const torch::Tensor& x) const {
  if (config_.IsGpt2()) {
    torch::Tensor h = Linear(x, w.up_w, w.up_b);
    h = config_.hidden_act == "gelu" ? torch::gelu(h) : torch::gelu(h, "tanh");
    return Linear(h, w.down_w, w.down_b);
  }
  if (w.gate_up_w.defined()) {
    auto gu = Linear(x, w.gate_up_w, w.gate_up_b).split(config_.intermediate_size, -1);
    return Linear(torch::silu(gu[0]) * gu[1], w.down_w, w.down_b);
  }
  torch::Tensor g = torch::silu(Linear(x, w.gate_w, w.gate_b));
  return Linear(g * Linear(x, w.up_w, w.up_b), w.down_w, w.down_b);
}

absl::StatusOr<HostTensor> LayerHostImpl::Forward(const HostTensor& h, int64_t start_pos,
                                                  absl::Span<const int> layers,
                                                  KvCache* cache) const {
  const ModelConfig& c = config_;
  RETURN_IF_ERROR(h.Validate());
  if (h.shape.size() != 2 || h.shape[1] != c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("hidden states have shape ", ShapeStr(h.shape),
                                                   ", expected [T,", c.hidden_size, "]"));
  }
  const int64_t T = h.shape[0];
  if (T < 1) return absl::InvalidArgumentError("hidden states hold no tokens");
  if (start_pos < 0 || start_pos + T > c.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("positions ", start_pos, "..", start_pos + T - 1,
                                              " exceed the context of ", c.max_position_embeddings,
                                              " tokens"));
  }
  auto* kvc = dynamic_cast<KvCacheImpl*>(cache);
  if (kvc == nullptr) return absl::InvalidArgumentError("KV cache from another implementation");
  for (int l : layers) {
    if (!Hosts(l)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", l, " is not hosted here (hosted: ", absl::StrJoin(layers_, ","), ")"));
    }
    if (kvc->Length(l) != start_pos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", l, " has ", kvc->Length(l), " cached positions, step starts at ", start_pos));
    }
  }
  return TorchCall("forward", [&]() -> absl::StatusOr<HostTensor> {
    c10::InferenceMode guard;
    torch::Tensor x = FromHost(h).to(device_, dtype_);
    for (int l : layers) {
      const LayerWeights& w = weights_.at(l);
      auto& kv = kvc->layers_[l];
      if (c.IsGpt2()) {
        x = x + Attention(w, LayerNorm(x, w.norm1_w, w.norm1_b, c.norm_eps), start_pos, kv,
                          kvc->capacity_hint_);
        x = x + Mlp(w, LayerNorm(x, w.norm2_w, w.norm2_b, c.norm_eps));
      } else {
        x = x + Attention(w, RmsNorm(x, w.norm1_w, c.norm_eps), start_pos, kv, kvc->capacity_hint_);
        x = x + Mlp(w, RmsNorm(x, w.norm2_w, c.norm_eps));
      }
    }
    return ToHost(x, h.dtype);
  });
}

class ModelEndsImpl : public ModelEnds {
 public:
  static absl::StatusOr<std::unique_ptr<ModelEndsImpl>> Create(
      std::shared_ptr<const Checkpoint> ckpt, const LoadOptions& options) {
    auto ends = std::make_unique<ModelEndsImpl>();
    const ModelConfig& c = ckpt->config();
    ends->config_ = c;
    ASSIGN_OR_RETURN(ends->device_, ParseDevice(options.device));
    ends->dtype_ = ToTorch(options.dtype);
    WeightLoader w(*ckpt, ends->device_, ends->dtype_, options.copy_weights);
    const int64_t d = c.hidden_size, V = c.vocab_size;
    if (c.IsGpt2()) {
      ASSIGN_OR_RETURN(ends->embed_, w.Load("wte.weight", {V, d}));
      ASSIGN_OR_RETURN(ends->pos_embed_, w.Load("wpe.weight", {c.max_position_embeddings, d}));
      ASSIGN_OR_RETURN(ends->norm_w_, w.Load("ln_f.weight", {d}));
      ASSIGN_OR_RETURN(ends->norm_b_, w.Load("ln_f.bias", {d}));
    } else {
      ASSIGN_OR_RETURN(ends->embed_, w.Load("model.embed_tokens.weight", {V, d}));
      ASSIGN_OR_RETURN(ends->norm_w_, w.Load("model.norm.weight", {d}));
    }
    if (!c.tie_word_embeddings || ckpt->store().Has("lm_head.weight")) {
      auto head = w.Load("lm_head.weight", {V, d});
      if (head.ok()) {
        ends->head_ = *head;
      } else if (c.tie_word_embeddings) {
        ends->head_ = ends->embed_;
      } else {
        return head.status();
      }
    } else {
      ends->head_ = ends->embed_;
    }
    for (const torch::Tensor* t :
         {&ends->embed_, &ends->pos_embed_, &ends->norm_w_, &ends->norm_b_}) {
      if (t->defined()) ends->bytes_ += t->nbytes();
    }
    if (!ends->head_.is_same(ends->embed_)) ends->bytes_ += ends->head_.nbytes();
    ends->ckpt_ = std::move(ckpt);
    return ends;
  }

  const ModelConfig& config() const override { return config_; }
  int64_t WeightBytes() const override { return bytes_; }

  absl::StatusOr<HostTensor> Embed(absl::Span<const int64_t> ids,
                                   int64_t start_pos) const override {
    const ModelConfig& c = config_;
    for (int64_t id : ids) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " outside the vocabulary of ", c.vocab_size));
      }
    }
    const int64_t T = static_cast<int64_t>(ids.size());
    if (start_pos < 0 || start_pos + T > c.max_position_embeddings) {
      return absl::OutOfRangeError(absl::StrCat("positions ", start_pos, "..", start_pos + T - 1,
                                                " exceed the context of ",
                                                c.max_position_embeddings, " tokens"));
    }
    return TorchCall("embed", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      torch::Tensor idx =
          torch::from_blob(const_cast<int64_t*>(ids.data()), {T}, torch::kInt64).to(device_);
      torch::Tensor x = embed_.index_select(0, idx);
      if (pos_embed_.defined()) x = x + pos_embed_.narrow(0, start_pos, T);
      return ToHost(x, DType::kF32);
    });
  }

  absl::StatusOr<HostTensor> FinalNorm(const HostTensor& h) const override {
    RETURN_IF_ERROR(CheckHidden(h));
    return TorchCall("final norm", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      return ToHost(Norm(FromHost(h).to(device_, dtype_)), DType::kF32);
    });
  }

  absl::StatusOr<HostTensor> Logits(const HostTensor& h, bool last_only) const override {
    RETURN_IF_ERROR(CheckHidden(h));
    return TorchCall("logits", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      torch::Tensor x = FromHost(h).to(device_, dtype_);
      if (last_only) x = x.narrow(0, x.size(0) - 1, 1);
      torch::Tensor logits = torch::nn::functional::linear(Norm(x), head_);
      return ToHost(logits, DType::kF32);
    });
  }

  absl::StatusOr<HostTensor> EmbeddingRows(absl::Span<const int64_t> ids) const override {
    for (int64_t id : ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " outside the vocabulary of ", config_.vocab_size));
      }
    }
    return TorchCall("embedding rows", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      torch::Tensor idx = torch::from_blob(const_cast<int64_t*>(ids.data()),
                                           {static_cast<int64_t>(ids.size())}, torch::kInt64)
                              .to(device_);
      return ToHost(embed_.index_select(0, idx), DType::kF32);
    });
  }

 private:
  absl::Status CheckHidden(const HostTensor& h) const {
    RETURN_IF_ERROR(h.Validate());
    if (h.shape.size() != 2 || h.shape[1] != config_.hidden_size || h.shape[0] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("hidden states have shape ", ShapeStr(h.shape),
                                                     ", expected [T,", config_.hidden_size,
                                                     "] with T >= 1"));
    }
    return absl::OkStatus();
  }
  torch::Tensor Norm(const torch::Tensor& x) const {
    if (config_.IsGpt2()) return LayerNorm(x, norm_w_, norm_b_, config_.norm_eps);
    return RmsNorm(x, norm_w_, config_.norm_eps);
  }

  std::shared_ptr<const Checkpoint> ckpt_;
  ModelConfig config_;
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat32;
  torch::Tensor embed_, pos_embed_, norm_w_, norm_b_, head_;
  int64_t bytes_ = 0;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  auto ckpt = std::shared_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = model_dir;
  ASSIGN_OR_RETURN(ckpt->config_, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(ckpt->store_, TensorStore::Open(model_dir));
  if (ckpt->config_.IsGpt2()) {
    ckpt->gpt2_prefix_ = ckpt->store_->Has("transformer.wte.weight") ? "transformer." : "";
  }
  return std::shared_ptr<const Checkpoint>(std::move(ckpt));
}

absl::StatusOr<std::string> Checkpoint::Resolve(absl::string_view logical_name) const {
  std::string name(logical_name);
  if (config_.IsGpt2() && logical_name != "lm_head.weight") name = gpt2_prefix_ + name;
  if (!store_->Has(name)) {
    return absl::NotFoundError(absl::StrCat("missing tensor '", name, "' in ", dir_));
  }
  return name;
}

std::vector<std::string> Checkpoint::LayerTensorNames(int layer) const {
  std::vector<std::string> out;
  const std::string prefix = config_.IsGpt2() ? absl::StrCat(gpt2_prefix_, "h.", layer, ".")
                                              : absl::StrCat("model.layers.", layer, ".");
  for (const std::string& name : store_->Names()) {
    // GPT-2's attn.bias / attn.masked_bias are mask buffers, not weights.
    if (absl::StartsWith(name, prefix) && !absl::EndsWith(name, "attn.bias") &&
        !absl::EndsWith(name, "attn.masked_bias")) {
      out.push_back(name);
    }
  }
  return out;
}

int64_t Checkpoint::LayerBytes(int layer) const {
  int64_t bytes = 0;
  for (const std::string& name : LayerTensorNames(layer)) {
    auto v = store_->Get(name);
    if (v.ok()) bytes += v->nbytes;
  }
  return bytes;
}

int64_t Checkpoint::EmbeddingBytes() const {
  int64_t bytes = 0;
  for (const char* n : {"model.embed_tokens.weight", "wte.weight", "wpe.weight"}) {
    auto name = Resolve(n);
    if (!name.ok()) continue;
    auto v = store_->Get(*name);
    if (v.ok()) bytes += v->nbytes;
  }
  return bytes;
}

int64_t Checkpoint::HeadBytes() const {
  int64_t bytes = 0;
  for (const char* n : {"model.norm.weight", "ln_f.weight", "ln_f.bias", "lm_head.weight"}) {
    auto name = Resolve(n);
    if (!name.ok()) continue;
    auto v = store_->Get(*name);
    if (v.ok()) bytes += v->nbytes;
  }
  return bytes;
}

absl::StatusOr<std::unique_ptr<LayerHost>> LayerHost::Create(
    std::shared_ptr<const Checkpoint> checkpoint, std::vector<int> layers,
    const LoadOptions& options) {
  ASSIGN_OR_RETURN(auto host,
                   LayerHostImpl::Create(std::move(checkpoint), std::move(layers), options));
  return std::unique_ptr<LayerHost>(std::move(host));
}

absl::StatusOr<std::unique_ptr<ModelEnds>> ModelEnds::Create(
    std::shared_ptr<const Checkpoint> checkpoint, const LoadOptions& options) {
  ASSIGN_OR_RETURN(auto ends, ModelEndsImpl::Create(std::move(checkpoint), options));
  return std::unique_ptr<ModelEnds>(std::move(ends));
}

}  // namespace swarm::model
