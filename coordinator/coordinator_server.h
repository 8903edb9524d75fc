// swarm-coordinator's server: the process-level object that holds the model's coordinator side
// (CoordinatorModel), the workers (WorkerSet), the generation pipeline (pipeline.h) and the
// gRPC server carrying CoordinatorService (coordinator_service.h, a thin adapter over this
// class's plain methods) with grpc.health.v1 and reflection. It learns what each worker hosts
// through Info, and serves once the usable workers cover every layer with the same model
// fingerprint; until then it keeps retrying with backoff, logging why it cannot serve, and health
// says NOT_SERVING.
//
// Threading: gRPC handlers run on gRPC's callback threads and never block there: a Generate call
// runs the pipeline on an owned, bounded request pool (Schedule; RESOURCE_EXHAUSTED beyond it),
// Status refreshes the workers asynchronously (ReportAsync). A monitor thread owned by the server
// polls the workers; a lease thread renews the sessions the requests hold on them. Shutdown()
// stops the server (cancelling running requests, which close their worker sessions), then joins
// the pool, the monitor and the lease thread. All methods are thread-safe.
#ifndef SWARM_COORDINATOR_COORDINATOR_SERVER_H_
#define SWARM_COORDINATOR_COORDINATOR_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "coordinator/auth.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/coordinator_observer.h"
#include "coordinator/pipeline.h"
#include "coordinator/scheduler_stats.h"
#include "coordinator/worker_set.h"
#include "model/model.h"
#include "rpc/security.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace swarm {
class ThreadPool;
}

namespace swarm::coordinator {

struct CoordinatorOptions {
  std::string model_dir;
  std::vector<std::string> workers;  // "host:port" each.
  std::string listen = "127.0.0.1:0";
  // The server's TLS and --insecure (rpc/security.h); the same files are the coordinator's
  // identity towards the workers (mutual TLS), whose certificates must chain to security.tls.ca.
  // With auth_tokens_file the coordinator's own clients need no certificate.
  rpc::ServerSecurity security;
  // --auth-tokens: clients must send a bearer token from this file (coordinator/auth.h);
  // "" = no client authentication.
  std::string auth_tokens_file;
  int max_requests_per_token = 8;  // Running or queued at once, per token.
  // A prompt of more bytes is refused before tokenizing; 0 = PipelineOptions' default.
  int64_t max_prompt_bytes = 0;
  std::string device = "cpu";        // Where the embeddings and the head run.
  int max_concurrent_requests = 64;  // Requests generating at once (= max_batch_sequences).
  int max_queued_requests = 64;      // Waiting beyond that: RESOURCE_EXHAUSTED.
  // The scheduler (scheduler.h): rows and sequences per micro-batch (max_batch_sequences also caps
  // the requests in the batch at once), requests waiting for admission, micro-batches in flight
  // (0 = one per worker machine: DefaultMicroBatches in scheduler.h).
  int64_t max_batch_tokens = 512;
  int max_batch_sequences = 64;
  int max_waiting_requests = 64;
  int max_micro_batches = 0;
  // Cap on a request's deadline (a call without one gets this one).
  absl::Duration max_request_time = absl::Minutes(10);
  absl::Duration step_timeout = absl::Seconds(60);  // One Forward.
  FailoverOptions failover;  // Replay history, fail-over, step deadlines (scheduler.h).
  // Tokens decoded faster than this are streamed together (one message per interval at most).
  absl::Duration stream_interval = absl::Milliseconds(5);
  absl::Duration control_timeout = absl::Seconds(5);     // Info, Open/CloseSession.
  absl::Duration poll_interval = absl::Seconds(5);       // Worker polling while serving.
  absl::Duration min_backoff = absl::Milliseconds(100);  // Retry delays while not serving.
  absl::Duration max_backoff = absl::Seconds(5);
  CoordinatorObserver* observer = nullptr;  // Not owned; must outlive the server.
  // A router file (`swarm calibrate`) for sparse mode and Predict; "" = none (sparse requests
  // then need an explicit plan).
  std::string router_path;
  // When > 0, the router file must have been calibrated for this many blocks (else Start fails
  // with FailedPrecondition naming the file and both N).
  int router_num_blocks = 0;
  // The day chat templates' strftime_now() renders (--date / SWARM_DATE); nullopt: the clock.
  std::optional<absl::CivilDay> render_date;
  // --balance and its knobs (admission_balance.h); off by default. The busy fractions come from
  // the server's SchedulerStats.
  BalanceOptions balance;
  bool fuse_hops = true;  // --no-fuse-hops turns it off (hop_fusion.h).
};

// What Status reports: the serving state, the model and the workers as last refreshed.
struct ServingReport {
  bool serving = false;
  std::string reason;  // Why not, when not serving.
  int active_requests = 0;
  uint64_t requests_total = 0;
  std::string router_path;  // "" = none.
  std::vector<WorkerState> workers;
  // The scheduler's recent figures (SchedulerStats, fed by its observer hooks); worker busy
  // fractions follow `workers`' order (the WorkerSet's).
  SchedulerStats::Snapshot scheduler;
};

class CoordinatorServer {
 public:
  // Loads the model's coordinator side (CoordinatorModel::Load with options.model_dir, device,
  // router_path and router_num_blocks), starts the gRPC server (NOT_SERVING) and the monitor
  // thread. Errors: the model, router file, tokens file or TLS files cannot be loaded, the
  // address cannot be bound (or is not loopback without TLS or --insecure), a bad worker address.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      const CoordinatorOptions& options);
  // The same over a model already loaded from options.model_dir/router_path (swarm-coordinator
  // loads it first, to size the metrics from its block layout).
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      const CoordinatorOptions& options, std::unique_ptr<CoordinatorModel> model);
  ~CoordinatorServer();  // Shutdown().

