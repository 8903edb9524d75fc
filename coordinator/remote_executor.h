// A model::BlockExecutor whose layers live on workers: each Run() sends the hidden state through
// the request's route (one Forward per hop, in layer order) and returns the last hop's output.
// model::Generate drives it exactly as it drives the in-process LocalExecutor, so sampling and
// stop rules exist in one place.
//
// One RemoteExecutor serves one request: Open() opens a session on every worker of the route,
// Close() (or the destructor) closes them all, whatever happened in between. Step ids count up
// per worker session; positions come from Generate.
//
// Threading: Run/Open/Close on the request's thread; Cancel() from any thread (it aborts the call
// in flight and makes later ones fail with CANCELLED).
#ifndef SWARM_COORDINATOR_REMOTE_EXECUTOR_H_
#define SWARM_COORDINATOR_REMOTE_EXECUTOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/route.h"
#include "coordinator/worker_set.h"
#include "model/generate.h"
#include "swarm/v1/worker.pb.h"

namespace grpc {
class ClientContext;
}

namespace swarm::coordinator {

// Called after each hop (for metrics): worker index, positions, wall time, status.
struct HopObserver {
  virtual ~HopObserver() = default;
  virtual void OnHop(int worker, int64_t positions, absl::Duration elapsed,
                     const absl::Status& status) = 0;
};

struct RemoteExecutorOptions {
  absl::Time deadline = absl::InfiniteFuture();       // The request's deadline.
  absl::Duration step_timeout = absl::Seconds(60);    // Per Forward, within the deadline.
  absl::Duration control_timeout = absl::Seconds(5);  // Open/CloseSession.
  std::string request_id;
  HopObserver* observer = nullptr;
};

class RemoteExecutor : public model::BlockExecutor {
 public:
  RemoteExecutor(WorkerSet* workers, std::vector<Hop> route, RemoteExecutorOptions options);
  ~RemoteExecutor() override;

  // Opens one session per distinct worker on the route, reserving `max_length` positions. On
  // error the sessions already opened are closed.
  absl::Status Open(int64_t max_length);
  absl::StatusOr<model::HostTensor> Run(const model::HostTensor& h, int64_t start_pos) override;
  // Closes every open session (best effort; a worker that cannot be reached frees it when its
  // idle TTL passes). Idempotent.
  void Close();
  void Cancel();

  // The hops of the route, for logs: "127.0.0.1:7001[0-2] -> 127.0.0.1:7002[3-4]".
  std::string DescribeRoute() const;

 private:
  struct WorkerSession {
    int worker = -1;
    std::string session_id;
    uint64_t last_step = 0;
  };
  absl::StatusOr<model::HostTensor> Hop(const struct Hop& hop, v1::ForwardRequest* request);
  absl::Status Call(int worker, const char* method,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                    absl::Duration timeout);
  WorkerSession* SessionFor(int worker);

  WorkerSet* const workers_;
  const std::vector<struct Hop> route_;
  const RemoteExecutorOptions options_;
  std::vector<WorkerSession> sessions_;

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* inflight_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_REMOTE_EXECUTOR_H_
