// Weight residency for swarm-worker `--memory-budget BYTES`: a model::LayerHost whose hosted
// layers are split into residency units (runs of at most `--block-layers` consecutive hosted
// layers), each unit its own LayerHost, of which only those that fit the budget stay resident.
// The least recently used unpinned unit is evicted when another one must be loaded; an evicted
// unit is recreated from the checkpoint's mapping on demand. KV caches are per layer and
// independent of the LayerHost that wrote them, so sessions keep theirs across evictions.
//
// A residency unit is not a *block* (the router's N-way split of the model, common/block_layout.h):
// a worker may host several blocks, and a block may span several units or workers. The flag,
// metric and wire names (--block-layers, swarm_worker_blocks_resident, swarm_worker_block_*,
// InfoResponse.blocks_resident, ...) say "block" for historical reasons and are kept: they are a
// contract.
//
// Worker (worker.h) uses it as its LayerHost; WorkerServer creates it when
// WorkerServerOptions::memory_budget_bytes > 0 and calls Prefetch for the Prefetch RPC.
//
// Threading: every method is thread-safe. A Forward or ForwardBatch pins one unit at a time (a
// pinned unit is never evicted; the shared_ptr it holds keeps it alive regardless), so with a
// budget of at least the largest unit every wait for room ends. Loads run outside the table's
// mutex; a caller that wants a unit being loaded waits for that load.
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
  int units = 0;                   // Residency units the hosted layers are split into.
  int units_resident = 0;          // Loaded now (or being loaded).
  int64_t resident_bytes = 0;      // Weight bytes of those units.
  int64_t budget_bytes = 0;        // The memory budget.
  uint64_t loads_total = 0;        // Units loaded from the checkpoint (start-up excluded).
  uint64_t hits_total = 0;         // Unit uses (Forward or Prefetch) that found it resident.
  uint64_t evictions_total = 0;    // Units dropped to make room.
  int64_t max_resident_bytes = 0;  // The most resident_bytes ever reached (<= budget_bytes).
};

// Called (outside the mutex) after each load with its duration, after each eviction, with the
// resident units and bytes after a load, and on each hit.
struct ResidencyListener {
  std::function<void(double seconds)> on_load;
  std::function<void()> on_evict;
  std::function<void(int units_resident, int64_t resident_bytes)> on_resident;
  std::function<void()> on_hit;
};

class ResidentLayerHost : public model::LayerHost {
 public:
  // Splits `layers` (sorted, unique) into units of at most `block_layers` (--block-layers)
  // consecutive layers (a gap in the hosted layers always starts a new unit), loads each unit
  // once to learn its size, and keeps the first ones that fit `budget_bytes`. InvalidArgument
  // when budget_bytes or block_layers is not positive, or when a unit alone exceeds the budget
  // (the message names the unit, as "block N" after the flag, and both sizes).
  static absl::StatusOr<std::unique_ptr<ResidentLayerHost>> Create(
      std::shared_ptr<const model::Checkpoint> checkpoint, std::vector<int> layers,
      const model::LoadOptions& options, int block_layers, int64_t budget_bytes,
      ResidencyListener listener = {});
  ~ResidentLayerHost() override;

  const std::vector<int>& layers() const override { return layers_; }
  bool Hosts(int layer) const override;
  const model::ModelConfig& config() const override { return checkpoint_->config(); }
  // Weight bytes of all units (resident or not): what a step streams through.
  int64_t WeightBytes() const override { return total_bytes_; }
  int64_t KvBytesPerToken() const override { return kv_bytes_per_token_; }
  std::unique_ptr<model::KvCache> NewCache(int64_t capacity = 0) const override;
  // Runs the layers unit by unit, loading each unit (and evicting others) as needed.
  absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                     absl::Span<const int> layers,
                                     model::KvCache* cache) const override;
  // The same unit by unit for a whole batch: each unit is acquired and pinned once for all the
  // sequences and runs its layers through its own host's ForwardBatch (one pass over its weights).
  // A sequence that fails in one unit is left out of the later ones (its output rows are zero).
  absl::StatusOr<model::BatchOutput> ForwardBatch(const HostTensor& h,
                                                  absl::Span<const model::BatchSequence> sequences,
                                                  absl::Span<const int> layers) const override;

  // Makes the units holding `layers` resident, in order, as far as they fit the budget together
  // (later ones are skipped rather than evicting earlier ones). Blocking. InvalidArgument for a
  // layer not hosted; load errors as from LayerHost::Create. Returns how many units it loaded.
  absl::StatusOr<int> Prefetch(absl::Span<const int> layers) const;

  ResidencyStats Stats() const;
  // The layers of each unit, in unit order (for tests and logs).
  const std::vector<std::vector<int>>& units() const { return unit_layers_; }

 private:
  struct Unit {
    std::vector<int> layers;
    int64_t bytes = 0;
    std::shared_ptr<const model::LayerHost> host;
    bool loading = false;
    int pins = 0;
    uint64_t last_use = 0;
  };
  ResidentLayerHost() = default;
  int UnitOf(int layer) const;
  // Makes unit `u` resident (waiting for room or for a load in progress) and returns its host;
  // with `pin` the unit stays resident until Unpin(u). Counts a hit or a load.
  absl::StatusOr<std::shared_ptr<const model::LayerHost>> Acquire(int u, bool pin,
                                                                  bool* loaded = nullptr) const;
  void Unpin(int u) const;

  std::shared_ptr<const model::Checkpoint> checkpoint_;
  model::LoadOptions options_;
  std::vector<int> layers_;
  std::vector<std::vector<int>> unit_layers_;
  std::vector<int> layer_unit_;  // Indexed by layer; -1 = not hosted.
  int64_t total_bytes_ = 0;
  int64_t kv_bytes_per_token_ = 0;
  int64_t budget_ = 0;
  ResidencyListener listener_;
  // Never used for weights: NewCache only (caches are independent of the host that makes them).
  std::shared_ptr<const model::LayerHost> cache_maker_;

  mutable absl::Mutex mu_;
  mutable absl::CondVar changed_;
  mutable std::vector<Unit> table_ ABSL_GUARDED_BY(mu_);
  mutable int64_t resident_ ABSL_GUARDED_BY(mu_) = 0;
  mutable uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
  mutable ResidencyStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_BLOCK_RESIDENCY_H_
