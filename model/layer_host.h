// A set of transformer layers (not necessarily contiguous) loaded onto a device in a dtype: what a
// worker hosts, what the in-process engine and the router's sparse executor run. Loading touches
// only those layers' tensors. The family's layer math comes from the checkpoint's architecture
// (model/architecture_torch.h); this interface is torch-free, so the worker and coordinator see
// HostTensor only. worker::ResidentLayerHost implements it too (residency under a memory budget).
//
// Threading: Forward is const and thread-safe for different KvCaches; one KvCache must not be
// used by two threads at once.
#ifndef SWARM_MODEL_LAYER_HOST_H_
#define SWARM_MODEL_LAYER_HOST_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace swarm::model {

class LayerHost {
 public:
  // Loads `layers` (sorted and deduplicated here; each < num_layers) from `checkpoint` onto
  // options.device. Errors name the tensor at fault (missing, wrong shape or dtype for the
  // config), or the layer out of range, or the device.
  static absl::StatusOr<std::unique_ptr<LayerHost>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, std::vector<int> layers,
      const LoadOptions& options);
  virtual ~LayerHost() = default;

  virtual const std::vector<int>& layers() const = 0;
  virtual bool Hosts(int layer) const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int64_t WeightBytes() const = 0;  // As resident on the device.
  // Bytes one token of KV cache takes across all hosted layers.
  virtual int64_t KvBytesPerToken() const = 0;

  // A new, empty cache. With `capacity` > 0 each layer's first write allocates room for exactly
  // that many positions (a session's known maximum, so a KV budget reserves what is allocated);
  // past it, or without a hint, capacity grows geometrically up to the context.
  virtual std::unique_ptr<KvCache> NewCache(int64_t capacity = 0) const = 0;

  // Runs `layers` (each hosted, in the given order) over hidden states `h` [T, hidden_size]
  // holding positions start_pos .. start_pos+T-1, appending their keys/values to `cache`.
  // Every layer in `layers` must have Length(layer) == start_pos in the cache
  // (FailedPrecondition otherwise) and start_pos + T must not exceed the context
  // (OutOfRange). Output keeps h's dtype. The layers run ungated: a sparse block's gate is
  // applied by whoever combines block outputs, through model/combine.h.
  virtual absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                             absl::Span<const int> layers,
                                             KvCache* cache) const = 0;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_LAYER_HOST_H_
