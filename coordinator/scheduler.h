// The coordinator's iteration-level scheduler (continuous batching across workers, Orca / vLLM
// style). Every request that runs holds a model::SequenceDecoder (its token loop) and its own
// execution plan (which worker runs which layers, per layer set: every layer in exact mode, the
// chosen blocks in sparse mode). The scheduler's loop thread (and each runner thread as it ends a
// micro-batch, so that the next step does not wait for a wake-up) composes micro-batches from the
// running requests (model::ComposeStep: decode rows first, then prefill chunks under the token
// budget, least recently stepped requests first so that none starves) and admits waiting
// requests in arrival order as running ones end.
//
// A micro-batch runs on one of the scheduler's runner threads: its rows are embedded, then go
// through their plans stage by stage. At each stage the rows of every request whose next hop is
// the same (worker, layers) travel in one ForwardBatch (ForwardBatchStream over the message
// limit; per-session Forward against a worker that answers UNIMPLEMENTED); the hops of one stage
// on different workers run at once (over the hop pool). Sequential combine gates each segment
// (model::GateResidual), parallel combine sums the segments (model::CombineResiduals), per request
// on the coordinator. Then one head product gives the logits of every row that needs them, and
// each request samples its token. A row a worker fails (BatchStepResult.code != 0) concerns that
// request alone: it fails over (below) when the failure is one a new session mends (the worker
// or the session gone, a missed deadline), and fails otherwise.
//
// Full pipeline: up to max_micro_batches micro-batches are in flight at once (default: one per
// machine among the workers, DefaultMicroBatches), each worker computing one of them at a time,
// so stage 2 computes micro-batch 1 while stage 1 computes micro-batch 2; a request is in at most
// one micro-batch at a time. With one request this is exactly the one-request loop of before.
//
// Fail-over (lose no request): every request keeps, per hop of its plan, the hop's input hidden
// states of every step so far (its replay history, bounded by replay_budget_bytes over all
// requests; a hop whose input is the embedding keeps none, the ids rebuild it). When a hop's call
// fails (UNAVAILABLE, a missed step deadline, an unknown session, ...) or its worker is marked
// down or draining, the request's session there moves: to the least loaded other usable worker
// hosting those layers, or else to the same address once it answers again (up to
// failover_wait); a session opens there and the hop's steps so far are replayed into it so that the
// rebuilt KV cache holds the same bits: prefill chunks with their original boundaries,
// consecutive short steps (decode tokens) as one step of up to the worker's invariant_rows rows
// (worker.proto; a worker that promises none gets each step as it was; ReplayGroups), each step's
// input from the history or, once the request's history was dropped for the budget, recomputed from
// the token ids through temporary sessions on the healthy hops before it. Then the current step is
// sent again and the request carries on; each sequence of a failed micro-batch fails over on its
// own. A request fails over at most failover_attempts times without a step completing in between;
// then it fails UNAVAILABLE naming the layers and the workers at fault. Step deadlines follow the
// observed step latency (max(step_deadline_factor × the recent p99, step_deadline_min), at most
// step_timeout): a worker that misses one is marked unreachable (the monitor probes it) and
// failed over.
//
// Threading: Run is called by any number of request threads and blocks until its request ends;
// its token callback runs on that thread (tokens reach it through a per-request queue, so a slow
// client never stalls the batch). The loop thread and the runner threads are owned and joined by
// the destructor (no Run may be running then).
#ifndef SWARM_COORDINATOR_SCHEDULER_H_
#define SWARM_COORDINATOR_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/coordinator_observer.h"
#include "coordinator/failover_options.h"
#include "coordinator/step_deadline.h"
#include "coordinator/worker_plan.h"
#include "model/generate.h"

namespace swarm {
class ThreadPool;
}

