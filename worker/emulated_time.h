// Emulated layer time (swarm-worker --emulate-layer-time): a LayerHost that runs another one and
// then holds the call for a fixed time per layer and row it computed, one call at a time, as a
// device would whose layer pass costs that much. For benchmarks and tests of load balancing on a
// real cluster of small models, whose own layers cost less than a hop (so busy time would not
// follow the layers a request runs); the outputs are the wrapped host's, bit for bit.
//
// Threading: as model::LayerHost. Calls compute concurrently; their emulated time is serialised
// (one device), so a worker offered more than it can do queues, as a saturated one would.
#ifndef SWARM_WORKER_EMULATED_TIME_H_
#define SWARM_WORKER_EMULATED_TIME_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/layer_host.h"

namespace swarm::worker {

class EmulatedTimeLayerHost : public model::LayerHost {
 public:
  // `per_layer_row` > 0: a call computing R rows through L layers is held until L × R ×
  // per_layer_row after the wrapped host returns (and any earlier call's emulated time is done).
  EmulatedTimeLayerHost(std::unique_ptr<model::LayerHost> inner, absl::Duration per_layer_row);

  const std::vector<int>& layers() const override { return inner_->layers(); }
  bool Hosts(int layer) const override { return inner_->Hosts(layer); }
  const model::ModelConfig& config() const override { return inner_->config(); }
  int64_t WeightBytes() const override { return inner_->WeightBytes(); }
  int64_t KvBytesPerToken() const override { return inner_->KvBytesPerToken(); }
  std::string KernelPath() const override { return inner_->KernelPath(); }
  std::unique_ptr<model::KvCache> NewCache(int64_t capacity = 0) const override {
    return inner_->NewCache(capacity);
  }
  absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                     absl::Span<const int> layers,
                                     model::KvCache* cache) const override;
  absl::StatusOr<model::BatchOutput> ForwardBatch(const HostTensor& h,
                                                  absl::Span<const model::BatchSequence> sequences,
                                                  absl::Span<const int> layers) const override;

 private:
  // Holds the caller for layers × rows × per_layer_row_, behind every earlier call's hold.
  void Hold(int64_t layers, int64_t rows) const;

  const std::unique_ptr<model::LayerHost> inner_;
  const absl::Duration per_layer_row_;
  mutable absl::Mutex device_;  // Held while a call's emulated time passes.
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_EMULATED_TIME_H_
