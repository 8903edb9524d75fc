#include "coordinator/scheduler.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/host_port.h"
#include "common/layer_set.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/tensor_rows.h"
#include "common/thread_pool.h"
#include "coordinator/pipeline.h"
#include "coordinator/worker_set.h"
#include "model/combine.h"
#include "rpc/batch_codec.h"
#include "rpc/channel.h"
#include "rpc/status.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/worker.grpc.pb.h"

namespace swarm::coordinator {

namespace {

constexpr char kLog[] = "swarm-coordinator";
constexpr int kMaxMicroBatches = 64;  // One runner thread each.
constexpr size_t kMaxFaults = 3;      // Failures a give-up message names.

// A failure a fail-over can mend: the worker or its session is gone, or it missed the deadline.
bool Retryable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kCancelled:
      return true;
    default:
      return false;
  }
}

std::string Trunc(absl::Duration d) {
  return absl::FormatDuration(absl::Trunc(d, absl::Microseconds(100)));
}

const char* FailoverReason(const absl::Status& s) {
  return s.code() == absl::StatusCode::kDeadlineExceeded ? "deadline" : "error";
}

std::vector<std::vector<Hop>> HopsOf(const ExecutionPlan& plan) {
  std::vector<std::vector<Hop>> out;
  for (const Segment& s : plan.segments) out.push_back(s.hops);
  return out;
}

bool SameWorkers(const ExecutionPlan& a, const ExecutionPlan& b) {
  if (a.segments.size() != b.segments.size()) return false;
  for (size_t i = 0; i < a.segments.size(); ++i) {
    if (a.segments[i].hops.size() != b.segments[i].hops.size()) return false;
    for (size_t k = 0; k < a.segments[i].hops.size(); ++k) {
      if (a.segments[i].hops[k].worker != b.segments[i].hops[k].worker) return false;
    }
  }
  return true;
}

// Closures handed to a pool while the caller works, without ever waiting in the pool's queue:
// Join() runs on the caller each closure no pool thread has started (all of them without a pool,
// or when the pool refuses one), then waits for those that have. Each closure runs exactly once.
// Used by one caller thread; a closure the caller took over is left behind in the pool's queue as
// a no-op that only touches its shared Task.
class FanOut {
 public:
  explicit FanOut(ThreadPool* pool) : pool_(pool) {}
  ~FanOut() { Join(); }

  void Spawn(std::function<void()> fn) {
    auto task = std::make_shared<Task>();
    task->fn = std::move(fn);
    tasks_.push_back(task);
    if (pool_ != nullptr) {
      pool_->TrySchedule([task] {
        if (task->claimed.exchange(true)) return;
        task->fn();
        task->done.Notify();
      });
    }
  }

  void Join() {
    for (const std::shared_ptr<Task>& task : tasks_) {
      if (!task->claimed.exchange(true)) {
        task->fn();
      } else {
        task->done.WaitForNotification();
      }
    }
    tasks_.clear();
  }

 private:
  struct Task {
    std::function<void()> fn;
    std::atomic<bool> claimed{false};
    absl::Notification done;  // Notified by the pool thread that claimed the task.
  };
  ThreadPool* const pool_;
  std::vector<std::shared_ptr<Task>> tasks_;
};

}  // namespace

std::string DescribePlan(const WorkerSet& workers, const ExecutionPlan& plan) {
  std::vector<std::string> parts;
  for (const Segment& segment : plan.segments) {
    std::vector<std::string> hops;
    for (const Hop& hop : segment.hops) {
      hops.push_back(absl::StrCat(workers.address(hop.worker), "[", FormatLayers(hop.layers), "]"));
    }
    std::string s = absl::StrJoin(hops, " -> ");
    if (segment.weight != 1.0f) absl::StrAppend(&s, " x", segment.weight);
    parts.push_back(s);
  }
  return absl::StrJoin(parts, plan.parallel ? " | " : " ; ");
}

// Calls to workers that Cancel() aborts at once (and fails from then on with CANCELLED).
class Scheduler::Calls {
 public:
  explicit Calls(WorkerSet* workers) : workers_(workers) {}

  absl::Status Call(int worker, const char* method,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                    absl::Time deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) return absl::CancelledError("the request was cancelled");
      inflight_.insert(&ctx);
    }
    grpc::Status s = rpc(&ctx);
    {
      absl::MutexLock lock(&mu_);
      inflight_.erase(&ctx);
    }
    if (s.ok()) return absl::OkStatus();
    absl::Status status =
        rpc::FromGrpcStatus(s, absl::StrCat("worker ", workers_->address(worker), ": ", method));
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) workers_->MarkUnreachable(worker, status);
    return status;
  }

  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (grpc::ClientContext* ctx : inflight_) ctx->TryCancel();
  }

 private:
  WorkerSet* const workers_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<grpc::ClientContext*> inflight_ ABSL_GUARDED_BY(mu_);
};

// One request's state. `spec`, `decoder` (until admitted), `sessions` (their ids) are set by the
// request's Run thread before it joins the batch; afterwards the decoder and the sessions' step
// ids belong to the one micro-batch the request is in (in_flight), or to the loop thread while
// it composes. The fields marked "mu_" are guarded by the scheduler's mutex.
struct Scheduler::Request {
  enum class State { kWaiting, kAdmitted, kRunning, kEnded };
  struct Session {
    int segment = 0;
    int worker = -1;
    std::string id;
    uint64_t last_step = 0;
  };

  explicit Request(WorkerSet* workers) : calls(workers) {}

  Session* SessionFor(int segment, int worker) {
    for (Session& s : sessions) {
      if (s.segment == segment && s.worker == worker) return &s;
    }
    return nullptr;
  }

  ScheduledRequest spec;
  std::unique_ptr<model::SequenceDecoder> decoder;
  std::vector<Session> sessions;
  // One hop's replay history (scheduler.h's fail-over).
  struct HopHistory {
    int steps_done = 0;  // Of `steps`: the steps this hop took.
    bool keep = false;   // Its input is not the embedding: kept (until the history is dropped).
    HostTensor inputs;   // The rows of its steps so far, in order.
  };

  Calls calls;  // Its per-session Forwards: aborted when the request ends.
  // Guards what the Run thread reads or frees when the request ends while a micro-batch may still
  // own it. `sessions` and `spec.plan` change only on the owner's thread, under this lock (the
  // owner reads them without it).
  absl::Mutex state_mu;
  bool closed ABSL_GUARDED_BY(state_mu) = false;  // Ended: nothing opens, nothing is kept.
  std::vector<std::pair<int64_t, int64_t>> steps ABSL_GUARDED_BY(state_mu);  // (start, rows).
  std::vector<std::vector<HopHistory>> history ABSL_GUARDED_BY(state_mu);    // [segment][hop]
  int64_t history_bytes ABSL_GUARDED_BY(state_mu) = 0;
  bool history_dropped ABSL_GUARDED_BY(state_mu) = false;
  ExecutionPlan original_plan;  // As planned (the worker set's load is restored to it).
  // The owner's: fail-overs since the last step that completed, and what failed.
  int failovers_in_row = 0;
  std::vector<std::string> faults;
  uint64_t seq = 0;
  absl::Time queued_at;
  // Ended by its Run thread (cancelled, deadline, sink): a micro-batch drops its rows.
  std::atomic<bool> abandoned{false};

  // mu_:
  State state = State::kWaiting;
  bool in_flight = false;
  uint64_t last_stepped = 0;
  std::deque<model::GeneratedToken> tokens;  // Decoded, not yet handed to the Run thread.
  bool finished = false;                     // The decoder is done or the request failed.
  absl::Status failure;
  bool stop = false;  // Its CancellationHandle was cancelled.
  absl::CondVar cv;   // Signalled when any of the above changes.
};

