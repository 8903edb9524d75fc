// The coordinator's view of its workers: one channel and stub per --workers address, what each
// last said about itself (Info), whether it is usable (reachable, layers loaded, same model
// fingerprint as the coordinator) and how many of this coordinator's requests go through it.
// The monitor thread refreshes it; request threads read snapshots, plan their hops through it
// (worker_plan.h) and report failures into it. It also keeps the sessions this coordinator holds
// on each worker, whose leases (worker.proto RenewSessions) the coordinator's lease thread renews:
// a worker frees the sessions of a coordinator that died within its lease.
//
// Threading: all methods are thread-safe (one mutex; no RPC is made while holding it).
#ifndef SWARM_COORDINATOR_WORKER_SET_H_
#define SWARM_COORDINATOR_WORKER_SET_H_

#include <grpcpp/security/credentials.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/worker_plan.h"
#include "swarm/v1/worker.grpc.pb.h"

namespace swarm::coordinator {

struct WorkerState {
  std::string address;
  bool reachable = false;
  bool compatible = false;
  bool ready = false;
  std::string error;  // Why it is not usable, if it is not.
  v1::InfoResponse info;
  int active_requests = 0;
  bool usable() const { return reachable && compatible && ready; }
};

class WorkerSet {
 public:
  // `fingerprint` and `num_layers` describe the coordinator's model; workers must match them.
  // `credentials` (rpc::MakeChannelCredentials) secure every channel; null = plaintext.
  WorkerSet(const std::vector<std::string>& addresses, std::string fingerprint, int num_layers,
            std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

  int size() const { return static_cast<int>(stubs_.size()); }
  const std::string& address(int index) const { return addresses_[index]; }
  v1::WorkerService::Stub* stub(int index) const { return stubs_[index].get(); }

  // Asks every worker for Info at once, with `timeout`, and records the answers; `done` runs on a
  // gRPC thread once all have answered or failed. Never blocks.
  void RefreshAsync(absl::Duration timeout, std::function<void()> done);
  // The same, blocking until all have answered.
  void Refresh(absl::Duration timeout);

  std::vector<WorkerState> Snapshot() const;
  // OK when the usable workers cover every layer; Unavailable saying what is missing and why the
  // other workers are not used.
  absl::Status Coverage() const;
  // Plans the hops of one request through the usable workers, one plan per layer set (exact
  // mode: one set with every layer; sparse mode: one per selected block), preferring the least
  // loaded workers (PlanHops), and counts the request once against each worker used (undo with
  // Release). Unavailable naming the layers no usable worker hosts.
  absl::StatusOr<std::vector<std::vector<Hop>>> AcquirePlans(
      const std::vector<std::vector<int>>& layer_sets);
  void Release(const std::vector<std::vector<Hop>>& plans);
  // Moves the load AcquirePlans counted for `from` onto `to` (a request whose hops were moved to
  // other workers by a fail-over), atomically.
  void MovePlans(const std::vector<std::vector<Hop>>& from,
                 const std::vector<std::vector<Hop>>& to);

  // Fail-over (scheduler.h): whether worker `index` is usable now, and whether it said it drains.
  bool usable(int index) const;
  bool draining(int index) const;
  // The least loaded usable worker that hosts every layer of `layers` (the lowest index among
  // equals; a draining worker is not usable); -1 when none does. PickReplica in worker_plan.h
  // over the workers as last seen.
  int PickReplica(const std::vector<int>& layers) const;
  // What worker `index` last said of its steps' row invariance (InfoResponse.invariant_rows);
  // 0 when it is not reachable.
  int64_t invariant_rows(int index) const;
  // Asks worker `index` alone for Info now (blocking, `timeout` at most) and records the answer.
  void Probe(int index, absl::Duration timeout);
  // Asks, at once, every worker that is not usable now but last said it hosts every layer of
  // `layers` (or never answered) for Info, blocking until all have answered or `timeout` passed,
  // and records the answers: a fail-over waiting for those layers finds a replica that came back
  // without waiting for the monitor's next poll. Returns how many were asked.
  int ProbeHosts(const std::vector<int>& layers, absl::Duration timeout);

  // Records that a call to the worker failed as if it were down (UNAVAILABLE and friends): it is
  // not planned through until a refresh finds it again. Wakes WaitForChange().
  void MarkUnreachable(int index, const absl::Status& status);
  // Session leases. Whoever opens a session on a worker records it (AddSession) and whoever
  // closes it forgets it (RemoveSession); RenewLeases renews what is recorded.
  void AddSession(int index, const std::string& session_id);
  // `closed`: the worker answered the CloseSession (OK or NOT_FOUND). When it did not (down,
  // partitioned), the id is kept as stale and closed there once the worker answers again
  // (RenewLeases), so that a returning worker does not hold it until its lease ends.
  void RemoveSession(int index, const std::string& session_id, bool closed);
  // What RenewLeases did.
  struct LeaseRound {
    int renewed = 0;         // Sessions renewed.
    int lost = 0;            // Sessions the worker no longer held (restarted, or expired there).
    int stale_closed = 0;    // Stale sessions closed on a returning worker.
    int failed_workers = 0;  // Workers that did not answer (their sessions were not renewed).
  };
  // One RenewSessions call per worker that holds recorded sessions, all at once, waiting for the
  // answers up to `timeout`; sessions a worker no longer holds are forgotten (the request using
  // one fails over or fails on its next step). Then a CloseSession for each stale session of a
  // worker that answered. Blocks until done.
  LeaseRound RenewLeases(absl::Duration timeout);
  // How often to renew: a third of the shortest lease the workers report (Info), `fallback`
  // when none reports one.
  absl::Duration RenewInterval(absl::Duration fallback) const;
  // Sessions recorded on worker `index` (for tests and status).
  int SessionCount(int index) const;

  // Blocks until MarkUnreachable or Notify is called, or `timeout` passes.
  void WaitForChange(absl::Duration timeout);
  void Notify();

 private:
  void Record(int index, const grpc::Status& status, const v1::InfoResponse& info);
  void CountLocked(const std::vector<std::vector<Hop>>& plans, int delta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<WorkerCandidate> CandidatesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<std::string> addresses_;
  const std::string fingerprint_;
  const int num_layers_;
  std::vector<std::unique_ptr<v1::WorkerService::Stub>> stubs_;

  mutable absl::Mutex mu_;
  std::vector<WorkerState> states_ ABSL_GUARDED_BY(mu_);
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
  // Per worker: the sessions held there, and those whose CloseSession did not reach it.
  struct Leases {
    absl::flat_hash_set<std::string> held;
    std::vector<std::string> stale;
  };
  std::vector<Leases> leases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_WORKER_SET_H_
