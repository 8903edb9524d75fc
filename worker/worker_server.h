// swarm-worker's server: WorkerService (proto/swarm/v1/worker.proto) over a Worker, with
// grpc.health.v1 (NOT_SERVING until the layers are loaded, and again once draining) and
// reflection. Used by worker_main.cc and by tests, which run it in-process on 127.0.0.1:0.
//
// Threading: handlers run on gRPC's callback threads and only do cheap work there (Info, session
// bookkeeping, and Forward steps or batches small enough to take well under a millisecond); every
// other step or batch
// is handed to an owned, bounded compute pool, so a slow step never holds a gRPC thread. A reaper
// thread owned by the server closes idle sessions and those whose lease expired; Shutdown() stops
// the server, then joins the pool and the reaper. All methods are thread-safe.
#ifndef SWARM_WORKER_WORKER_SERVER_H_
#define SWARM_WORKER_WORKER_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/memory_limits.h"
#include "model/checkpoint.h"
#include "model/layer_host.h"
#include "model/weights.h"
#include "rpc/security.h"
#include "worker/block_residency.h"
#include "worker/worker.h"

namespace grpc {
class Server;
}

namespace swarm {
class ThreadPool;
}

namespace swarm::worker {

// Hook points for metrics (a later component wires them to Prometheus). Called on request and
// reaper threads; implementations must be thread-safe and cheap. Every method has a no-op default.
class WorkerObserver {
 public:
  virtual ~WorkerObserver() = default;
  // Once per Forward or ForwardStream call, when it finishes with `code`: a step over `layers`
  // (as the request lists them), `positions` positions, `seconds` of compute. Calls refused
  // before the worker ran the step (still loading, compute pool full, deadline passed while
  // queued, malformed tensor) come here too, with `seconds` = 0. A ForwardBatch or
  // ForwardBatchStream call that went through reports each of its steps here, as a Forward of
  // that step's positions with its own code (`seconds`: the batch's compute time); a batch call
  // that failed as a whole goes to OnError as "ForwardBatch" instead.
  virtual void OnForward(absl::Span<const int> /*layers*/, int64_t /*positions*/,
                         double /*seconds*/, absl::StatusCode /*code*/) {}
  // A failed call other than Forward ("OpenSession", "CloseSession", "Prefetch", "ForwardBatch"),
  // refusals included.
  virtual void OnError(absl::string_view /*method*/, absl::StatusCode /*code*/) {}
  // Each pass through the layers (a Forward that computed, or a ForwardBatch): the steps and
  // rows it computed (WorkerListener::on_batch).
  virtual void OnBatch(int /*sequences*/, int64_t /*rows*/) {}
  // Busy time accrued: wall time during which at least one pass computed
  // (WorkerListener::on_busy; its rate is the worker's busy fraction).
  virtual void OnBusy(double /*seconds*/) {}
  // True once the layers are loaded; false again once draining (StartDraining).
  virtual void SetReady(bool /*ready*/) {}
  // True once the worker drains (StartDraining).
  virtual void SetDraining(bool /*draining*/) {}
  // The session table and the KV budget in force; after Load() and every reap interval.
  virtual void SetSessions(const WorkerStats& /*stats*/, int64_t /*kv_budget_bytes*/) {}
  // A session the worker closed on its own: "idle_ttl" (unused past SessionLimits::idle_ttl) or
  // "lease" (its lease was not renewed within SessionLimits::lease). Over the KV budget or the
  // session limit the worker refuses new sessions and growth, it never evicts one.
  virtual void OnSessionEvicted(absl::string_view /*reason*/) {}
  // Weight residency (--memory-budget): a residency unit loaded on demand or by Prefetch, a unit
  // evicted, the units and weight bytes resident after a load, and a unit use that found it
  // resident. Named after the metrics they feed (swarm_worker_block_*, a contract).
  virtual void OnBlockLoad(double /*seconds*/) {}
  virtual void OnBlockEviction() {}
  virtual void SetBlocksResident(int /*blocks*/, int64_t /*bytes*/) {}
  virtual void OnBlockHit() {}
  // Bytes held by ForwardStream and ForwardBatchStream calls whose request is still arriving
  // changed by `delta` (reserved when the first piece names the tensor's shape, released when
  // the request is complete or the call ends early, the arrival deadline included).
  virtual void OnStreamBuffered(int64_t /*delta_bytes*/) {}
};

struct WorkerServerOptions {
  std::string model_dir;
  std::vector<int> layers;  // Sorted, unique, each < the model's layer count.
  model::LoadOptions load;
  SessionLimits limits;
  // When > 0, Load() replaces limits.kv_budget_bytes by this fraction of the memory still
  // available once the layers are loaded (so the weights are already counted): MemAvailable
  // bounded by the memory cgroup's limit minus its usage, read from `memory_files`
  // (common/memory_limits.h). Load() fails when they cannot be read or the budget would not hold
  // one position. swarm-worker on cpu without --kv-budget uses 0.5.
  double kv_budget_memory_fraction = 0;
  MemoryFiles memory_files;
  // Weight residency (block_residency.h): > 0 keeps only the residency units of `block_layers`
  // (--block-layers) consecutive hosted layers that fit this many weight bytes resident and loads
  // the others on demand. 0 = every hosted layer resident (one LayerHost). Load() fails when the
  // largest unit exceeds it.
  int64_t memory_budget_bytes = 0;
  int block_layers = 1;
  std::string listen = "127.0.0.1:0";
  // TLS (mutual with a CA: callers need a certificate from it) and --insecure (rpc/security.h).
  rpc::ServerSecurity security;
  int compute_threads = 2;     // Steps computed at once.
  int max_queued_steps = 256;  // Steps waiting beyond that: RESOURCE_EXHAUSTED.
  // Rows a ForwardBatchStream call may carry at most (never fewer than the model's context): the
  // bound on the memory one streamed batch reserves when its first piece arrives. Larger ones are
  // INVALID_ARGUMENT. (A unary ForwardBatch is bounded by the message limit.)
  int64_t max_batch_rows = 16384;
  // Steps touching at most this many weight bytes (positions x hosted weight bytes) run on the
  // gRPC thread that received them instead of the pool: a thread hand-off would cost about as
  // much as the step. 0 sends every step to the pool.
  int64_t max_inline_step_bytes = int64_t{8} << 20;
  // Server-side cap on a step's deadline (a step without a deadline gets this one); a step whose
  // deadline has passed when a compute thread picks it up is not run.
  absl::Duration max_step_time = absl::Minutes(2);
  // A ForwardStream or ForwardBatchStream call whose request has not fully arrived this long
  // after its first piece is ended with DEADLINE_EXCEEDED and its buffer freed: a sender cannot
  // hold the memory a stream reserves by never sending its last piece. Zero or less: no limit
  // (the step's deadline above still applies).
  absl::Duration max_arrival_time = absl::Seconds(30);
  absl::Duration reap_interval = absl::Seconds(1);
  // --emulate-layer-time (worker/emulated_time.h): > 0 holds each pass this long per layer and
  // row it computed, one pass at a time, and runs every step on the pool. Benchmarks and tests.
  absl::Duration emulated_layer_time = absl::ZeroDuration();
  WorkerObserver* observer = nullptr;  // Not owned; must outlive the server.
};

class WorkerServiceImpl;

class WorkerServer {
 public:
  // Opens the checkpoint (config and tensor index only), checks the layers, and starts serving:
  // Info answers at once, health says NOT_SERVING and Forward UNAVAILABLE until Load().
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerServerOptions& options);
  ~WorkerServer();  // Shutdown().