// One row set of a micro-batch: a request's `rows` positions from `start`.
struct Scheduler::MicroBatch {
  struct Entry {
    std::shared_ptr<Request> req;
    int64_t start = 0;
    int64_t rows = 0;
    absl::Status status;
    HostTensor h;                  // The embedded rows.
    HostTensor x;                  // Sequential combine: the current segment's input.
    HostTensor out;                // The last layer's output.
    std::vector<HostTensor> outs;  // Parallel combine: each segment's output.
    int lanes_left = 0;
    std::optional<model::GeneratedToken> token;
  };
  std::vector<Entry> entries;
};

int DefaultMicroBatches(const WorkerSet& workers) {
  absl::flat_hash_set<std::string> hosts;
  for (int w = 0; w < workers.size(); ++w) {
    absl::StatusOr<HostPort> hp = ParseHostPort(workers.address(w));
    // An address that is not host:port (a gRPC target URI) counts as a machine of its own.
    hosts.insert(hp.ok() ? hp->host : workers.address(w));
  }
  return std::max<int>(static_cast<int>(hosts.size()), 1);
}

Scheduler::Scheduler(const CoordinatorModel* model, WorkerSet* workers, SchedulerOptions options)
    : model_(model),
      workers_(workers),
      options_(std::move(options)),
      observer_(options_.observer != nullptr ? options_.observer : &default_observer_),
      max_micro_batches_(std::min(options_.max_micro_batches > 0 ? options_.max_micro_batches
                                                                 : DefaultMicroBatches(*workers),
                                  kMaxMicroBatches)),
      batch_calls_(std::make_unique<Calls>(workers)),
      stage_mu_(new absl::Mutex[std::max(workers->size(), 1)]),
      no_batch_(new std::atomic<bool>[std::max(workers->size(), 1)]),
      step_deadlines_(options_.failover, options_.step_timeout) {
  for (int w = 0; w < workers->size(); ++w) no_batch_[w].store(false);
  runners_ = std::make_unique<ThreadPool>(max_micro_batches_, max_micro_batches_);
  loop_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  shutting_down_.store(true);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    loop_cv_.SignalAll();
  }
  loop_.join();
  batch_calls_->Cancel();
  {
    absl::MutexLock lock(&mu_);
    while (batches_in_flight_ > 0) batches_cv_.Wait(&mu_);
  }
  runners_.reset();
  // What keeping the replay history cost (docs/benchmarks.md, "Fail-over"): the time its appends
  // took against the time the micro-batches took, both on the runner threads.
  if (history_appends_.load() > 0) {
    const double append_s = 1e-9 * static_cast<double>(history_append_ns_.load());
    const double step_s = 1e-9 * static_cast<double>(step_ns_.load());
    LogLine(kLog, absl::StrFormat("replay history: %d appends (%d bytes) took %.6f s, %.3f us "
                                  "each; %d micro-batches took %.3f s; appends / micro-batches "
                                  "= %.5f%%",
                                  history_appends_.load(), history_append_bytes_.load(), append_s,
                                  1e6 * append_s / static_cast<double>(history_appends_.load()),
                                  micro_batches_.load(), step_s,
                                  step_s > 0 ? 100 * append_s / step_s : 0.0));
  }
}

int Scheduler::running() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(running_.size());
}

int Scheduler::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiting_.size());
}

void Scheduler::ReportStateLocked() {
  observer_->OnSchedulerState(static_cast<int>(running_.size()), static_cast<int>(waiting_.size()));
}

void Scheduler::AdmitLocked() {
  const size_t max_running = static_cast<size_t>(std::max(options_.limits.max_batch_sequences, 1));
  const absl::Time now = absl::Now();
  while (!waiting_.empty() && running_.size() < max_running) {
    std::shared_ptr<Request> r = std::move(waiting_.front());
    waiting_.pop_front();
    r->state = Request::State::kAdmitted;
    running_.push_back(r);
    observer_->OnAdmitted(now - r->queued_at);
    r->cv.Signal();
  }
  ReportStateLocked();
}

void Scheduler::EndLocked(Request& request) {
  request.abandoned.store(true);
  if (request.state == Request::State::kWaiting) {
    waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                  [&](const auto& r) { return r.get() == &request; }),
                   waiting_.end());
  } else if (request.state != Request::State::kEnded) {
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [&](const auto& r) { return r.get() == &request; }),
                   running_.end());
  }
  request.state = Request::State::kEnded;
  AdmitLocked();
  loop_cv_.Signal();
}

absl::StatusOr<model::GenerateResult> Scheduler::Run(ScheduledRequest spec,
                                                     const std::function<void()>& on_queued,
                                                     const model::TokenCallback& on_token,
                                                     CancellationHandle& cancel) {
  auto req = std::make_shared<Request>(workers_);
  ASSIGN_OR_RETURN(req->decoder,
                   model::SequenceDecoder::Create(model_->config(), model_->tokenizer(),
                                                  spec.prompt_ids, spec.params, spec.resume_ids));
  if (spec.plan.segments.empty()) return absl::InternalError("empty execution plan");
  for (int b = 0; b < static_cast<int>(spec.plan.segments.size()); ++b) {
    if (spec.plan.segments[b].hops.empty()) return absl::InternalError("a segment without hops");
    for (const Hop& hop : spec.plan.segments[b].hops) {
      if (req->SessionFor(b, hop.worker) == nullptr) {
        req->sessions.push_back(Request::Session{b, hop.worker, "", 0});
      }
    }
  }
  req->spec = std::move(spec);
  req->original_plan = req->spec.plan;
  {
    absl::MutexLock lock(&req->state_mu);
    const ExecutionPlan& plan = req->spec.plan;
    for (int b = 0; b < static_cast<int>(plan.segments.size()); ++b) {
      req->history.emplace_back(plan.segments[b].hops.size());
      for (size_t k = 0; k < plan.segments[b].hops.size(); ++k) {
        // The first hop of the first segment (of every segment in parallel combine) takes the
        // embedding: the ids rebuild it.
        req->history[b][k].keep = k > 0 || (b > 0 && !plan.parallel);
      }
    }
    req->history_dropped = options_.failover.replay_budget_bytes <= 0;
  }
  const absl::Time deadline = req->spec.deadline;
  model::GenerateResult result;
  if (req->decoder->done()) {  // max_new_tokens 0: nothing to run.
    result.finish_reason = req->decoder->finish_reason();
    if (on_queued) on_queued();
    return result;
  }
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the coordinator is shutting down");
    if (static_cast<int>(waiting_.size()) >= options_.max_waiting_requests) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the scheduler's queue is full: ", waiting_.size(),
                       " requests waiting for admission (--max-waiting-requests ",
                       options_.max_waiting_requests, ")"));
    }
    req->seq = ++arrivals_;
    req->queued_at = absl::Now();
    waiting_.push_back(req);
    AdmitLocked();
  }
  if (on_queued) on_queued();
  if (req->spec.prefetch) Prefetch(req->spec);
  Request* r = req.get();
  cancel.SetOnCancel([this, r] {
    {
      absl::MutexLock lock(&mu_);
      r->stop = true;
      r->cv.Signal();
    }
    r->calls.Cancel();
  });

  // Every way out of the request: waiting, opening, running.
  auto drive = [&]() -> absl::Status {
    {
      absl::MutexLock lock(&mu_);
      while (r->state == Request::State::kWaiting && !r->stop && absl::Now() < deadline) {
        r->cv.WaitWithDeadline(&mu_, deadline);
      }
      if (r->stop) return absl::CancelledError("the client cancelled the request");
      if (r->state == Request::State::kWaiting) {
        return absl::DeadlineExceededError("the request's deadline passed in the queue");
      }
    }
    RETURN_IF_ERROR(OpenSessions(*r));
    {
      absl::MutexLock lock(&mu_);
      if (r->stop) return absl::CancelledError("the client cancelled the request");
      r->state = Request::State::kRunning;
      loop_cv_.Signal();
    }
    while (true) {
      std::deque<model::GeneratedToken> got;
      bool finished = false;
      absl::Status failure;
      {
        absl::MutexLock lock(&mu_);
        while (r->tokens.empty() && !r->finished && !r->stop && absl::Now() < deadline) {
          r->cv.WaitWithDeadline(&mu_, deadline);
        }
        if (r->stop) return absl::CancelledError("the client cancelled the request");
        got.swap(r->tokens);
        finished = r->finished;
        failure = r->failure;
      }
      for (const model::GeneratedToken& token : got) {
        result.ids.push_back(token.id);
        result.text += token.text;
        if (on_token && !on_token(token)) {
          return absl::CancelledError("the client cancelled the request");
        }
      }
      if (finished) {
        RETURN_IF_ERROR(failure);
        // The decoder is the Run thread's again: the micro-batch that finished it let it go.
        std::string rest = r->decoder->Flush();  // First: held bytes may complete a stop string.
        result.finish_reason = r->decoder->finish_reason();
        if (!rest.empty()) {
          result.text += rest;
          if (on_token) {
            model::GeneratedToken text_only;
            text_only.id = -1;
            text_only.text = std::move(rest);
            on_token(text_only);
          }
        }
        return absl::OkStatus();
      }
      if (got.empty() && absl::Now() >= deadline) {
        return absl::DeadlineExceededError("the request's deadline passed");
      }
    }
  };
  const absl::Status status = drive();
  cancel.SetOnCancel(nullptr);
  {
    absl::MutexLock lock(&mu_);
    EndLocked(*r);
  }
  r->calls.Cancel();
  CloseSessions(*r);
  if (!status.ok()) return status;
  return result;
}

