#include <algorithm>

#include "model/kv_cache_torch.h"

namespace swarm::model {

TorchKvCache::TorchKvCache(int64_t capacity_hint, int64_t context)
    : capacity_hint_(std::min(std::max<int64_t>(capacity_hint, 0), context)), context_(context) {}

int64_t TorchKvCache::Length(int layer) const {
  auto it = layers_.find(layer);
  return it == layers_.end() ? 0 : it->second.length;
}

int64_t TorchKvCache::Bytes() const {
  int64_t b = 0;
  for (const auto& [layer, kv] : layers_) {
    if (kv.k.defined()) b += kv.k.nbytes() + kv.v.nbytes();
  }
  return b;
}

void TorchKvCache::Grow(LayerKv& kv, int64_t kv_heads, int64_t head_dim,
                        const at::TensorOptions& options, int64_t total) const {
  if (kv.k.defined() && kv.k.size(1) >= total) return;
  // A session's known maximum (the hint) is allocated at once, so a KV budget reserves what is
  // allocated; otherwise growth is geometric, amortising the copies.
  const int64_t cap = kv.k.defined() ? kv.k.size(1) : 0;
  int64_t want = cap == 0 && capacity_hint_ > 0
                     ? std::max(capacity_hint_, total)
                     : std::max<int64_t>(std::max<int64_t>(cap * 2, 64), total);
  want = std::min<int64_t>(want, std::max<int64_t>(context_, total));
  const at::TensorOptions o = kv.k.defined() ? kv.k.options() : options;
  if (kv.k.defined()) {
    kv_heads = kv.k.size(0);
    head_dim = kv.k.size(2);
  }
  at::Tensor nk = at::empty({kv_heads, want, head_dim}, o);
  at::Tensor nv = at::empty({kv_heads, want, head_dim}, o);
  if (kv.length > 0) {
    nk.narrow(1, 0, kv.length).copy_(kv.k.narrow(1, 0, kv.length));
    nv.narrow(1, 0, kv.length).copy_(kv.v.narrow(1, 0, kv.length));
  }
  kv.k = nk;
  kv.v = nv;
}

std::pair<at::Tensor, at::Tensor> TorchKvCache::Append(int layer, const at::Tensor& k,
                                                       const at::Tensor& v, int64_t start_pos) {
  LayerKv& kv = layers_[layer];
  const int64_t total = start_pos + k.size(1);
  Grow(kv, k.size(0), k.size(2), k.options(), total);
  kv.k.narrow(1, start_pos, k.size(1)).copy_(k);
  kv.v.narrow(1, start_pos, v.size(1)).copy_(v);
  kv.length = total;
  return {kv.k.narrow(1, 0, total), kv.v.narrow(1, 0, total)};
}

TorchKvCache::Storage TorchKvCache::Reserve(int layer, int64_t kv_heads, int64_t head_dim,
                                            at::ScalarType dtype, int64_t start_pos, int64_t rows) {
  LayerKv& kv = layers_[layer];
  const int64_t total = start_pos + rows;
  Grow(kv, kv_heads, head_dim, at::TensorOptions().dtype(dtype), total);
  kv.length = total;
  return {kv.k.data_ptr(), kv.v.data_ptr(), kv.k.size(1), kv.k.scalar_type()};
}

}  // namespace swarm::model