namespace swarm::coordinator {

class WorkerSet;
class CancellationHandle;

// One layer set of a plan (every layer in exact mode, one selected block in sparse mode) as the
// hops that run it, and the weight of its residual update.
struct Segment {
  std::vector<Hop> hops;  // In layer order.
  float weight = 1.0f;
};

// A request's plan: segments in layer order.
//  - exact mode: one segment holding every layer;
//  - sparse, sequential combine: one segment per selected block, h ← h + g·(B(h) − h) per
//    segment (the segment runs ungated on its workers; the coordinator applies the gate);
//  - sparse, parallel combine: every segment reads the same h, h_out = h + Σ w_b·(B_b(h) − h).
// These are the formulas of router/sparse.h's in-process SparseExecutor.
struct ExecutionPlan {
  std::vector<Segment> segments;
  bool parallel = false;  // Parallel combine (otherwise sequential).
};

// The plan, for logs: "127.0.0.1:7001[0-2] -> 127.0.0.1:7002[3-4]"; sparse segments are
// separated by " | " (parallel) or " ; " (sequential), a weight other than 1 follows as " x0.5".
std::string DescribePlan(const WorkerSet& workers, const ExecutionPlan& plan);

// The pipeline's depth when none is given: the number of machines among the workers (distinct
// hosts of their addresses; an address that is not host:port counts as one machine), at least 1.
// Workers on one machine share its cores and memory bandwidth: two micro-batches there compute at
// the same time on the same cores, each reading all the weights, so splitting the batch only
// loses (measured in docs/benchmarks.md); workers on different machines overlap.
int DefaultMicroBatches(const WorkerSet& workers);

struct SchedulerOptions {
  model::BatchLimits limits;      // Per micro-batch: rows and sequences.
  int max_waiting_requests = 64;  // Requests waiting for admission; beyond: RESOURCE_EXHAUSTED.
  // Micro-batches in flight at once (one runner thread each; at most 64); 0 =
  // DefaultMicroBatches.
  int max_micro_batches = 0;
  absl::Duration step_timeout = absl::Seconds(60);     // One Forward / ForwardBatch.
  absl::Duration control_timeout = absl::Seconds(5);   // Open/CloseSession.
  absl::Duration prefetch_timeout = absl::Seconds(2);  // Deadline of a Prefetch hint.
  FailoverOptions failover;                            // See the file comment.
  CoordinatorObserver* observer = nullptr;             // Not owned; null = none.
  // Where the hops of one stage on different workers run at once (not owned); null = one after
  // the other on the micro-batch's runner thread.
  ThreadPool* hop_pool = nullptr;
};

// One request, as the scheduler runs it.
struct ScheduledRequest {
  std::string request_id;
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> resume_ids;  // Already generated (a resumed stream): fed after the prompt.
  model::SamplingParams params;
  ExecutionPlan plan;
  std::vector<int> series_blocks;  // Passed to CoordinatorObserver::OnStep after each step.
  absl::Time deadline = absl::InfiniteFuture();
  bool prefetch = false;  // Send each worker of the plan a Prefetch hint first (sparse mode).
};

// One step of a fail-over's replay: steps [first_step, first_step + steps) of the request's
// history sent as one, positions [start, start + rows).
struct ReplayGroup {
  int first_step = 0;
  int steps = 0;
  int64_t start = 0;
  int64_t rows = 0;
};
// The replay of `steps` ((start, rows) of each step so far, in order) into hops that took
// done[j] of them each (step i is replayed into the hops with done[j] > i): consecutive steps of
// at most max_rows rows merge into one while together they hold at most max_rows rows, follow
// each other without a gap and go to the same hops; longer steps (prefill chunks) keep their
// boundaries. max_rows <= 1: every step alone (the original boundaries).
std::vector<ReplayGroup> ReplayGroups(absl::Span<const std::pair<int64_t, int64_t>> steps,
                                      absl::Span<const int> done, int64_t max_rows);

class Scheduler {
 public:
  // `model` and `workers` are not owned and must outlive the scheduler. Starts the loop thread
  // and the runner threads.
  Scheduler(const CoordinatorModel* model, WorkerSet* workers, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Runs one request to its end: queues it (RESOURCE_EXHAUSTED naming the limit when
  // max_waiting_requests are waiting), calls `on_queued`, waits for admission, opens a session
  // per (segment, worker) of its plan, then hands each token to `on_token` on this thread (false
  // stops the request: CANCELLED) until it ends. `cancel` stops it from any thread (CANCELLED);
  // its deadline passing stops it too (DEADLINE_EXCEEDED). Every session it opened is closed
  // before it returns. Other errors: the sampling parameters or the prompt (as
  // model::SequenceDecoder::Create), the workers' failures that no fail-over mends (UNAVAILABLE
  // naming the layers once no worker hosts them within failover_wait or the attempts are spent;
  // a row's own error such as INVALID_ARGUMENT as the worker gave it).
  absl::StatusOr<model::GenerateResult> Run(ScheduledRequest request,
                                            const std::function<void()>& on_queued,
                                            const model::TokenCallback& on_token,
                                            CancellationHandle& cancel);

  int running() const;  // Admitted and not ended.
  int waiting() const;  // Queued for admission.
  int max_micro_batches() const { return max_micro_batches_; }
  int64_t replay_bytes() const { return replay_bytes_.load(); }  // Held as replay history now.
  // The deadline a step call gets now (see the file comment).
  absl::Duration StepDeadline() const;

 private:
  struct Request;
  struct MicroBatch;
  class Calls;

  void Loop();
  // Admits waiting requests while there is room. Reports the state.
  void AdmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportStateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `request` out of the queue or the batch for good.
  void EndLocked(Request& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status OpenSessions(Request& request);
  void CloseSessions(Request& request);
  void Prefetch(const ScheduledRequest& request);
  // The next micro-batch of the running requests not in one (counted in flight), or null when
  // none can start now.
  std::shared_ptr<MicroBatch> ComposeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `batch` and the micro-batches composed as each ends, on a runner thread.
  void RunMicroBatch(std::shared_ptr<MicroBatch> batch);
  // Runs one micro-batch end to end; returns the next one to run (ComposeLocked).
  std::shared_ptr<MicroBatch> RunStep(MicroBatch& batch);
  // Sends the micro-batch's rows through every request's plan; fills each entry's output or
  // failure.
  void RunHops(MicroBatch& batch);

  // Fail-over (see the file comment). Moves the session of `segment` on `worker` (every hop of
  // the segment there) to a replacement and replays those hops' steps so far; `why` is what
  // failed, `reason` the metric label ("error", "deadline", "drain", "down").
  absl::Status FailOver(Request& request, int segment, int worker, const absl::Status& why,
                        const char* reason);
  absl::Status Replay(Request& request, int segment, const std::vector<int>& hops, int worker,
                      int64_t* positions, int64_t* bytes, bool* recomputed);
  // One step through `layers` of session `session_id` on `worker` (Forward, streamed when large).
  absl::StatusOr<HostTensor> ForwardOn(Request& request, int worker, const std::string& session_id,
                                       uint64_t step_id, int64_t start,
                                       const std::vector<int>& layers, const HostTensor& in);
  absl::StatusOr<std::string> OpenOn(const Request& request, int worker);
  void CloseOn(const Request& request, int worker, const std::string& session_id);
  // Appends `in` (the rows hop `hop` of `segment` just took) to the request's history.
  void Record(Request& request, int segment, int hop, const HostTensor& in);

  const CoordinatorModel* const model_;
  WorkerSet* const workers_;
  const SchedulerOptions options_;
  CoordinatorObserver default_observer_;
  CoordinatorObserver* const observer_;
  const int max_micro_batches_;
  std::unique_ptr<Calls> batch_calls_;  // The ForwardBatch calls in flight (cancelled on exit).
  // Per worker: held while a micro-batch's hop computes there (one micro-batch per stage at a
  // time: the pipeline), and whether it answered ForwardBatch UNIMPLEMENTED.
  std::unique_ptr<absl::Mutex[]> stage_mu_;
  std::unique_ptr<std::atomic<bool>[]> no_batch_;
  StepDeadlines step_deadlines_;  // Recent step latencies (StepDeadline).

  mutable absl::Mutex mu_;
  absl::CondVar loop_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::shared_ptr<Request>> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Request>> running_ ABSL_GUARDED_BY(mu_);  // Admitted, by arrival.
  int batches_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  absl::CondVar batches_cv_;
  uint64_t arrivals_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t steps_ ABSL_GUARDED_BY(mu_) = 0;

  std::atomic<int64_t> replay_bytes_{0};  // Every request's replay history.
  // The cost of keeping it, logged when the scheduler ends: its appends (count, bytes, time) and
  // the micro-batches' time (count, time).
  std::atomic<int64_t> history_appends_{0}, history_append_bytes_{0}, history_append_ns_{0};
  std::atomic<int64_t> micro_batches_{0}, step_ns_{0};
  std::atomic<bool> shutting_down_{false};

  std::unique_ptr<ThreadPool> runners_;  // The micro-batches in flight.
  std::thread loop_;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_SCHEDULER_H_