absl::Status Scheduler::OpenSessions(Request& request) {
  // Cancellation and the deadline are checked in between (OpenOn runs to its answer). A worker
  // that fails to open one (gone since it was planned) is failed over like a failed step.
  for (int i = 0; i < static_cast<int>(request.sessions.size()); ++i) {
    Request::Session& session = request.sessions[i];
    if (!session.id.empty()) continue;
    {
      absl::MutexLock lock(&mu_);
      if (request.stop) return absl::CancelledError("the client cancelled the request");
    }
    if (absl::Now() >= request.spec.deadline) {
      return absl::DeadlineExceededError("the request's deadline passed opening its sessions");
    }
    absl::StatusOr<std::string> id = OpenOn(request, session.worker);
    if (id.ok()) {
      absl::MutexLock lock(&request.state_mu);
      session.id = *std::move(id);
      continue;
    }
    if (!Retryable(id.status())) return id.status();
    RETURN_IF_ERROR(FailOver(request, session.segment, session.worker, id.status(), "error"));
    i = -1;  // The sessions changed: look again from the start.
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Scheduler::OpenOn(const Request& request, int worker) {
  const int64_t max_length =
      static_cast<int64_t>(request.spec.prompt_ids.size()) + request.spec.params.max_new_tokens;
  // Not through request.calls and not bounded by the request's deadline: an OpenSession the
  // coordinator gave up on could still open a session on the worker that nobody would close.
  // It runs to its answer (control_timeout at most).
  Calls calls(workers_);
  v1::OpenSessionRequest req;
  req.set_max_length(max_length);
  req.set_request_id(request.spec.request_id);
  v1::OpenSessionResponse resp;
  RETURN_IF_ERROR(calls.Call(
      worker, "OpenSession",
      [&](grpc::ClientContext* ctx) {
        return workers_->stub(worker)->OpenSession(ctx, req, &resp);
      },
      absl::Now() + options_.control_timeout));
  workers_->AddSession(worker, resp.session_id());  // Its lease is renewed from now on.
  return resp.session_id();
}

void Scheduler::CloseOn(const Request& request, int worker, const std::string& session_id) {
  // Not through request.calls: closing must happen after the request was cancelled.
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.control_timeout));
  v1::CloseSessionRequest req;
  req.set_session_id(session_id);
  v1::CloseSessionResponse resp;
  grpc::Status s = workers_->stub(worker)->CloseSession(&ctx, req, &resp);
  const bool closed = s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND;
  workers_->RemoveSession(worker, session_id, closed);
  if (!closed) {
    LogLine(kLog, absl::StrCat("request '", request.spec.request_id, "': closing session on ",
                               workers_->address(worker), ": ", rpc::FromGrpcStatus(s).ToString(),
                               " (closed once the worker answers again; its lease, no longer "
                               "renewed, frees it meanwhile)"));
  }
}

void Scheduler::CloseSessions(Request& request) {
  std::vector<Request::Session> sessions;
  {
    absl::MutexLock lock(&request.state_mu);
    request.closed = true;  // A micro-batch still failing over opens nothing more.
    sessions = request.sessions;
    if (request.history_bytes > 0) {
      observer_->OnReplayHistory(replay_bytes_.fetch_sub(request.history_bytes) -
                                 request.history_bytes);
    }
    request.history_bytes = 0;
    request.history.clear();
    if (!SameWorkers(request.spec.plan, request.original_plan)) {
      // The caller releases the plan it acquired.
      workers_->MovePlans(HopsOf(request.spec.plan), HopsOf(request.original_plan));
    }
  }
  for (const Request::Session& session : sessions) {
    if (!session.id.empty()) CloseOn(request, session.worker, session.id);
  }
}

namespace {

// One Prefetch in flight; deletes itself when gRPC reports its end.
struct PrefetchCall {
  grpc::ClientContext ctx;
  v1::PrefetchRequest req;
  v1::PrefetchResponse resp;
};

}  // namespace

void Scheduler::Prefetch(const ScheduledRequest& request) {
  std::vector<std::pair<int, std::vector<int>>> per_worker;  // In plan order.
  for (const Segment& segment : request.plan.segments) {
    for (const Hop& hop : segment.hops) {
      auto it = std::find_if(per_worker.begin(), per_worker.end(),
                             [&](const auto& w) { return w.first == hop.worker; });
      if (it == per_worker.end()) {
        per_worker.emplace_back(hop.worker, std::vector<int>());
        it = per_worker.end() - 1;
      }
      it->second.insert(it->second.end(), hop.layers.begin(), hop.layers.end());
    }
  }
  for (const auto& [worker, layers] : per_worker) {
    auto* call = new PrefetchCall();
    call->ctx.set_deadline(
        absl::ToChronoTime(std::min(absl::Now() + options_.prefetch_timeout, request.deadline)));
    call->req.mutable_layers()->Assign(layers.begin(), layers.end());
    workers_->stub(worker)->async()->Prefetch(&call->ctx, &call->req, &call->resp,
                                              [call](grpc::Status) { delete call; });
  }
}

std::shared_ptr<Scheduler::MicroBatch> Scheduler::ComposeLocked() {
  if (stopping_ || batches_in_flight_ >= max_micro_batches_) return nullptr;
  std::vector<std::shared_ptr<Request>> idle;
  int live = 0;
  for (const auto& r : running_) {
    if (r->state != Request::State::kRunning || r->finished) continue;
    ++live;
    if (!r->in_flight) idle.push_back(r);
  }
  if (idle.empty()) return nullptr;
  // Least recently stepped first (then arrival): every request gets its turn.
  std::sort(idle.begin(), idle.end(), [](const auto& a, const auto& b) {
    return a->last_stepped != b->last_stepped ? a->last_stepped < b->last_stepped : a->seq < b->seq;
  });
  // Spread the running requests over the micro-batches the pipeline holds.
  model::BatchLimits limits = options_.limits;
  limits.max_batch_sequences = std::max(
      1,
      std::min(limits.max_batch_sequences, (live + max_micro_batches_ - 1) / max_micro_batches_));
  std::vector<model::SequenceDecoder*> decoders;
  for (const auto& r : idle) decoders.push_back(r->decoder.get());
  const std::vector<std::pair<int, int64_t>> step = model::ComposeStep(decoders, limits);
  if (step.empty()) return nullptr;  // Cannot happen with live decoders.
  auto batch = std::make_shared<MicroBatch>();
  for (const auto& [a, rows] : step) {
    Request& r = *idle[a];
    r.in_flight = true;
    r.last_stepped = ++steps_;
    MicroBatch::Entry e;
    e.req = idle[a];
    e.start = r.decoder->position();
    e.rows = rows;
    batch->entries.push_back(std::move(e));
  }
  ++batches_in_flight_;
  return batch;
}

