// A model::StepExecutor whose layers live on workers: each Run() sends the hidden state through
// the request's plan (one Forward per hop) and returns the result. model::RunGenerationLoop drives
// it exactly as it drives the in-process LocalExecutor, so sampling and stop rules exist in one
// place.
//
// A plan is a list of segments, each a chain of hops (a worker and the consecutive layers it runs,
// worker_plan.h) over one layer set:
//  - exact mode: one segment holding every layer;
//  - sparse, sequential combine: one segment per selected block, in layer order,
//    h ← h + g·(B(h) − h) per segment (g = its weight; the segment runs ungated on its workers and
//    the coordinator applies the gate, model::GateResidual);
//  - sparse, parallel combine: every segment reads the same h, dispatched concurrently, and
//    h_out = h + Σ w_b·(B_b(h) − h) (model::CombineResiduals).
// These are the formulas of router/sparse.h's in-process SparseExecutor.
//
// One RemoteExecutor serves one request: Open() opens a session per (segment, worker) of the plan,
// Close() (or the destructor) closes them all, whatever happened in between. Step ids count up
// per session; positions come from Generate.
//
// Threading: Run/Open/Close on the request's thread. A parallel Run runs its first segment on
// that thread and hands the others to `hop_pool` (owned by the caller, shared by requests); a
// segment the pool refuses, or that no pool thread has started by the time the caller is free,
// runs on the caller too, so a step never waits in the pool's queue and pool threads never wait
// on each other. Run returns once every segment of the step has finished. Cancel() from any
// thread: it aborts the calls in flight and makes later ones fail with CANCELLED.
#ifndef SWARM_COORDINATOR_REMOTE_EXECUTOR_H_
#define SWARM_COORDINATOR_REMOTE_EXECUTOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/worker_plan.h"
#include "coordinator/worker_set.h"
#include "model/generate.h"

namespace grpc {
class ClientContext;
class Status;
}  // namespace grpc

namespace swarm {
class ThreadPool;
}

namespace swarm::coordinator {

// Called after each hop (for metrics): worker index, positions, wall time, status.
struct HopObserver {
  virtual ~HopObserver() = default;
  virtual void OnHop(int worker, int64_t positions, absl::Duration elapsed,
                     const absl::Status& status) = 0;
};

// One layer set of a plan (every layer in exact mode, one selected block in sparse mode) as the
// hops that run it, and the weight of its residual update.
struct Segment {
  std::vector<Hop> hops;  // In layer order.
  float weight = 1.0f;
};

struct ExecutionPlan {
  std::vector<Segment> segments;  // In layer order.
  bool parallel = false;          // Parallel combine (otherwise sequential).
};

struct RemoteExecutorOptions {
  absl::Time deadline = absl::InfiniteFuture();       // The request's deadline.
  absl::Duration step_timeout = absl::Seconds(60);    // Per Forward, within the deadline.
  absl::Duration control_timeout = absl::Seconds(5);  // Open/CloseSession.
  std::string request_id;
  HopObserver* observer = nullptr;
  absl::Duration prefetch_timeout = absl::Seconds(2);  // Deadline of a Prefetch hint.
  // Where parallel combine runs its other segments (not owned); null = all on the caller, one
  // after the other.
  ThreadPool* hop_pool = nullptr;
};

class RemoteExecutor : public model::StepExecutor {
 public:
  RemoteExecutor(WorkerSet* workers, ExecutionPlan plan, RemoteExecutorOptions options);
  ~RemoteExecutor() override;

  // Sends each worker of the plan a Prefetch hint with the layers it will run (in plan order), so
  // a worker with a memory budget loads them before the first Forward. Fire-and-forget: returns
  // at once; answers (errors included) are ignored and each call ends within prefetch_timeout.
  void Prefetch();
  // Opens the plan's sessions, reserving `max_length` positions each. On error the sessions
  // already opened are closed.
  absl::Status Open(int64_t max_length);
  absl::StatusOr<HostTensor> Run(const HostTensor& h, int64_t start_pos) override;
  // Closes every open session (best effort; a worker that cannot be reached frees it when its
  // idle TTL passes). Idempotent.
  void Close();
  void Cancel();

  // The plan, for logs: "127.0.0.1:7001[0-2] -> 127.0.0.1:7002[3-4]"; sparse segments are
  // separated by " | " (parallel) or " ; " (sequential).
  std::string Describe() const;

 private:
  struct Session {
    int segment = 0;
    int worker = -1;
    std::string id;
    uint64_t last_step = 0;
  };
  Session* SessionFor(int segment, int worker);
  // Runs segment `segment`'s hops on `in`, ungated.
  absl::StatusOr<HostTensor> RunSegment(int segment, const HostTensor& in, int64_t start_pos);
  absl::StatusOr<HostTensor> RunHop(int segment, const Hop& hop, const HostTensor& in,
                                    bool in_is_ours, HostTensor* ours, int64_t start_pos);
  absl::Status Call(int worker, const char* method,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                    absl::Duration timeout);

  WorkerSet* const workers_;
  const ExecutionPlan plan_;
  const RemoteExecutorOptions options_;
  std::vector<Session> sessions_;  // Fixed after construction.

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ClientContext*> inflight_ ABSL_GUARDED_BY(mu_);
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_REMOTE_EXECUTOR_H_
