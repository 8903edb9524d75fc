// Prometheus metrics of swarm-worker: a WorkerObserver (worker_server.h) that feeds
// common::WorkerMetrics, plus the `--metrics-listen` server that serves them. worker_main.cc
// creates one per process when the flag is given; tests create them in-process.
//
// Threading: the observer methods are called on gRPC, compute-pool and reaper threads; they only
// do atomic metric updates and are thread-safe. Start/Stop on one thread (main).
#ifndef SWARM_WORKER_WORKER_METRICS_H_
#define SWARM_WORKER_WORKER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/metrics.h"
#include "common/metrics_server.h"
#include "worker/worker_server.h"

namespace prometheus {
class Counter;
class Gauge;
}  // namespace prometheus

namespace swarm::worker {

class WorkerMetricsObserver : public WorkerObserver {
 public:
  struct Options {
    std::string listen;  // HOST:PORT for /metrics (port 0 picks one).
    std::vector<int> layers;
    std::string model;
    std::string device = "cpu";
    std::string dtype = "f32";
    int64_t kv_budget_bytes = 0;  // Until the server reports the budget in force (SetSessions).
    // --metrics-auth-tokens: /metrics only for these bearer tokens (MetricsServer::Options).
    std::string auth_tokens_file;
  };
  // Creates the metric set and starts serving /metrics. InvalidArgument for a bad address,
  // layer set or tokens file, Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<WorkerMetricsObserver>> Start(const Options& options);
  ~WorkerMetricsObserver() override;

  // "HOST:PORT" actually bound.
  std::string address() const { return server_->address(); }
  common::WorkerMetrics& metrics() { return *metrics_; }
  // Stops the /metrics server (idempotent); the observer methods keep working.
  void Stop() { server_->Stop(); }

  void OnForward(absl::Span<const int> layers, int64_t positions, double seconds,
                 absl::StatusCode code) override;
  void OnError(absl::string_view method, absl::StatusCode code) override;
  void SetReady(bool ready) override;
  void SetDraining(bool draining) override;
  void SetSessions(const WorkerStats& stats, int64_t kv_budget_bytes) override;
  void OnSessionEvicted(absl::string_view reason) override;
  void OnBlockLoad(double seconds) override;
  void OnBlockEviction() override;
  void SetBlocksResident(int blocks, int64_t bytes) override;
  void OnBlockHit() override;
  void OnBatch(int sequences, int64_t rows) override;
  void OnBusy(double seconds) override;
  void OnStreamBuffered(int64_t delta_bytes) override;

 private:
  WorkerMetricsObserver() = default;
  std::unique_ptr<common::WorkerMetrics> metrics_;
  std::unique_ptr<common::MetricsServer> server_;
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_WORKER_METRICS_H_