void Scheduler::Loop() {
  absl::MutexLock lock(&mu_);
  while (true) {
    std::shared_ptr<MicroBatch> batch;
    while (!stopping_ && (batch = ComposeLocked()) == nullptr) loop_cv_.Wait(&mu_);
    if (stopping_) return;
    mu_.Unlock();
    if (!runners_->TrySchedule([this, batch] { RunMicroBatch(batch); })) RunMicroBatch(batch);
    mu_.Lock();
  }
}

void Scheduler::RunMicroBatch(std::shared_ptr<MicroBatch> batch) {
  // The runner carries on with the next micro-batch it can compose as it ends one, so that a
  // step's successor starts without waiting for the loop thread to wake up.
  while (batch != nullptr) {
    const int64_t began = absl::GetCurrentTimeNanos();
    batch = RunStep(*batch);
    step_ns_.fetch_add(absl::GetCurrentTimeNanos() - began);
    micro_batches_.fetch_add(1);
  }
}

std::shared_ptr<Scheduler::MicroBatch> Scheduler::RunStep(MicroBatch& batch) {
  const model::ModelConfig& c = model_->config();
  const model::ModelEnds& ends = model_->ends();
  int64_t tokens = 0;
  for (MicroBatch::Entry& e : batch.entries) {
    tokens += e.rows;
    if (e.req->abandoned.load()) {
      e.status = absl::CancelledError("the request ended");
      continue;
    }
    absl::Span<const int64_t> ids = e.req->decoder->NextInput(e.rows);
    absl::StatusOr<HostTensor> h = ends.Embed(ids, e.start);
    if (!h.ok()) {
      e.status = h.status();
      continue;
    }
    e.h = *std::move(h);
    absl::MutexLock lock(&e.req->state_mu);
    e.req->steps.emplace_back(e.start, e.rows);
  }
  observer_->OnBatchStep(static_cast<int>(batch.entries.size()), tokens);

  RunHops(batch);

  // The last row of each request whose logits are due, gathered for one head product.
  HostTensor last;
  std::vector<MicroBatch::Entry*> due;
  for (MicroBatch::Entry& e : batch.entries) {
    if (!e.status.ok() || e.req->abandoned.load()) continue;
    if (!e.req->decoder->Fed(e.rows)) continue;
    absl::StatusOr<HostTensor> row = SliceRows(e.out, e.rows - 1, 1);
    if (!row.ok()) {
      e.status = row.status();
      continue;
    }
    last.dtype = row->dtype;
    last.data += row->data;
    due.push_back(&e);
  }
  if (!due.empty()) {
    last.shape = {static_cast<int64_t>(due.size()), c.hidden_size};
    absl::StatusOr<HostTensor> logits = model::LastRowLogits(ends, last);
    if (!logits.ok()) {
      for (MicroBatch::Entry* e : due) e->status = logits.status();
    } else {
      const float* base = reinterpret_cast<const float*>(logits->data.data());
      for (size_t k = 0; k < due.size(); ++k) {
        due[k]->token = due[k]->req->decoder->Accept(
            absl::MakeConstSpan(base + k * c.vocab_size, c.vocab_size));
      }
    }
  }
  for (MicroBatch::Entry& e : batch.entries) {
    if (e.status.ok() && !e.req->abandoned.load()) observer_->OnStep(e.req->spec.series_blocks);
  }

  absl::MutexLock lock(&mu_);
  for (MicroBatch::Entry& e : batch.entries) {
    Request& r = *e.req;
    r.in_flight = false;
    if (r.state == Request::State::kEnded) continue;
    if (!e.status.ok()) {
      r.failure = e.status;
      r.finished = true;
    } else {
      r.failovers_in_row = 0;
      if (e.token.has_value()) r.tokens.push_back(*std::move(e.token));
      if (r.decoder->done()) r.finished = true;
    }
    r.cv.Signal();
  }
  --batches_in_flight_;
  batches_cv_.SignalAll();
  std::shared_ptr<MicroBatch> next = ComposeLocked();
  if (next == nullptr) loop_cv_.Signal();
  return next;
}

namespace {

// One row set of a stage's call: a session's step.
struct StageItem {
  std::string session_id;
  uint64_t step_id = 0;
  int64_t start = 0;
  const HostTensor* in = nullptr;
  absl::Time deadline;
};

// The function a stage's call goes through (a Calls::Call with the worker bound).
using CallFn = std::function<absl::Status(
    const char*, const std::function<grpc::Status(grpc::ClientContext*)>&, absl::Time)>;

// A streamed call's exchange: writes `pieces`, then reads the reply's pieces back together into
// `header` (every field but hidden.data) and `hidden`.
template <typename Request, typename Response>
grpc::Status Exchange(grpc::ClientContext* ctx, grpc::ClientReaderWriter<Request, Response>* stream,
                      const std::vector<Request>& pieces, Response* header, HostTensor* hidden) {
  for (const Request& piece : pieces) {
    if (!stream->Write(piece)) break;  // The server ended the call; Finish says why.
  }
  stream->WritesDone();
  rpc::PieceAssembler<Response> assembler(INT64_MAX, "reply hidden");
  Response piece;
  absl::Status a;
  while (a.ok() && stream->Read(&piece)) a = assembler.Add(&piece);
  if (!a.ok()) ctx->TryCancel();
  grpc::Status fs = stream->Finish();
  if (!fs.ok()) return fs;
  if (!a.ok()) return rpc::ToGrpcStatus(a);
  if (!assembler.complete()) {
    return grpc::Status(grpc::StatusCode::DATA_LOSS, "reply hidden state incomplete");
  }
  header->Swap(assembler.mutable_header());
  *hidden = assembler.TakeHidden();
  return grpc::Status::OK;
}

// A stage's call on one worker for one layer range: every row set in one ForwardBatch (streamed
// when large), or one Forward per session against a worker without ForwardBatch. One result per
// item. Runs with the worker's stage lock held.
class StageCall {
 public:
  StageCall(WorkerSet* workers, CoordinatorObserver* observer, absl::Duration step_timeout)
      : workers_(workers), observer_(observer), step_timeout_(step_timeout) {}

