// The worker's session logic, independent of gRPC: a LayerHost (the layers this process hosts)
// plus one KvCache per session, with the step rules of proto/swarm/v1/worker.proto (step ids,
// start positions, duplicate steps), a session limit, an idle TTL and a KV memory budget.
// WorkerServer (worker_server.h) puts it behind WorkerService; tests drive it directly too.
//
// Forward runs one session's step; ForwardBatch runs steps of several sessions in one pass through
// the layers (continuous batching). Both go through one implementation of the step rules: a
// Forward is a batch of one.
//
// Threading: every method is thread-safe. Calls over different sessions run concurrently (the
// LayerHost is const); steps of one session are serialised by the session's own mutex, and a
// batch holds the mutexes of all its sessions while it runs. Lock order: session mutexes in
// increasing session id order (so two batches sharing sessions cannot deadlock), then the
// table's (mu_), then busy_mu_.
#ifndef SWARM_WORKER_WORKER_H_
#define SWARM_WORKER_WORKER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/host_tensor.h"
#include "model/kv_cache.h"
#include "model/layer_host.h"

namespace swarm::worker {

struct SessionLimits {
  int max_sessions = 64;  // Open sessions at once.
  // Open sessions at once per client (OpenSession's `client`); 0 = only max_sessions. Keeps one
  // caller from locking the others out of the session table.
  int max_sessions_per_client = 0;
  absl::Duration idle_ttl = absl::Minutes(5);  // A session unused this long is closed.
  // A session whose lease was not renewed (opening, a step, RenewSessions) this long is closed:
  // its coordinator died or lost this worker. Zero = no lease (only idle_ttl).
  absl::Duration lease = absl::Seconds(10);
  int64_t kv_budget_bytes = 0;                        // Reserved KV bytes at most; 0 = unlimited.
  int64_t max_cached_reply_bytes = int64_t{1} << 20;  // See StepResult::replayed.
};

struct StepRequest {
  std::string session_id;
  uint64_t step_id = 0;
  int64_t start_position = 0;
  std::vector<int> layers;
  // ForwardRequest.gate: the reply is h + gate·(layers(h) − h), through model::GateResidual.
  float gate = 1.0f;
};

struct StepResult {
  HostTensor hidden;
  int64_t length = 0;     // Positions the step's layers hold afterwards.
  bool replayed = false;  // The cached reply of a duplicated step, not a new computation.
};

// One session's step inside a batch (Worker::ForwardBatch): `positions` consecutive rows of the
// batch's hidden state, holding positions start_position .. start_position + positions - 1.
struct BatchStepRequest {
  std::string session_id;
  uint64_t step_id = 0;
  int64_t start_position = 0;
  int64_t positions = 0;
  float gate = 1.0f;  // As StepRequest::gate (ForwardBatch on the wire carries none: 1).
};

struct BatchRequest {
  std::vector<BatchStepRequest> steps;
  std::vector<int> layers;  // Run for every step.
};

struct BatchStepOutcome {
  absl::Status status;    // This step's own status (the rules and codes of worker.proto).
  int64_t length = 0;     // As StepResult::length, when OK.
  bool replayed = false;  // As StepResult::replayed.
};

struct BatchResult {
  // [sum of positions, hidden_size] in the request's dtype: each step's reply rows, in order; the
  // rows of a failed step are zeros.
  HostTensor hidden;
  std::vector<BatchStepOutcome> steps;  // One per request step, in order.
  // What went through the layers: the steps that passed their checks (neither failed before
  // computing nor replayed) and their rows; 0 when nothing ran.
  int sequences_computed = 0;
  int64_t rows_computed = 0;
};

struct WorkerStats {
  int sessions = 0;
  int64_t kv_reserved_bytes = 0;
  int64_t kv_used_bytes = 0;
  int inflight_steps = 0;
  uint64_t steps_total = 0;
  uint64_t tokens_total = 0;
  uint64_t sessions_reaped_total = 0;  // Idle-TTL and lease expiries together.
  uint64_t leases_expired_total = 0;
  // Passes through the layers (a Forward that computed counts one, a ForwardBatch one however
  // many steps it carries), and the rows and steps they computed.
  uint64_t batches_total = 0;
  uint64_t batch_rows_total = 0;
  uint64_t batch_sequences_total = 0;
  // Wall time during which at least one pass was computing, so that its rate is the fraction of
  // time the worker is busy (0..1, however many compute threads overlap).
  double busy_seconds = 0;
  absl::Time last_session_use = absl::InfinitePast();  // Latest open or step of an open session.
};

// What a Worker reports as it computes (WorkerServer feeds it to its WorkerObserver). Called on the
// computing thread with the pass's sessions locked: must be cheap, thread-safe, and must not call
// back into the Worker. Unset members are not called.
struct WorkerListener {
  // After each pass through the layers: the steps and rows it computed.
  std::function<void(int sequences, int64_t rows)> on_batch;
  // Busy time accrued since the last call (the increments add up to WorkerStats::busy_seconds);
  // called as each pass ends.
  std::function<void(double seconds)> on_busy;
};

class Worker {
 public:
  Worker(std::unique_ptr<model::LayerHost> host, SessionLimits limits,
         WorkerListener listener = {});
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const model::LayerHost& host() const { return *host_; }
  const SessionLimits& limits() const { return limits_; }