  const std::string& address() const { return address_; }
  const CoordinatorOptions& options() const { return options_; }
  const model::ModelConfig& config() const { return model_->config(); }
  const CoordinatorModel& model() const { return *model_; }
  bool serving() const { return serving_.load(); }
  WorkerSet& workers() { return *workers_; }
  GenerationPipeline& pipeline() { return *pipeline_; }
  // The observer the pipeline (and the scheduler) report to: SchedulerStats (what Status shows)
  // in front of options.observer.
  CoordinatorObserver* observer() const { return observer_; }
  // Null when clients need no token.
  TokenAuth* auth() const { return auth_.get(); }

  // Runs `fn` on the bounded request pool. UNAVAILABLE while shutting down, RESOURCE_EXHAUSTED
  // when the pool is full (`fn` is then dropped). Never blocks.
  absl::Status Schedule(std::function<void()> fn);
  // Refreshes every worker's Info asynchronously, updates the serving state, then calls `done`
  // with the report (on a gRPC thread). Never blocks.
  void ReportAsync(std::function<void(const ServingReport&)> done);

  // Waits until serving; DeadlineExceeded with the reason it is not after `timeout`.
  absl::Status WaitUntilServing(absl::Duration timeout);

  // Stops accepting calls, cancels running ones after `grace`, joins every thread. Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  CoordinatorServer() = default;
  void MonitorLoop();
  // Renews the leases of the sessions the requests hold on the workers (WorkerSet::RenewLeases)
  // every third of the shortest lease, until Shutdown.
  void LeaseLoop();
  bool stopping() {
    absl::MutexLock lock(&mu_);
    return stopping_;
  }
  void UpdateServing();
  ServingReport Report();

  CoordinatorOptions options_;
  // observer_ is stats_, which forwards every hook to options.observer (if any).
  std::unique_ptr<SchedulerStats> stats_;
  CoordinatorObserver* observer_ = nullptr;
  std::unique_ptr<CoordinatorModel> model_;
  std::unique_ptr<WorkerSet> workers_;
  std::unique_ptr<GenerationPipeline> pipeline_;
  std::unique_ptr<TokenAuth> auth_;
  std::string address_;
  std::vector<std::string> health_names_;
  std::unique_ptr<ThreadPool> pool_;  // The requests.
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<grpc::Server> server_;

  std::atomic<bool> serving_{false};

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::string not_serving_reason_ ABSL_GUARDED_BY(mu_) = "workers not contacted yet";
  std::thread monitor_;
  std::thread leases_;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_COORDINATOR_SERVER_H_
