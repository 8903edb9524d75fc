#include "coordinator/coordinator_metrics.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/block_layout.h"
#include "common/status_macros.h"

namespace swarm::coordinator {

absl::StatusOr<std::unique_ptr<CoordinatorMetricsObserver>> CoordinatorMetricsObserver::Start(
    const Options& options) {
  const int n = options.num_blocks > 0 ? options.num_blocks : options.num_layers;
  if (options.num_layers <= 0 || n > options.num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: ", n, " blocks of ", options.num_layers, " layers"));
  }
  ASSIGN_OR_RETURN(BlockLayout layout, BlockLayout::Create(options.num_layers, n));
  auto observer = std::unique_ptr<CoordinatorMetricsObserver>(new CoordinatorMetricsObserver());
  observer->num_blocks_ = n;
  observer->num_layers_ = options.num_layers;
  observer->workers_ = options.workers;
  for (int b = 0; b < n; ++b) observer->layers_of_block_.push_back(layout.Layers(b));
  observer->block_steps_ = std::make_unique<std::atomic<int64_t>[]>(n);
  for (int b = 0; b < n; ++b) observer->block_steps_[b].store(0);

  common::CoordinatorMetrics::Options mo;
  mo.num_blocks = n;
  mo.workers = options.workers;
  mo.model = options.model;
  ASSIGN_OR_RETURN(observer->metrics_, common::CoordinatorMetrics::Create(mo));
  // Nothing served yet: every block uncovered, every worker down, not ready.
  for (int b = 0; b < n; ++b) observer->metrics_->SetBlockReplicas(b, 0);
  for (const std::string& w : options.workers) observer->metrics_->SetWorkerUp(w, false);
  observer->metrics_->SetReady(false);
  observer->metrics_->SetBlockLoads(std::vector<double>(n, 0.0));

  common::MetricsServer::Options so;
  so.listen = options.listen;
  so.registry = observer->metrics_->registry();
  so.auth_tokens_file = options.auth_tokens_file;
  so.log_name = "swarm-coordinator";
  ASSIGN_OR_RETURN(observer->server_, common::MetricsServer::Start(so));
  return observer;
}

CoordinatorMetricsObserver::~CoordinatorMetricsObserver() {
  if (server_) server_->Stop();
}

void CoordinatorMetricsObserver::OnRequestStart(absl::string_view mode) {
  metrics_->OnRequestStart(mode);
}

void CoordinatorMetricsObserver::OnRequestRefused(absl::string_view mode, absl::StatusCode code) {
  metrics_->OnRequestRefused(mode, code);
}

void CoordinatorMetricsObserver::OnRequestDone(absl::string_view mode, absl::StatusCode code,
                                               int64_t prompt_tokens, int64_t generated_tokens,
                                               double seconds, double ttft_seconds) {
  metrics_->OnRequestDone(mode, code, prompt_tokens, generated_tokens, seconds, ttft_seconds);
}

void CoordinatorMetricsObserver::OnInterToken(absl::string_view mode, double seconds) {
  metrics_->OnInterToken(mode, seconds);
}

void CoordinatorMetricsObserver::OnWorkerStep(absl::string_view worker, double seconds,
                                              absl::StatusCode code) {
  metrics_->OnWorkerStep(worker, seconds, code);
}

void CoordinatorMetricsObserver::SetWorkerUp(absl::string_view worker, bool up) {
  metrics_->SetWorkerUp(worker, up);
}

void CoordinatorMetricsObserver::SetReady(bool ready) { metrics_->SetReady(ready); }

void CoordinatorMetricsObserver::OnBlocksChosen(absl::string_view mode,
                                                const std::vector<int>& blocks,
                                                const std::vector<double>& router_tolls) {
  if (mode == "sparse") metrics_->OnBlocksSelected(blocks);
  if (!router_tolls.empty()) metrics_->SetTolls(router_tolls);
}

void CoordinatorMetricsObserver::OnBalanceWindow(const BalanceWindow& window) {
  metrics_->OnBalanceWindow(window.requests, window.gap, window.gap_toll_free, window.worker_jain,
                            window.worker_max_mean);
}

void CoordinatorMetricsObserver::OnStep(const std::vector<int>& blocks) {
  for (int b : blocks) {
    if (b >= 0 && b < num_blocks_) block_steps_[b].fetch_add(1, std::memory_order_relaxed);
  }
  metrics_->OnBlockSteps(blocks, 1);
  PublishLoads();
}

void CoordinatorMetricsObserver::PublishLoads() {
  std::vector<double> loads(num_blocks_);
  for (int b = 0; b < num_blocks_; ++b) {
    loads[b] = static_cast<double>(block_steps_[b].load(std::memory_order_relaxed));
  }
  metrics_->SetBlockLoads(loads);
}

void CoordinatorMetricsObserver::OnWorkers(const std::vector<WorkerState>& workers) {
  // A block's replicas: the fewest usable workers hosting any one of its layers (a block split
  // over two workers counts once; 0 = some layer of it is uncovered).
  std::vector<int> per_layer(num_layers_, 0);
  for (const WorkerState& w : workers) {
    if (!w.usable()) continue;
    for (int l : w.info.layers()) {
      if (l >= 0 && l < static_cast<int>(per_layer.size())) ++per_layer[l];
    }
  }
  for (int b = 0; b < num_blocks_; ++b) {
    int replicas = -1;
    for (int l : layers_of_block_[b]) {
      replicas = replicas < 0 ? per_layer[l] : std::min(replicas, per_layer[l]);
    }
    metrics_->SetBlockReplicas(b, std::max(replicas, 0));
  }
}

void CoordinatorMetricsObserver::OnBatchStep(int sequences, int64_t tokens) {
  metrics_->OnBatchStep(sequences, tokens);
}

void CoordinatorMetricsObserver::OnAdmitted(absl::Duration queued) {
  metrics_->OnQueued(absl::ToDoubleSeconds(queued));
}

void CoordinatorMetricsObserver::OnSchedulerState(int running, int waiting) {
  metrics_->SetSchedulerState(running, waiting);
}

void CoordinatorMetricsObserver::OnWorkerBusy(int worker, absl::Duration busy) {
  const bool known = worker >= 0 && worker < static_cast<int>(workers_.size());
  metrics_->OnWorkerBusy(known ? absl::string_view(workers_[worker]) : "other",
                         absl::ToDoubleSeconds(busy));
}

void CoordinatorMetricsObserver::OnFailover(absl::string_view reason, absl::string_view worker) {
  metrics_->OnFailover(reason, worker);
}

void CoordinatorMetricsObserver::OnReplay(int64_t positions, int64_t bytes, double seconds) {
  metrics_->OnReplay(positions, bytes, seconds);
}

void CoordinatorMetricsObserver::OnReplayHistory(int64_t bytes) {
  metrics_->SetReplayHistoryBytes(bytes);
}

}  // namespace swarm::coordinator
