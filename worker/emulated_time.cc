#include "worker/emulated_time.h"

#include <utility>

#include "absl/time/clock.h"

namespace swarm::worker {

EmulatedTimeLayerHost::EmulatedTimeLayerHost(std::unique_ptr<model::LayerHost> inner,
                                             absl::Duration per_layer_row)
    : inner_(std::move(inner)), per_layer_row_(per_layer_row) {}

void EmulatedTimeLayerHost::Hold(int64_t layers, int64_t rows) const {
  if (per_layer_row_ <= absl::ZeroDuration() || layers <= 0 || rows <= 0) return;
  absl::MutexLock lock(&device_);
  absl::SleepFor(per_layer_row_ * (layers * rows));
}

absl::StatusOr<HostTensor> EmulatedTimeLayerHost::Forward(const HostTensor& h, int64_t start_pos,
                                                          absl::Span<const int> layers,
                                                          model::KvCache* cache) const {
  absl::StatusOr<HostTensor> out = inner_->Forward(h, start_pos, layers, cache);
  if (out.ok() && !h.shape.empty()) Hold(static_cast<int64_t>(layers.size()), h.shape[0]);
  return out;
}

absl::StatusOr<model::BatchOutput> EmulatedTimeLayerHost::ForwardBatch(
    const HostTensor& h, absl::Span<const model::BatchSequence> sequences,
    absl::Span<const int> layers) const {
  absl::StatusOr<model::BatchOutput> out = inner_->ForwardBatch(h, sequences, layers);
  if (out.ok()) {
    int64_t rows = 0;
    for (size_t i = 0; i < sequences.size() && i < out->status.size(); ++i) {
      if (out->status[i].ok()) rows += sequences[i].rows;
    }
    Hold(static_cast<int64_t>(layers.size()), rows);
  }
  return out;
}

}  // namespace swarm::worker
