// The KV cache's storage, internal to model/ (callers see model/kv_cache.h): per layer, keys and
// values [kv_heads, capacity, head_dim] on the device in the compute dtype. LayerHost::NewCache
// makes one; the attention building block (model/layers_torch.h) appends to it. Not synchronised:
// one cache is used by one thread at a time (LayerHost::Forward's contract).
#ifndef SWARM_MODEL_KV_CACHE_TORCH_H_
#define SWARM_MODEL_KV_CACHE_TORCH_H_

#include <cstdint>
#include <map>
#include <utility>

#include "model/kv_cache.h"
#include "model/tensor_torch.h"

namespace swarm::model {

class TorchKvCache final : public KvCache {
 public:
  // `capacity_hint` (clamped to 0..context): when > 0 each layer's first write allocates room for
  // exactly that many positions (at least the write's); without it, or past it, capacity grows
  // geometrically (doubling, at least 64 positions), never past `context` unless a write needs it.
  TorchKvCache(int64_t capacity_hint, int64_t context);

  int64_t Length(int layer) const override;
  int64_t Bytes() const override;

  // Writes k, v [kv_heads, T, head_dim] at positions start_pos..start_pos+T-1 of `layer` (the
  // caller has checked Length(layer) == start_pos) and returns the layer's keys and values for
  // positions 0..start_pos+T-1, as views of the storage. May throw (LibTorch): call it inside
  // TorchCall.
  std::pair<at::Tensor, at::Tensor> Append(int layer, const at::Tensor& k, const at::Tensor& v,
                                           int64_t start_pos);

  // The fused CPU path's access (model/cpu_layer_torch.h): makes room for positions
  // 0..start_pos+rows-1 of `layer` as Append does (a first allocation [kv_heads, capacity,
  // head_dim] in `dtype` on the CPU), counts them as written — the caller writes positions
  // start_pos.. before anything reads them — and returns the storage. The caller has checked
  // Length(layer) == start_pos. May throw (LibTorch): call it inside TorchCall.
  struct Storage {
    void* k = nullptr;  // [kv_heads, capacity, head_dim], contiguous.
    void* v = nullptr;
    int64_t capacity = 0;
    at::ScalarType dtype = at::kFloat;
  };
  Storage Reserve(int layer, int64_t kv_heads, int64_t head_dim, at::ScalarType dtype,
                  int64_t start_pos, int64_t rows);

 private:
  struct LayerKv {
    at::Tensor k, v;  // [kv_heads, capacity, head_dim]
    int64_t length = 0;
  };
  // Room for `total` positions in kv (a first allocation with `options` and these sizes).
  void Grow(LayerKv& kv, int64_t kv_heads, int64_t head_dim, const at::TensorOptions& options,
            int64_t total) const;
  std::map<int, LayerKv> layers_;
  const int64_t capacity_hint_;
  const int64_t context_;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_KV_CACHE_TORCH_H_