  // The whole batch at once (rpc/batch_codec.h); a status that is not OK is the call's
  // (UNIMPLEMENTED: fall back), otherwise `out` holds each item's rows or its own failure.
  absl::Status Batch(int worker, const std::vector<int>& layers,
                     const std::vector<StageItem>& items, absl::Time deadline, const CallFn& call,
                     std::vector<absl::StatusOr<HostTensor>>& out) {
    std::vector<rpc::BatchStepSpec> specs;
    HostTensor cat;
    int64_t total = 0;
    for (const StageItem& item : items) {
      const int64_t rows = item.in->shape.empty() ? 0 : item.in->shape[0];
      specs.push_back(rpc::BatchStepSpec{item.session_id, item.step_id, item.start, rows});
      total += rows;
      cat.dtype = item.in->dtype;
      cat.data += item.in->data;
      if (item.in->shape.size() == 2) cat.shape = {0, item.in->shape[1]};
    }
    if (cat.shape.size() != 2) return absl::InternalError("a stage without rows");
    cat.shape[0] = total;
    const int64_t width = cat.shape[1];
    const DType dtype = cat.dtype;
    std::vector<v1::ForwardBatchRequest> msgs =
        rpc::EncodeForwardBatch(specs, layers, std::move(cat));
    const absl::Time start = absl::Now();
    v1::ForwardBatchResponse resp;
    HostTensor hidden;
    absl::Status s;
    if (msgs.size() == 1) {
      s = call(
          "ForwardBatch",
          [&](grpc::ClientContext* ctx) {
            return workers_->stub(worker)->ForwardBatch(ctx, msgs[0], &resp);
          },
          deadline);
      if (s.ok()) {
        auto t = rpc::MoveTensorFromProto(resp.mutable_hidden(), /*rank=*/2, "reply hidden");
        if (t.ok()) hidden = *std::move(t);
        s = t.status();
      }
    } else {
      s = call(
          "ForwardBatchStream",
          [&](grpc::ClientContext* ctx) {
            auto stream = workers_->stub(worker)->ForwardBatchStream(ctx);
            return Exchange(ctx, stream.get(), msgs, &resp, &hidden);
          },
          deadline);
    }
    if (s.code() == absl::StatusCode::kUnimplemented) return s;
    observer_->OnWorkerStep(workers_->address(worker), absl::ToDoubleSeconds(absl::Now() - start),
                            s.code());
    const std::string where = absl::StrCat("layers ", FormatLayers(layers));
    out.clear();
    absl::StatusOr<std::vector<rpc::BatchStepReply>> replies =
        s.ok() ? rpc::SplitForwardBatchResponse(specs, resp, hidden, width, dtype)
               : absl::StatusOr<std::vector<rpc::BatchStepReply>>(s);
    if (!replies.ok()) {
      for (size_t k = 0; k < items.size(); ++k) {
        out.push_back(
            Annotate(replies.status(), absl::StrCat(where, " at position ", items[k].start)));
      }
      return absl::OkStatus();
    }
    for (size_t k = 0; k < items.size(); ++k) {
      rpc::BatchStepReply& r = (*replies)[k];
      if (!r.status.ok()) {
        out.push_back(
            absl::Status(r.status.code(), absl::StrCat("worker ", workers_->address(worker),
                                                       ": ForwardBatch: ", r.status.message(), "; ",
                                                       where, " at position ", items[k].start)));
      } else {
        out.push_back(std::move(r.hidden));
      }
    }
    return absl::OkStatus();
  }

  // One session's step through Forward (ForwardStream when large).
  absl::StatusOr<HostTensor> One(int worker, const std::vector<int>& layers, const StageItem& item,
                                 const CallFn& call) {
    const HostTensor& in = *item.in;
    v1::ForwardRequest req;
    req.set_session_id(item.session_id);
    req.set_step_id(item.step_id);
    req.set_start_position(item.start);
    req.mutable_layers()->Assign(layers.begin(), layers.end());
    const absl::Time start = absl::Now();
    const absl::Time deadline = std::min(start + step_timeout_, item.deadline);
    HostTensor out;
    absl::Status s;
    if (in.data.size() <= rpc::kMaxTensorPieceBytes) {
      rpc::CopyTensorToProto(in, req.mutable_hidden());
      v1::ForwardResponse resp;
      s = call(
          "Forward",
          [&](grpc::ClientContext* ctx) {
            return workers_->stub(worker)->Forward(ctx, req, &resp);
          },
          deadline);
      if (s.ok()) {
        auto t = rpc::MoveTensorFromProto(resp.mutable_hidden(), /*rank=*/2, "reply hidden");
        if (t.ok()) out = *std::move(t);
        s = t.status();
      }
    } else {
      s = call(
          "ForwardStream",
          [&](grpc::ClientContext* ctx) {
            std::vector<v1::ForwardRequest> pieces;
            for (size_t off = 0; off < in.data.size(); off += rpc::kMaxTensorPieceBytes) {
              v1::ForwardRequest piece;
              if (off == 0) piece = req;  // The first piece carries every field.
              rpc::CopyTensorPieceToProto(in, off,
                                          std::min(rpc::kMaxTensorPieceBytes, in.data.size() - off),
                                          /*with_header=*/off == 0, piece.mutable_hidden());
              pieces.push_back(std::move(piece));
            }
            v1::ForwardResponse header;
            auto stream = workers_->stub(worker)->ForwardStream(ctx);
            return Exchange(ctx, stream.get(), pieces, &header, &out);
          },
          deadline);
    }
    observer_->OnWorkerStep(workers_->address(worker), absl::ToDoubleSeconds(absl::Now() - start),
                            s.code());
    if (!s.ok()) {
      return Annotate(s,
                      absl::StrCat("layers ", FormatLayers(layers), " at position ", item.start));
    }
    if (out.shape != in.shape) {
      return absl::InternalError(absl::StrCat("worker ", workers_->address(worker),
                                              " answered shape [", absl::StrJoin(out.shape, ","),
                                              "] for [", absl::StrJoin(in.shape, ","), "]"));
    }
    return out;
  }

 private:
  WorkerSet* const workers_;
  CoordinatorObserver* const observer_;
  const absl::Duration step_timeout_;
};

}  // namespace

