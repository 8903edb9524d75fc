#include "worker/worker_metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/layer_set.h"
#include "common/status_macros.h"

namespace swarm::worker {

absl::StatusOr<std::unique_ptr<WorkerMetricsObserver>> WorkerMetricsObserver::Start(
    const Options& options) {
  common::WorkerMetrics::Options mo;
  mo.layers = options.layers;
  mo.model = options.model;
  mo.device = options.device;
  mo.dtype = options.dtype;
  auto observer = std::unique_ptr<WorkerMetricsObserver>(new WorkerMetricsObserver());
  ASSIGN_OR_RETURN(observer->metrics_, common::WorkerMetrics::Create(mo));
  observer->metrics_->SetKvCacheBudgetBytes(options.kv_budget_bytes);
  common::MetricsServer::Options so;
  so.listen = options.listen;
  so.registry = observer->metrics_->registry();
  so.auth_tokens_file = options.auth_tokens_file;
  so.log_name = "swarm-worker";
  ASSIGN_OR_RETURN(observer->server_, common::MetricsServer::Start(so));
  return observer;
}

WorkerMetricsObserver::~WorkerMetricsObserver() {
  if (server_) server_->Stop();
}

void WorkerMetricsObserver::OnForward(absl::Span<const int> layers, int64_t positions,
                                      double seconds, absl::StatusCode code) {
  // A step over several runs of layers counts under the range of its first layer.
  metrics_->OnForward(layers.empty() ? -1 : layers[0], seconds, code, positions);
}

void WorkerMetricsObserver::OnError(absl::string_view method, absl::StatusCode code) {
  metrics_->OnError(method, code);
}

void WorkerMetricsObserver::SetReady(bool ready) { metrics_->SetReady(ready); }
void WorkerMetricsObserver::SetDraining(bool draining) { metrics_->SetDraining(draining); }

void WorkerMetricsObserver::SetSessions(const WorkerStats& stats, int64_t kv_budget_bytes) {
  metrics_->SetActiveSessions(stats.sessions);
  metrics_->SetKvCacheBytes(stats.kv_used_bytes);
  metrics_->SetKvCacheReservedBytes(stats.kv_reserved_bytes);
  metrics_->SetKvCacheBudgetBytes(kv_budget_bytes);
}

void WorkerMetricsObserver::OnSessionEvicted(absl::string_view reason) {
  metrics_->OnSessionEvicted(reason);
}

void WorkerMetricsObserver::OnBlockLoad(double seconds) { metrics_->OnBlockLoad(seconds); }

void WorkerMetricsObserver::OnBlockEviction() { metrics_->OnBlockEviction(); }

void WorkerMetricsObserver::OnStreamBuffered(int64_t delta_bytes) {
  metrics_->AddStreamBufferedBytes(delta_bytes);
}

void WorkerMetricsObserver::SetBlocksResident(int blocks, int64_t bytes) {
  metrics_->SetBlocksResident(blocks, bytes);
}

void WorkerMetricsObserver::OnBlockHit() { metrics_->OnBlockHit(); }

void WorkerMetricsObserver::OnBatch(int sequences, int64_t rows) {
  metrics_->OnBatch(sequences, rows);
}

void WorkerMetricsObserver::OnBusy(double seconds) { metrics_->AddBusySeconds(seconds); }

}  // namespace swarm::worker
