// The keys and values one session has written into the layers of one LayerHost. Made by
// LayerHost::NewCache; the worker keeps one per session, the engine and the sparse executors one
// per request. The storage behind it (model/kv_cache_torch.h) is internal to model/: callers see
// only this torch-free interface. Not synchronised: one cache is used by one thread at a time.
#ifndef SWARM_MODEL_KV_CACHE_H_
#define SWARM_MODEL_KV_CACHE_H_

#include <cstdint>

namespace swarm::model {

class KvCache {
 public:
  virtual ~KvCache() = default;
  // Positions written so far into `layer` (0 for a layer never run).
  virtual int64_t Length(int layer) const = 0;
  // Bytes currently allocated.
  virtual int64_t Bytes() const = 0;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_KV_CACHE_H_
