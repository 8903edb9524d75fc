// The worker's session logic, independent of gRPC: a LayerHost (the layers this process hosts)
// plus one KvCache per session, with the step rules of proto/swarm/v1/worker.proto (step ids,
// start positions, duplicate steps), a session limit, an idle TTL and a KV memory budget.
// WorkerServer (worker_server.h) puts it behind WorkerService; tests drive it directly too.
//
// Threading: every method is thread-safe. Steps of different sessions run concurrently (the
// LayerHost is const); steps of one session are serialised by the session's own mutex. Lock
// order: a session's mutex before the table's.
#ifndef SWARM_WORKER_WORKER_H_
#define SWARM_WORKER_WORKER_H_

#include <atomic>
#include <cstdint>
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
  absl::Duration idle_ttl = absl::Minutes(5);         // A session unused this long is closed.
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

struct WorkerStats {
  int sessions = 0;
  int64_t kv_reserved_bytes = 0;
  int64_t kv_used_bytes = 0;
  int inflight_steps = 0;
  uint64_t steps_total = 0;
  uint64_t tokens_total = 0;
  uint64_t sessions_reaped_total = 0;
  absl::Time last_session_use = absl::InfinitePast();  // Latest open or step of an open session.
};

class Worker {
 public:
  Worker(std::unique_ptr<model::LayerHost> host, SessionLimits limits);
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

  // Runs one step (the rules and codes are in worker.proto). `hidden` is consumed.
  absl::StatusOr<StepResult> Forward(const StepRequest& request, HostTensor hidden);

  // Closes sessions unused since `now - idle_ttl` that are not running a step. Returns how many.
  int ReapIdle(absl::Time now);

  WorkerStats Stats() const;

 private:
  struct Session {
    explicit Session(std::string id_in) : id(std::move(id_in)) {}
    const std::string id;
    absl::Mutex mu;
    std::unique_ptr<model::KvCache> cache ABSL_GUARDED_BY(mu);
    uint64_t last_step_id ABSL_GUARDED_BY(mu) = 0;
    int64_t last_start ABSL_GUARDED_BY(mu) = -1;
    std::vector<int> last_layers ABSL_GUARDED_BY(mu);
    bool has_cached_reply ABSL_GUARDED_BY(mu) = false;
    StepResult cached_reply ABSL_GUARDED_BY(mu);
    // Read without `mu` by Stats() and the reaper.
    std::atomic<int64_t> last_used_ns{0};
    std::atomic<int64_t> kv_used_bytes{0};
    // Owned by the table (Worker::mu_).
    int64_t reserved_tokens = 0;
    bool closed = false;
    std::string client;
  };
  // Drops a closed session from its client's count.
  void ReleaseClientLocked(const Session& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<std::shared_ptr<Session>> Find(const std::string& id) const;
  // Checks everything about a new step that does not need the session's cache.
  absl::Status ValidateStep(const StepRequest& request, const HostTensor& hidden) const;
  // Grows `session`'s reservation to `tokens` positions within the budget.
  absl::Status Reserve(Session* session, int64_t tokens) ABSL_LOCKS_EXCLUDED(mu_);

  const std::unique_ptr<model::LayerHost> host_;
  const SessionLimits limits_;
  const int64_t context_;
  const int64_t kv_bytes_per_token_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  int64_t reserved_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> client_sessions_ ABSL_GUARDED_BY(mu_);
  uint64_t reaped_total_ ABSL_GUARDED_BY(mu_) = 0;

  std::atomic<int> inflight_{0};
  std::atomic<uint64_t> steps_total_{0};
  std::atomic<uint64_t> tokens_total_{0};
};

}  // namespace swarm::worker

#endif  // SWARM_WORKER_WORKER_H_