  // "host:port" actually bound.
  const std::string& address() const { return address_; }
  const model::Checkpoint& checkpoint() const { return *checkpoint_; }
  const WorkerServerOptions& options() const { return options_; }

  // Loads the hosted layers onto the device (blocking; call once), sizes the KV budget when
  // kv_budget_memory_fraction > 0, then reports SERVING (unless draining already). Errors name
  // the tensor, device or memory file at fault; Info then carries the error.
  absl::Status Load();
  // The KV budget in force: limits.kv_budget_bytes, or the one Load() sized. 0 = unlimited.
  int64_t kv_budget_bytes() const;

  // Stops taking new work while the sessions already open keep working: Info says ready =
  // false and draining = true (so a coordinator's poll stops routing new requests here), health
  // says NOT_SERVING, OpenSession and Prefetch answer UNAVAILABLE; Forward and CloseSession are
  // served as before. Shutdown() starts with it. Idempotent; there is no way back.
  void StartDraining();
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  // How WaitForSessionsToEnd ended.
  enum class DrainEnd { kNoSessions, kGraceExpired, kInterrupted };
  // Blocks until the worker holds no session — their requests ended, their coordinators moved
  // them to other workers, or stopped renewing their leases (SessionLimits::lease) — or until
  // `grace` passes, or until `wait` returns true. `wait(d)` is called between checks to wait up
  // to d (at most 50 ms; null: sleep); true means stop waiting now (swarm-worker: a second
  // signal). For a draining worker before Shutdown(), so that requests under way end instead of
  // failing mid-generation.
  DrainEnd WaitForSessionsToEnd(absl::Duration grace,
                                const std::function<bool(absl::Duration)>& wait = nullptr);
  // Null until Load() succeeded.
  Worker* worker() const { return worker_ptr_.load(std::memory_order_acquire); }
  // The worker's host when memory_budget_bytes > 0 and Load() succeeded; null otherwise.
  const ResidentLayerHost* resident_host() const {
    return worker() != nullptr ? resident_host_ : nullptr;
  }

  // Drains (StartDraining), waits up to `grace` for the steps running or queued on the compute
  // pool, then stops accepting calls and joins every thread. Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  friend class WorkerServiceImpl;
  WorkerServer() = default;
  void ReapLoop();
  // kv_budget_memory_fraction of the memory available now (after `host` loaded); `note` says how
  // it was found, for the log. An error when the memory cannot be read or the budget would not
  // hold one position.
  absl::StatusOr<int64_t> SizeKvBudget(const model::LayerHost& host, std::string* note) const;

  WorkerServerOptions options_;
  WorkerObserver default_observer_;
  WorkerObserver* observer_ = &default_observer_;
  std::shared_ptr<const model::Checkpoint> checkpoint_;
  std::string address_;
  std::vector<std::string> health_names_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<WorkerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;

  std::unique_ptr<Worker> worker_;  // Set once by Load().
  std::atomic<Worker*> worker_ptr_{nullptr};
  const ResidentLayerHost* resident_host_ = nullptr;  // Set by Load() before worker_ptr_.

  // Written under mu_, like health and the observer's readiness, so that a Load() finishing
  // while StartDraining() runs cannot report SERVING after it; read without it.
  std::atomic<bool> draining_{false};

  absl::Mutex mu_;
  std::string load_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reaper_;
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_WORKER_SERVER_H_