void Scheduler::RunHops(MicroBatch& batch) {
  // A lane is one segment's chain of hops for one request: one lane per request in sequential
  // combine (it moves on to the next segment), one per segment in parallel combine.
  struct Lane {
    int entry = 0;
    int segment = 0;
    size_t hop = 0;
    HostTensor cur;
    bool done = false;
  };
  std::vector<Lane> lanes;
  for (int i = 0; i < static_cast<int>(batch.entries.size()); ++i) {
    MicroBatch::Entry& e = batch.entries[i];
    if (!e.status.ok()) continue;
    const ExecutionPlan& plan = e.req->spec.plan;
    if (plan.parallel) {
      e.outs.resize(plan.segments.size());
      e.lanes_left = static_cast<int>(plan.segments.size());
      for (int b = 0; b < static_cast<int>(plan.segments.size()); ++b) {
        lanes.push_back(Lane{i, b, 0, e.h, false});
      }
    } else {
      e.x = e.h;
      lanes.push_back(Lane{i, 0, 0, e.h, false});
    }
  }
  // A lane's segment is through: gate (sequential) or combine (parallel, once all are).
  auto segment_done = [&](Lane& lane) {
    MicroBatch::Entry& e = batch.entries[lane.entry];
    const ExecutionPlan& plan = e.req->spec.plan;
    const int n = static_cast<int>(plan.segments.size());
    if (plan.parallel) {
      e.outs[lane.segment] = std::move(lane.cur);
      lane.done = true;
      if (--e.lanes_left > 0) return;
      std::vector<float> weights;
      for (const Segment& s : plan.segments) weights.push_back(s.weight);
      absl::StatusOr<HostTensor> out = model::CombineResiduals(e.h, e.outs, weights);
      if (out.ok()) {
        e.out = *std::move(out);
      } else {
        e.status = out.status();
      }
      e.outs.clear();
      return;
    }
    // The segment ran ungated on its workers; its gate is applied here, once.
    absl::StatusOr<HostTensor> x =
        model::GateResidual(e.x, std::move(lane.cur), plan.segments[lane.segment].weight);
    if (!x.ok()) {
      e.status = x.status();
      lane.done = true;
      return;
    }
    e.x = *std::move(x);
    if (++lane.segment < n) {
      lane.hop = 0;
      lane.cur = e.x;
      return;
    }
    e.out = std::move(e.x);
    lane.done = true;
  };

  struct Group {
    int worker = 0;
    const std::vector<int>* layers = nullptr;
    std::vector<int> lanes;
    std::vector<absl::StatusOr<HostTensor>> out;
  };
  const absl::Duration step_deadline = StepDeadline();
  StageCall stage(workers_, observer_, step_deadline);
  while (true) {
    std::vector<Group> groups;
    for (int li = 0; li < static_cast<int>(lanes.size()); ++li) {
      Lane& lane = lanes[li];
      if (lane.done) continue;
      MicroBatch::Entry& e = batch.entries[lane.entry];
      if (e.status.ok() && e.req->abandoned.load()) e.status = absl::CancelledError("ended");
      if (!e.status.ok()) {
        lane.done = true;
        continue;
      }
      if (!workers_->usable(e.req->spec.plan.segments[lane.segment].hops[lane.hop].worker)) {
        // Marked down (another call failed) or draining: move there now when a replica is at
        // hand (else the call itself tells whether the worker still serves the session).
        const int from = e.req->spec.plan.segments[lane.segment].hops[lane.hop].worker;
        std::vector<int> layers;
        for (const Hop& h : e.req->spec.plan.segments[lane.segment].hops) {
          if (h.worker == from) layers.insert(layers.end(), h.layers.begin(), h.layers.end());
        }
        std::sort(layers.begin(), layers.end());
        if (workers_->PickReplica(layers) >= 0) {
          const bool draining = workers_->draining(from);
          absl::Status s = FailOver(
              *e.req, lane.segment, from,
              absl::UnavailableError(absl::StrCat("worker ", workers_->address(from),
                                                  draining ? " is draining" : " is marked down")),
              draining ? "drain" : "down");
          if (!s.ok()) {
            e.status = s;
            lane.done = true;
            continue;
          }
        }
      }
      const Hop& hop = e.req->spec.plan.segments[lane.segment].hops[lane.hop];
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
        return g.worker == hop.worker && *g.layers == hop.layers;
      });
      if (it == groups.end()) {
        groups.push_back(Group{hop.worker, &hop.layers, {}, {}});
        it = groups.end() - 1;
      }
      it->lanes.push_back(li);
    }
    if (groups.empty()) break;
    auto run_group = [&](Group& g) {
      std::vector<StageItem> items;
      absl::Time deadline = absl::InfinitePast();
      for (int li : g.lanes) {
        Lane& lane = lanes[li];
        Request& r = *batch.entries[lane.entry].req;
        Request::Session* session = r.SessionFor(lane.segment, g.worker);
        items.push_back(StageItem{session->id, ++session->last_step,
                                  batch.entries[lane.entry].start, &lane.cur, r.spec.deadline});
        deadline = std::max(deadline, r.spec.deadline);
      }
      deadline = std::min(deadline, absl::Now() + step_deadline);
      absl::MutexLock stage_lock(&stage_mu_[g.worker]);
      const absl::Time start = absl::Now();
      if (!no_batch_[g.worker].load()) {
        absl::Status s = stage.Batch(
            g.worker, *g.layers, items, deadline,
            [&](const char* method, const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                absl::Time d) { return batch_calls_->Call(g.worker, method, rpc, d); },
            g.out);
        if (s.code() == absl::StatusCode::kUnimplemented) {
          if (!no_batch_[g.worker].exchange(true)) {
            LogLine(kLog, absl::StrCat("worker ", workers_->address(g.worker),
                                       " has no ForwardBatch: one Forward per session there"));
          }
        } else if (!s.ok()) {
          g.out.assign(items.size(), s);
        } else {
          step_deadlines_.Note(absl::Now() - start);
        }
      }
      if (no_batch_[g.worker].load()) {
        g.out.clear();
        for (size_t k = 0; k < items.size(); ++k) {
          Request& r = *batch.entries[lanes[g.lanes[k]].entry].req;
          g.out.push_back(stage.One(
              g.worker, *g.layers, items[k],
              [&](const char* method, const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                  absl::Time d) { return r.calls.Call(g.worker, method, rpc, d); }));
        }
      }
      observer_->OnWorkerBusy(g.worker, absl::Now() - start);
    };
    {
      FanOut fan(options_.hop_pool);
      for (size_t g = 1; g < groups.size(); ++g) {
        fan.Spawn([&, g] { run_group(groups[g]); });
      }
      run_group(groups[0]);
      fan.Join();
    }
    // Each lane's result; lanes whose call failed in a way a fail-over mends are retried below.
    std::vector<std::vector<std::pair<int, absl::Status>>> retries(batch.entries.size());
    std::vector<int> advance;
    for (Group& g : groups) {
      for (size_t k = 0; k < g.lanes.size(); ++k) {
        const int li = g.lanes[k];
        Lane& lane = lanes[li];
        MicroBatch::Entry& e = batch.entries[lane.entry];
        if (!g.out[k].ok()) {
          if (e.status.ok() && Retryable(g.out[k].status()) && !e.req->abandoned.load() &&
              absl::Now() < e.req->spec.deadline) {
            retries[lane.entry].emplace_back(li, g.out[k].status());
            continue;
          }
          if (e.status.ok()) e.status = g.out[k].status();
          lane.done = true;
          continue;
        }
        if (!e.status.ok()) {
          lane.done = true;
          continue;
        }
        Record(*e.req, lane.segment, static_cast<int>(lane.hop), lane.cur);
        lane.cur = *std::move(g.out[k]);
        advance.push_back(li);
      }
    }
    // Fail-overs: each request's on its own (in parallel over the hop pool), then its step again.
    auto recover = [&](int entry) {
      MicroBatch::Entry& e = batch.entries[entry];
      Request& r = *e.req;
      for (auto& [li, failure] : retries[entry]) {
        Lane& lane = lanes[li];
        absl::Status why = failure;
        int worker = r.spec.plan.segments[lane.segment].hops[lane.hop].worker;
        while (e.status.ok()) {
          absl::Status s = FailOver(r, lane.segment, worker, why, FailoverReason(why));
          if (!s.ok()) {
            e.status = s;
            break;
          }
          const Hop& hop = r.spec.plan.segments[lane.segment].hops[lane.hop];
          Request::Session* session = r.SessionFor(lane.segment, hop.worker);
          if (session == nullptr) {
            e.status = absl::InternalError("a fail-over left a hop without its session");
            break;
          }
          absl::StatusOr<HostTensor> out = ForwardOn(
              r, hop.worker, session->id, ++session->last_step, e.start, hop.layers, lane.cur);
          if (out.ok()) {
            Record(r, lane.segment, static_cast<int>(lane.hop), lane.cur);
            lane.cur = *std::move(out);
            break;
          }
          if (!Retryable(out.status()) || r.abandoned.load()) {
            e.status = out.status();
            break;
          }
          why = out.status();
          worker = hop.worker;
        }
      }
    };
    {
      FanOut fan(options_.hop_pool);
      int first = -1;
      for (int i = 0; i < static_cast<int>(retries.size()); ++i) {
        if (retries[i].empty()) continue;
        if (first < 0) {
          first = i;
        } else {
          fan.Spawn([&, i] { recover(i); });
        }
      }
      if (first >= 0) recover(first);
      fan.Join();
    }
    for (const auto& per_entry : retries) {
      for (const auto& [li, failure] : per_entry) {
        if (batch.entries[lanes[li].entry].status.ok()) {
          advance.push_back(li);
        } else {
          lanes[li].done = true;
        }
      }
    }
    for (int li : advance) {
      Lane& lane = lanes[li];
      MicroBatch::Entry& e = batch.entries[lane.entry];
      if (!e.status.ok()) {
        lane.done = true;
        continue;
      }
      if (++lane.hop == e.req->spec.plan.segments[lane.segment].hops.size()) segment_done(lane);
    }
  }
}

std::vector<ReplayGroup> ReplayGroups(absl::Span<const std::pair<int64_t, int64_t>> steps,
                                      absl::Span<const int> done, int64_t max_rows) {
  // The hops step i goes to: those with done[j] > i.
  auto same_hops = [&](size_t a, size_t b) {
    return std::all_of(done.begin(), done.end(), [&](int d) {
      return (d > static_cast<int64_t>(a)) == (d > static_cast<int64_t>(b));
    });
  };
  std::vector<ReplayGroup> groups;
  for (size_t i = 0; i < steps.size();) {
    ReplayGroup g{static_cast<int>(i), 1, steps[i].first, steps[i].second};
    size_t e = i + 1;
    if (g.rows <= max_rows) {
      for (; e < steps.size(); ++e) {
        const auto [start, rows] = steps[e];
        if (rows > max_rows || g.rows + rows > max_rows || start != g.start + g.rows ||
            !same_hops(i, e)) {
          break;
        }
        g.rows += rows;
        ++g.steps;
      }
    }
    groups.push_back(g);
    i = e;
  }
  return groups;
}