  // Opens a session that will hold at most `max_length` positions (0 or more than the context:
  // the context) and reserves their KV bytes, for `client` (who asks: a certificate's name or a
  // peer address; counted against max_sessions_per_client). Returns its id. ResourceExhausted
  // when the session limit (overall or the client's) is reached or the reservation does not fit
  // the budget.
  absl::StatusOr<std::string> OpenSession(int64_t max_length, const std::string& client = "");
  // Frees the session. NotFound for an unknown id. A step of that session already running
  // finishes; later ones get NotFound.
  absl::Status CloseSession(const std::string& session_id);

  // Runs one step (the rules and codes are in worker.proto). `hidden` is consumed. The same as a
  // ForwardBatch of this one step, its status the call's.
  absl::StatusOr<StepResult> Forward(const StepRequest& request, HostTensor hidden);

  // Runs the steps of several sessions through `request.layers` in one LayerHost::ForwardBatch
  // call. `hidden` [sum of positions, hidden_size] holds the steps' rows in order; it is consumed.
  // Each step follows the rules of Forward on its own and gets its own status in the result:
  // NotFound (unknown or closed session), InvalidArgument (step_id 0, non-finite gate),
  // AlreadyExists (an applied step that is not the last one with the same contents), OutOfRange
  // (past the context), FailedPrecondition (a layer does not hold start_position positions),
  // ResourceExhausted (the KV budget); a duplicate of a session's last step gets the cached reply
  // (replayed) and is not computed again. A failing step never fails the others. Errors of the
  // whole call (InvalidArgument): no steps, more steps than the session limit, a bad layer list,
  // hidden not [T, hidden_size] with T >= 1, a step bringing fewer than 1 position, positions that
  // do not add up to T, a session listed twice.
  absl::StatusOr<BatchResult> ForwardBatch(const BatchRequest& request, HostTensor hidden);

  // Renews the leases of the listed sessions (SessionLimits::lease); returns the ids not held
  // here (unknown, closed or reaped), in the order given.
  std::vector<std::string> RenewSessions(const std::vector<std::string>& session_ids);

  // What ReapIdle closed, by reason.
  struct Reaped {
    int idle = 0;   // Unused since now - idle_ttl.
    int lease = 0;  // Not renewed since now - lease (and not idle past the TTL).
    int total() const { return idle + lease; }
  };
  // Closes the sessions not running a step that are unused since `now - idle_ttl` or not renewed
  // since `now - lease`.
  Reaped ReapIdle(absl::Time now);

  WorkerStats Stats() const;

