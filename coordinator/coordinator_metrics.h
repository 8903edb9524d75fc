// Prometheus metrics of swarm-coordinator: a CoordinatorObserver (coordinator_observer.h) that
// feeds common::CoordinatorMetrics, plus the `--metrics-listen` server that serves them.
// coordinator_main.cc creates one per process when the flag is given; tests create them
// in-process.
//
// Blocks: the per-block series count blocks of a `num_blocks`-way split of the model's layers
// (BlockLayout): the coordinator's block layout (CoordinatorModel::block_layout(): the router's
// split when the coordinator has a router file, otherwise one block per layer), whose block
// indices the observer hooks carry. A step counts once on every block it ran at least one layer
// of (exact mode: every block), so Σ block_steps_total = blocks × steps in exact mode. The share,
// Jain and max/mean gauges are computed from those step counts since start-up. With `--balance`
// (admission_balance.h) the toll gauges are the load tolls each routed request saw, and each
// balancing window sets the equilibrium-gap, toll-free-gap and worker-busy gauges and counts the
// window; without it the tolls and the gap stay 0 (requests get the toll-free choice).
//
// Threading: observer methods run on request, gRPC and monitor threads and are thread-safe; the
// per-step path is atomic adds plus O(blocks) gauge sets.
#ifndef SWARM_COORDINATOR_COORDINATOR_METRICS_H_
#define SWARM_COORDINATOR_COORDINATOR_METRICS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/block_layout.h"
#include "common/metrics.h"
#include "common/metrics_server.h"
#include "coordinator/coordinator_observer.h"
#include "coordinator/worker_set.h"

namespace swarm::coordinator {

class CoordinatorMetricsObserver : public CoordinatorObserver {
 public:
  struct Options {
    std::string listen;                // HOST:PORT for /metrics (port 0 picks one).
    int num_layers = 0;                // The model's layers (> 0).
    int num_blocks = 0;                // Blocks of the split, 1..num_layers; 0 = num_layers.
    std::vector<std::string> workers;  // As given to --workers.
    std::string model;
    // --metrics-auth-tokens: /metrics only for these bearer tokens (MetricsServer::Options).
    std::string auth_tokens_file;
  };
  // Creates the metric set and starts serving /metrics. InvalidArgument for a bad address,
  // block count or tokens file, Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<CoordinatorMetricsObserver>> Start(const Options& options);
  ~CoordinatorMetricsObserver() override;

  std::string address() const { return server_->address(); }  // "HOST:PORT" actually bound.
  common::CoordinatorMetrics& metrics() { return *metrics_; }
  int num_blocks() const { return num_blocks_; }
  void Stop() { server_->Stop(); }  // Stops serving /metrics; idempotent.

  void OnRequestStart(absl::string_view mode) override;
  void OnRequestRefused(absl::string_view mode, absl::StatusCode code) override;
  void OnRequestDone(absl::string_view mode, absl::StatusCode code, int64_t prompt_tokens,
                     int64_t generated_tokens, double seconds, double ttft_seconds) override;
  void OnInterToken(absl::string_view mode, double seconds) override;
  void OnWorkerStep(absl::string_view worker, double seconds, absl::StatusCode code) override;
  void SetWorkerUp(absl::string_view worker, bool up) override;
  void SetReady(bool ready) override;
  void OnBlocksChosen(absl::string_view mode, const std::vector<int>& blocks,
                      const std::vector<double>& router_tolls) override;
  void OnStep(const std::vector<int>& blocks) override;
  void OnWorkers(const std::vector<WorkerState>& workers) override;
  void OnBalanceWindow(const BalanceWindow& window) override;
  void OnBatchStep(int sequences, int64_t tokens) override;
  void OnAdmitted(absl::Duration queued) override;
  void OnSchedulerState(int running, int waiting) override;
  // `worker` indexes Options::workers (the WorkerSet's order); others count under "other".
  void OnWorkerBusy(int worker, absl::Duration busy) override;
  void OnFailover(absl::string_view reason, absl::string_view worker) override;
  void OnReplay(int64_t positions, int64_t bytes, double seconds) override;
  void OnReplayHistory(int64_t bytes) override;

 private:
  CoordinatorMetricsObserver() = default;
  void PublishLoads();

  int num_blocks_ = 0;
  int num_layers_ = 0;
  std::vector<std::string> workers_;  // Options::workers: WorkerSet index → address.
  std::vector<std::vector<int>> layers_of_block_;
  std::unique_ptr<std::atomic<int64_t>[]> block_steps_;  // [num_blocks_]
  std::unique_ptr<common::CoordinatorMetrics> metrics_;
  std::unique_ptr<common::MetricsServer> server_;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_COORDINATOR_METRICS_H_