absl::Duration Scheduler::StepDeadline() const { return step_deadlines_.Deadline(); }

void Scheduler::Record(Request& r, int segment, int hop, const HostTensor& in) {
  const int64_t began = absl::GetCurrentTimeNanos();
  absl::MutexLock lock(&r.state_mu);
  if (r.closed) return;
  Request::HopHistory& h = r.history[segment][hop];
  ++h.steps_done;
  if (!h.keep || r.history_dropped) return;
  const int64_t add = static_cast<int64_t>(in.data.size());
  if (replay_bytes_.load() + add > options_.failover.replay_budget_bytes) {
    LogLine(kLog, absl::StrCat("request '", r.spec.request_id, "': the replay budget is spent (",
                               replay_bytes_.load(), " of --replay-budget ",
                               options_.failover.replay_budget_bytes, " bytes held): its ",
                               r.history_bytes,
                               " bytes of replay history are dropped; a fail-over recomputes its "
                               "hops' inputs from the ids"));
    observer_->OnReplayHistory(replay_bytes_.fetch_sub(r.history_bytes) - r.history_bytes);
    r.history_bytes = 0;
    r.history_dropped = true;
    for (auto& segment_history : r.history) {
      for (Request::HopHistory& each : segment_history) each.inputs = HostTensor();
    }
    return;
  }
  if (h.inputs.shape.size() != 2) {
    h.inputs = in;
  } else {
    h.inputs.data += in.data;
    h.inputs.shape[0] += in.shape[0];
  }
  r.history_bytes += add;
  observer_->OnReplayHistory(replay_bytes_.fetch_add(add) + add);
  history_appends_.fetch_add(1);
  history_append_bytes_.fetch_add(add);
  history_append_ns_.fetch_add(absl::GetCurrentTimeNanos() - began);
}

absl::StatusOr<HostTensor> Scheduler::ForwardOn(Request& r, int worker,
                                                const std::string& session_id, uint64_t step_id,
                                                int64_t start, const std::vector<int>& layers,
                                                const HostTensor& in) {
  StageCall stage(workers_, observer_, StepDeadline());
  StageItem item{session_id, step_id, start, &in, r.spec.deadline};
  return stage.One(
      worker, layers, item,
      [&](const char* method, const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
          absl::Time d) { return r.calls.Call(worker, method, rpc, d); });
}

namespace {

// A fire-and-forget CloseSession (to a worker a session was moved off); deletes itself when gRPC
// reports its end.
struct CloseCall {
  grpc::ClientContext ctx;
  v1::CloseSessionRequest req;
  v1::CloseSessionResponse resp;
};

}  // namespace

absl::Status Scheduler::FailOver(Request& r, int segment, int worker, const absl::Status& why,
                                 const char* reason) {
  absl::Status failure = why;
  std::string label = reason;  // After a failed try: what failed then.
  while (true) {
    const std::string from = workers_->address(worker);
    std::vector<int> hops;
    std::vector<int> layers;
    const std::vector<Hop>& plan_hops = r.spec.plan.segments[segment].hops;
    for (int k = 0; k < static_cast<int>(plan_hops.size()); ++k) {
      if (plan_hops[k].worker != worker) continue;
      hops.push_back(k);
      layers.insert(layers.end(), plan_hops[k].layers.begin(), plan_hops[k].layers.end());
    }
    std::sort(layers.begin(), layers.end());
    r.faults.push_back(absl::StrCat(from, ": ", failure.ToString()));
    if (r.faults.size() > kMaxFaults) r.faults.erase(r.faults.begin());
    if (++r.failovers_in_row > options_.failover.failover_attempts) {
      return absl::UnavailableError(absl::StrCat(
          "layers ", FormatLayers(layers), ": gave up after ", options_.failover.failover_attempts,
          " fail-overs without a step completing (--failover-attempts); last failures: ",
          absl::StrJoin(r.faults, "; ")));
    }
    const bool known_state = label == "drain" || label == "down";
    if (!known_state && (failure.code() == absl::StatusCode::kUnavailable ||
                         failure.code() == absl::StatusCode::kDeadlineExceeded)) {
      workers_->MarkUnreachable(worker, failure);  // The monitor probes it.
    }
    observer_->OnFailover(label, from);
    const absl::Time began = absl::Now();
    const absl::Time give_up = std::min(began + options_.failover.failover_wait, r.spec.deadline);
    // Another usable worker hosting the layers, or this one once it answers again.
    int target = -1;
    while (true) {
      if (r.abandoned.load()) return absl::CancelledError("the request ended");
      if (shutting_down_.load()) return absl::UnavailableError("the coordinator is shutting down");
      target = workers_->PickReplica(layers);
      if (target >= 0) break;
      if (absl::Now() >= give_up) {
        return absl::UnavailableError(
            absl::StrCat("layers ", FormatLayers(layers), ": no usable worker hosts them within ",
                         absl::FormatDuration(give_up - began), " (--failover-wait) after ", from,
                         " failed: ", failure.ToString()));
      }
      // The failed worker and every other host of the layers that is down (a replica may have
      // come back since the monitor's last poll), every 250 ms at most per waiting request: no
      // storm of probes at a dead address.
      const absl::Time probed = absl::Now();
      workers_->ProbeHosts(layers, std::min(options_.control_timeout, absl::Seconds(1)));
      if (workers_->PickReplica(layers) < 0) {
        absl::SleepFor(absl::Milliseconds(250) - (absl::Now() - probed));
      }
    }
    // The session there: the request's own when it already has one for this segment.
    Request::Session* existing = target != worker ? r.SessionFor(segment, target) : nullptr;
    std::string id = existing != nullptr ? existing->id : "";
    bool fresh = false;
    if (id.empty()) {
      absl::StatusOr<std::string> opened = OpenOn(r, target);
      if (!opened.ok()) {
        if (!Retryable(opened.status())) return opened.status();
        failure = opened.status();  // (It names the target; the hops stay where they are.)
        label = FailoverReason(failure);
        continue;
      }
      id = *std::move(opened);
      fresh = true;
    }
    std::string old_id;
    bool closed = false;
    {
      absl::MutexLock lock(&r.state_mu);
      closed = r.closed;
    }
    if (!closed) {
      absl::MutexLock lock(&r.state_mu);
      const std::vector<std::vector<Hop>> before = HopsOf(r.spec.plan);
      for (int k : hops) r.spec.plan.segments[segment].hops[k].worker = target;
      for (size_t i = 0; i < r.sessions.size(); ++i) {
        Request::Session& s = r.sessions[i];
        if (s.segment != segment || s.worker != worker) continue;
        old_id = s.id;
        if (existing != nullptr) {
          existing->id = id;  // (Unchanged unless it was opened just now.)
          r.sessions.erase(r.sessions.begin() + static_cast<std::ptrdiff_t>(i));
        } else {
          s = Request::Session{segment, target, id, 0};
        }
        break;
      }
      workers_->MovePlans(before, HopsOf(r.spec.plan));
    }
    if (closed) {  // The request ended meanwhile; only the Run thread closes, and it is done.
      if (fresh) CloseOn(r, target, id);
      return absl::CancelledError("the request ended");
    }
    if (!old_id.empty() && (target != worker || old_id != id)) {
      // Best effort: a draining worker exits once its sessions are closed; a dead one has none.
      auto* call = new CloseCall();
      call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.failover.failover_wait));
      call->req.set_session_id(old_id);
      workers_->stub(worker)->async()->CloseSession(&call->ctx, &call->req, &call->resp,
                                                    [call](grpc::Status) { delete call; });
    }
    int64_t positions = 0;
    int64_t bytes = 0;
    bool recomputed = false;
    const absl::Time replay_began = absl::Now();
    absl::Status replayed = Replay(r, segment, hops, target, &positions, &bytes, &recomputed);
    const absl::Time replay_ended = absl::Now();
    const absl::Duration took = replay_ended - began;
    if (!replayed.ok()) {
      if (!Retryable(replayed) || r.abandoned.load()) return replayed;
      failure = replayed;
      label = FailoverReason(failure);
      worker = target;
      continue;
    }
    observer_->OnReplay(positions, bytes, absl::ToDoubleSeconds(took));
    LogLine(kLog,
            absl::StrCat("request '", r.spec.request_id, "': fail-over (", label, ") of layers ",
                         FormatLayers(layers), " from ", from, " to ", workers_->address(target),
                         ": ", failure.ToString(), "; replayed ", positions, " positions (", bytes,
                         " bytes, ", recomputed ? "recomputed from the ids" : "from the history",
                         ") in ", Trunc(replay_ended - replay_began), " after ",
                         Trunc(replay_began - began), " finding a worker and opening"));
    return absl::OkStatus();
  }
}