 private:
  struct Session {
    explicit Session(std::string id_in) : id(std::move(id_in)) {}
    const std::string id;
    absl::Mutex mu;
    std::unique_ptr<model::KvCache> cache ABSL_GUARDED_BY(mu);
    uint64_t last_step_id ABSL_GUARDED_BY(mu) = 0;
    int64_t last_start ABSL_GUARDED_BY(mu) = -1;
    int64_t last_positions ABSL_GUARDED_BY(mu) = 0;
    std::vector<int> last_layers ABSL_GUARDED_BY(mu);
    bool has_cached_reply ABSL_GUARDED_BY(mu) = false;
    StepResult cached_reply ABSL_GUARDED_BY(mu);
    // Read without `mu` by Stats() and the reaper.
    std::atomic<int64_t> last_used_ns{0};
    std::atomic<int64_t> renewed_ns{0};  // The lease: the latest open, step or renewal.
    std::atomic<int64_t> kv_used_bytes{0};
    // Owned by the table (Worker::mu_).
    int64_t reserved_tokens = 0;
    bool closed = false;
    std::string client;
  };
  // A step or a replayed step used `session` now: renews its lease and its idle clock.
  static void Touch(Session* session);
  // Drops a closed session from its client's count.
  void ReleaseClientLocked(const Session& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // What the checks of one step under its session's lock decided.
  enum class StepPlan { kFailed, kReplay, kCompute };

  absl::StatusOr<std::shared_ptr<Session>> Find(const std::string& id) const;
  // The checks of the whole call: the layer list, the hidden state's shape, the steps' row counts
  // and the sessions' uniqueness.
  absl::Status ValidateCall(const BatchRequest& request, const HostTensor& hidden) const;
  // Checks about one step that need neither the session nor its cache (gate, context).
  absl::Status ValidateStep(const BatchStepRequest& step) const;
  // The checks of one step against its session (locked by the caller): a duplicate (replay or
  // AlreadyExists), ValidateStep, the cache's positions, the KV reservation. Sets `*status` when
  // it returns kFailed.
  StepPlan PlanStep(Session* session, const BatchStepRequest& step, const std::vector<int>& layers,
                    absl::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(session->mu);
  // Records a computed step in its session (the step rules' last step, and its reply, rows
  // [first_row, first_row + positions) of `reply_rows`, as the cached reply when small) and in the
  // step counters.
  void CommitStep(Session* session, const BatchStepRequest& step, const std::vector<int>& layers,
                  const HostTensor& reply_rows, int64_t first_row)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(session->mu);
  // Grows `session`'s reservation to `tokens` positions within the budget.
  absl::Status Reserve(Session* session, int64_t tokens) ABSL_LOCKS_EXCLUDED(mu_);

  const std::unique_ptr<model::LayerHost> host_;
  const SessionLimits limits_;
  const WorkerListener listener_;
  const int64_t context_;
  const int64_t kv_bytes_per_token_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  int64_t reserved_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> client_sessions_ ABSL_GUARDED_BY(mu_);
  uint64_t reaped_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t leases_expired_total_ ABSL_GUARDED_BY(mu_) = 0;

  std::atomic<int> inflight_{0};
  std::atomic<uint64_t> steps_total_{0};
  std::atomic<uint64_t> tokens_total_{0};
  std::atomic<uint64_t> batches_total_{0};
  std::atomic<uint64_t> batch_rows_total_{0};
  std::atomic<uint64_t> batch_sequences_total_{0};

  // Busy time: the union of the intervals during which a pass is computing, accounted up to
  // busy_mark_ (the last start or end of a pass while busy). EndCompute returns the increment.
  void BeginCompute() ABSL_LOCKS_EXCLUDED(busy_mu_);
  absl::Duration EndCompute() ABSL_LOCKS_EXCLUDED(busy_mu_);
  mutable absl::Mutex busy_mu_;
  int computing_ ABSL_GUARDED_BY(busy_mu_) = 0;
  absl::Time busy_mark_ ABSL_GUARDED_BY(busy_mu_);
  absl::Duration busy_total_ ABSL_GUARDED_BY(busy_mu_);
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_WORKER_H_
