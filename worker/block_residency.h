// Block residency for swarm-worker `--memory-budget BYTES`: a model::LayerHost whose hosted
// layers are split into blocks (runs of at most `block_layers` consecutive hosted layers), each
// block its own LayerHost, of which only those that fit the budget stay resident. The least
// recently used unpinned block is evicted when another one must be loaded; an evicted block is
// recreated from the checkpoint's mapping on demand. KV caches are per layer and independent of
// the LayerHost that wrote them, so sessions keep theirs across evictions.
//
// Worker (worker.h) uses it as its LayerHost; WorkerServer creates it when
// WorkerServerOptions::memory_budget_bytes > 0 and calls Prefetch for the Prefetch RPC.
//
// Threading: every method is thread-safe. A Forward pins one block at a time (a pinned block is
// never evicted; the shared_ptr it holds keeps it alive regardless), so with a budget of at least
// the largest block every wait for room ends. Loads run outside the table's mutex; a caller that
// wants a block being loaded waits for that load.
#ifndef SWARM_WORKER_BLOCK_RESIDENCY_H_
#define SWARM_WORKER_BLOCK_RESIDENCY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/layer_host.h"
#include "model/weights.h"

namespace swarm::worker {

struct ResidencyStats {
  int blocks = 0;                  // Blocks the hosted layers are split into.
  int blocks_resident = 0;         // Loaded now (or being loaded).
  int64_t resident_bytes = 0;      // Weight bytes of those blocks.
  int64_t budget_bytes = 0;        // The memory budget.
  uint64_t loads_total = 0;        // Blocks loaded from the checkpoint (start-up excluded).
  uint64_t hits_total = 0;         // Block uses (Forward or Prefetch) that found it resident.
  uint64_t evictions_total = 0;    // Blocks dropped to make room.
  int64_t max_resident_bytes = 0;  // The most resident_bytes ever reached (<= budget_bytes).
};

// Called (outside the mutex) after each load with its duration, after each eviction, with the
// resident blocks and bytes after a load, and on each hit.
struct ResidencyListener {
  std::function<void(double seconds)> on_load;
  std::function<void()> on_evict;
  std::function<void(int blocks_resident, int64_t resident_bytes)> on_resident;
  std::function<void()> on_hit;
};

class ResidentLayerHost : public model::LayerHost {
 public:
  // Splits `layers` (sorted, unique) into blocks of at most `block_layers` consecutive layers
  // (a gap in the hosted layers always starts a new block), loads each block once to learn its
  // size, and keeps the first ones that fit `budget_bytes`. InvalidArgument when budget_bytes
  // or block_layers is not positive, or when a block alone exceeds the budget (the message names
  // the block and both sizes).
  static absl::StatusOr<std::unique_ptr<ResidentLayerHost>> Create(
      std::shared_ptr<const model::Checkpoint> checkpoint, std::vector<int> layers,
      const model::LoadOptions& options, int block_layers, int64_t budget_bytes,
      ResidencyListener listener = {});
  ~ResidentLayerHost() override;

  const std::vector<int>& layers() const override { return layers_; }
  bool Hosts(int layer) const override;
  const model::ModelConfig& config() const override { return checkpoint_->config(); }
  // Weight bytes of all blocks (resident or not): what a step streams through.
  int64_t WeightBytes() const override { return total_bytes_; }
  int64_t KvBytesPerToken() const override { return kv_bytes_per_token_; }
  std::unique_ptr<model::KvCache> NewCache(int64_t capacity = 0) const override;
  // Runs the layers block by block, loading each block (and evicting others) as needed.
  absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                     absl::Span<const int> layers,
                                     model::KvCache* cache) const override;

  // Makes the blocks holding `layers` resident, in order, as far as they fit the budget together
  // (later ones are skipped rather than evicting earlier ones). Blocking. InvalidArgument for a
  // layer not hosted; load errors as from LayerHost::Create. Returns how many blocks it loaded.
  absl::StatusOr<int> Prefetch(absl::Span<const int> layers) const;

  ResidencyStats Stats() const;
  // The layers of each block, in block order (for tests and logs).
  const std::vector<std::vector<int>>& blocks() const { return block_layers_; }

 private:
  struct Block {
    std::vector<int> layers;
    int64_t bytes = 0;
    std::shared_ptr<const model::LayerHost> host;
    bool loading = false;
    int pins = 0;
    uint64_t last_use = 0;
  };
  ResidentLayerHost() = default;
  int BlockOf(int layer) const;
  // Makes block `b` resident (waiting for room or for a load in progress) and returns its host;
  // with `pin` the block stays resident until Unpin(b). Counts a hit or a load.
  absl::StatusOr<std::shared_ptr<const model::LayerHost>> Acquire(int b, bool pin,
                                                                  bool* loaded = nullptr) const;
  void Unpin(int b) const;

  std::shared_ptr<const model::Checkpoint> checkpoint_;
  model::LoadOptions options_;
  std::vector<int> layers_;
  std::vector<std::vector<int>> block_layers_;
  std::vector<int> layer_block_;  // Indexed by layer; -1 = not hosted.
  int64_t total_bytes_ = 0;
  int64_t kv_bytes_per_token_ = 0;
  int64_t budget_ = 0;
  ResidencyListener listener_;
  // Never used for weights: NewCache only (caches are independent of the host that makes them).
  std::shared_ptr<const model::LayerHost> cache_maker_;

  mutable absl::Mutex mu_;
  mutable absl::CondVar changed_;
  mutable std::vector<Block> table_ ABSL_GUARDED_BY(mu_);
  mutable int64_t resident_ ABSL_GUARDED_BY(mu_) = 0;
  mutable uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
  mutable ResidencyStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_BLOCK_RESIDENCY_H_