absl::Status Scheduler::Replay(Request& r, int segment, const std::vector<int>& hops, int worker,
                               int64_t* positions, int64_t* bytes, bool* recomputed) {
  const ExecutionPlan& plan = r.spec.plan;
  std::vector<std::pair<int64_t, int64_t>> steps;
  std::vector<int> done;
  bool dropped = false;
  {
    absl::MutexLock lock(&r.state_mu);
    if (r.closed) return absl::CancelledError("the request ended");
    steps = r.steps;
    dropped = r.history_dropped;
    for (int k : hops) done.push_back(r.history[segment][k].steps_done);
  }
  int max_done = 0;
  int sim_hops = 0;  // Hops of `segment` before the last moved hop that must be recomputed.
  for (size_t j = 0; j < hops.size(); ++j) {
    max_done = std::max(max_done, done[j]);
    const bool embedding = hops[j] == 0 && (segment == 0 || plan.parallel);
    if (done[j] > 0 && dropped && !embedding) sim_hops = std::max(sim_hops, hops[j]);
  }
  if (max_done == 0) return absl::OkStatus();
  if (max_done > static_cast<int>(steps.size()))
    return absl::InternalError("replay past the steps");
  Request::Session* session = r.SessionFor(segment, worker);
  if (session == nullptr) return absl::InternalError("replay without a session");
  const std::string session_id = session->id;
  std::vector<int64_t> ids = r.decoder->prompt_ids();
  ids.insert(ids.end(), r.decoder->generated_ids().begin(), r.decoder->generated_ids().end());
  const model::ModelEnds& ends = model_->ends();
  // The recompute path: temporary sessions on the hops before, in lane order (sequential combine:
  // every segment before this one too), fed every step so that each hop's input is rebuilt.
  const bool recompute = dropped && (sim_hops > 0 || (segment > 0 && !plan.parallel));
  *recomputed = recompute;
  struct Temp {
    int segment, hop, worker;
    std::string id;
    uint64_t last_step = 0;
  };
  std::vector<Temp> temps;
  auto close_temps = [&] {
    for (const Temp& t : temps) {
      if (!t.id.empty()) CloseOn(r, t.worker, t.id);
    }
  };
  if (recompute) {
    const int first_segment = plan.parallel ? segment : 0;
    for (int b = first_segment; b <= segment; ++b) {
      const int upto = b == segment ? sim_hops : static_cast<int>(plan.segments[b].hops.size());
      for (int k = 0; k < upto; ++k) {
        const int w = plan.segments[b].hops[k].worker;
        absl::StatusOr<std::string> id = OpenOn(r, w);
        if (!id.ok()) {
          close_temps();
          return id.status();
        }
        temps.push_back(Temp{b, k, w, *std::move(id)});
      }
    }
  }
  // Consecutive short steps go as one (ReplayGroups): each worker the replay calls computes a
  // step of up to its invariant_rows rows row by row with the bits of one-row steps (worker.proto
  // InfoResponse), on f32 or bf16 hidden states.
  int64_t merge_rows = workers_->invariant_rows(worker);
  for (const Temp& t : temps) merge_rows = std::min(merge_rows, workers_->invariant_rows(t.worker));
  if (merge_rows > 1 && !ids.empty()) {
    absl::StatusOr<HostTensor> probe = ends.Embed(absl::MakeConstSpan(ids).subspan(0, 1), 0);
    if (!probe.ok() || (probe->dtype != DType::kF32 && probe->dtype != DType::kBF16)) {
      merge_rows = 0;
    }
  }
  const std::vector<ReplayGroup> groups =
      ReplayGroups(absl::MakeConstSpan(steps).subspan(0, max_done), done, merge_rows);
  int64_t row = 0;  // The history's first row of the group.
  absl::Status status;
  for (size_t gi = 0; gi < groups.size() && status.ok(); ++gi) {
    const int i = groups[gi].first_step;
    const int64_t start = groups[gi].start;
    const int64_t rows = groups[gi].rows;
    if (r.abandoned.load()) {
      status = absl::CancelledError("the request ended");
      break;
    }
    if (start + rows > static_cast<int64_t>(ids.size())) {
      status = absl::InternalError("replay past the ids");
      break;
    }
    absl::StatusOr<HostTensor> embedded =
        ends.Embed(absl::MakeConstSpan(ids).subspan(start, rows), start);
    if (!embedded.ok()) {
      status = embedded.status();
      break;
    }
    // Recomputed inputs of this segment's hops (index = hop).
    std::vector<HostTensor> inputs;
    if (recompute) {
      HostTensor x = *embedded;
      size_t t = 0;
      for (int b = plan.parallel ? segment : 0; b <= segment && status.ok(); ++b) {
        HostTensor cur = x;
        const int upto = b == segment ? sim_hops : static_cast<int>(plan.segments[b].hops.size());
        for (int k = 0; k < upto; ++k, ++t) {
          if (b == segment) inputs.push_back(cur);
          Temp& tmp = temps[t];
          absl::StatusOr<HostTensor> out = ForwardOn(r, tmp.worker, tmp.id, ++tmp.last_step, start,
                                                     plan.segments[b].hops[k].layers, cur);
          if (!out.ok()) {
            status = out.status();
            break;
          }
          cur = *std::move(out);
        }
        if (!status.ok()) break;
        if (b < segment) {
          absl::StatusOr<HostTensor> gated =
              model::GateResidual(x, std::move(cur), plan.segments[b].weight);
          if (!gated.ok()) {
            status = gated.status();
            break;
          }
          x = *std::move(gated);
        } else {
          inputs.push_back(cur);  // The input of hop sim_hops.
        }
      }
      if (!status.ok()) break;
    }
    for (size_t j = 0; j < hops.size() && status.ok(); ++j) {
      if (done[j] <= i) continue;
      const int k = hops[j];
      HostTensor in;
      const bool embedding = k == 0 && (segment == 0 || plan.parallel);
      if (embedding) {
        in = *embedded;
      } else if (!dropped) {
        absl::MutexLock lock(&r.state_mu);
        if (r.closed) {
          status = absl::CancelledError("the request ended");
          break;
        }
        absl::StatusOr<HostTensor> slice = SliceRows(r.history[segment][k].inputs, row, rows);
        if (!slice.ok()) {
          status = slice.status();
          break;
        }
        in = *std::move(slice);
      } else if (k < static_cast<int>(inputs.size())) {
        in = inputs[k];
      } else {
        status = absl::InternalError("a hop's input was not recomputed");
        break;
      }
      *positions += rows;
      *bytes += static_cast<int64_t>(in.data.size());
      absl::StatusOr<HostTensor> out = ForwardOn(r, worker, session_id, ++session->last_step, start,
                                                 plan.segments[segment].hops[k].layers, in);
      if (!out.ok()) status = out.status();
    }
    row += rows;
  }
  close_temps();
  return status;
}

}  // namespace swarm::coordinator
