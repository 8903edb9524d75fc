// Sparse execution in-process (its quality is measured by router/calibration/divergence.h).
//
//  - SparseExecutor: a model::StepExecutor that runs only the selected blocks of a LayerHost.
//    `sequential`: selected blocks in layer order, skipped blocks are the identity, each block's
//    update is gated: h ← h + g_b·(B_b(h) − h) (model::GateResidual). `parallel`: every selected
//    block reads the same h and h_out = h + Σ_b w_b·(B_b(h) − h) (model::CombineResiduals). One
//    block set per request, used for prefill and every decode step, so the KV caches of the
//    selected layers stay consistent (skipped layers never see the sequence). With every block
//    selected and g = 1, sequential equals exact mode. Plays the role the coordinator's remote
//    dispatch plays in the distributed sparse mode.
//
// A SparseExecutor holds one sequence's caches: one per request, used from one thread. The
// LayerHost must outlive it.
#ifndef SWARM_ROUTER_SPARSE_H_
#define SWARM_ROUTER_SPARSE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/block_layout.h"
#include "model/generate.h"
#include "model/kv_cache.h"
#include "model/layer_host.h"

namespace swarm::router {

enum class Combine { kSequential, kParallel };
const char* CombineName(Combine combine);
absl::StatusOr<Combine> ParseCombine(absl::string_view name);

struct SparsePlan {
  std::vector<int> blocks;     // Selected blocks (any order; run in layer order).
  std::vector<float> weights;  // One per block (same order as `blocks`); empty = all 1.
  Combine combine = Combine::kSequential;
};

class SparseExecutor : public model::StepExecutor {
 public:
  // InvalidArgument for an empty, out-of-range or duplicated block, or a weights/blocks size
  // mismatch; FailedPrecondition when `host` lacks a layer of a selected block.
  static absl::StatusOr<std::unique_ptr<SparseExecutor>> Create(const model::LayerHost* host,
                                                                BlockLayout layout,
                                                                SparsePlan plan);
  absl::StatusOr<HostTensor> Run(const HostTensor& h, int64_t start_pos) override;

 private:
  SparseExecutor() = default;
  const model::LayerHost* host_ = nullptr;
  BlockLayout layout_;
  std::vector<std::pair<int, float>> blocks_;  // (block, weight) in layer order.
  Combine combine_ = Combine::kSequential;
  std::unique_ptr<model::KvCache> cache_;
};

}  // namespace swarm::router

#endif  // SWARM_ROUTER_SPARSE_H_
