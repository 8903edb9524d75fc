#include "coordinator/remote_executor.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/layer_set.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "model/model.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/worker.grpc.pb.h"

namespace swarm::coordinator {

namespace {

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

RemoteExecutor::RemoteExecutor(WorkerSet* workers, ExecutionPlan plan,
                               RemoteExecutorOptions options)
    : workers_(workers), plan_(std::move(plan)), options_(std::move(options)) {
  for (int b = 0; b < static_cast<int>(plan_.segments.size()); ++b) {
    for (const Hop& hop : plan_.segments[b].hops) {
      if (SessionFor(b, hop.worker) == nullptr) sessions_.push_back(Session{b, hop.worker, "", 0});
    }
  }
}

RemoteExecutor::~RemoteExecutor() { Close(); }

RemoteExecutor::Session* RemoteExecutor::SessionFor(int segment, int worker) {
  for (Session& s : sessions_) {
    if (s.segment == segment && s.worker == worker) return &s;
  }
  return nullptr;
}

std::string RemoteExecutor::Describe() const {
  std::vector<std::string> parts;
  for (const Segment& segment : plan_.segments) {
    std::vector<std::string> hops;
    for (const Hop& hop : segment.hops) {
      hops.push_back(
          absl::StrCat(workers_->address(hop.worker), "[", FormatLayers(hop.layers), "]"));
    }
    std::string s = absl::StrJoin(hops, " -> ");
    if (segment.weight != 1.0f) absl::StrAppend(&s, " x", segment.weight);
    parts.push_back(s);
  }
  return absl::StrJoin(parts, plan_.parallel ? " | " : " ; ");
}

void RemoteExecutor::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (grpc::ClientContext* ctx : inflight_) ctx->TryCancel();
}

absl::Status RemoteExecutor::Call(int worker, const char* method,
                                  const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                                  absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(std::min(absl::Now() + timeout, options_.deadline)));
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

namespace {

// One Prefetch in flight; deletes itself when gRPC reports its end.
struct PrefetchCall {
  grpc::ClientContext ctx;
  v1::PrefetchRequest req;
  v1::PrefetchResponse resp;
};

}  // namespace

void RemoteExecutor::Prefetch() {
  std::vector<std::pair<int, std::vector<int>>> per_worker;  // In plan order.
  for (const Segment& segment : plan_.segments) {
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
        absl::ToChronoTime(std::min(absl::Now() + options_.prefetch_timeout, options_.deadline)));
    call->req.mutable_layers()->Assign(layers.begin(), layers.end());
    workers_->stub(worker)->async()->Prefetch(&call->ctx, &call->req, &call->resp,
                                              [call](grpc::Status) { delete call; });
  }
}

absl::Status RemoteExecutor::Open(int64_t max_length) {
  for (Session& session : sessions_) {
    v1::OpenSessionRequest req;
    req.set_max_length(max_length);
    req.set_request_id(options_.request_id);
    v1::OpenSessionResponse resp;
    absl::Status s = Call(
        session.worker, "OpenSession",
        [&](grpc::ClientContext* ctx) {
          return workers_->stub(session.worker)->OpenSession(ctx, req, &resp);
        },
        options_.control_timeout);
    if (!s.ok()) {
      Close();
      return s;
    }
    session.id = resp.session_id();
  }
  return absl::OkStatus();
}

void RemoteExecutor::Close() {
  for (Session& session : sessions_) {
    if (session.id.empty()) continue;
    // Not through Call(): closing must happen even after the request was cancelled.
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.control_timeout));
    v1::CloseSessionRequest req;
    req.set_session_id(session.id);
    v1::CloseSessionResponse resp;
    grpc::Status s = workers_->stub(session.worker)->CloseSession(&ctx, req, &resp);
    if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {
      LogLine(
          "swarm-coordinator",
          absl::StrCat("request '", options_.request_id, "': closing session on ",
                       workers_->address(session.worker), ": ", rpc::FromGrpcStatus(s).ToString(),
                       " (the worker frees it after its idle TTL)"));
    }
    session.id.clear();
  }
}

absl::StatusOr<HostTensor> RemoteExecutor::RunHop(int segment, const Hop& hop, const HostTensor& in,
                                                  bool in_is_ours, HostTensor* ours,
                                                  int64_t start_pos) {
  Session* session = SessionFor(segment, hop.worker);
  v1::ForwardRequest req;
  req.set_session_id(session->id);
  req.set_step_id(++session->last_step);
  req.set_start_position(start_pos);
  req.mutable_layers()->Assign(hop.layers.begin(), hop.layers.end());
  const int64_t positions = in.shape.empty() ? 0 : in.shape[0];
  const std::vector<int64_t> shape = in.shape;
  const absl::Time start = absl::Now();
  HostTensor out;
  absl::Status s;
  if (in.data.size() <= rpc::kMaxTensorPieceBytes) {
    // The common case (every decode step): one message each way; bytes moved, not copied, except
    // a segment's input, which belongs to the caller.
    if (in_is_ours) {
      rpc::MoveTensorToProto(std::move(*ours), req.mutable_hidden());
    } else {
      rpc::CopyTensorToProto(in, req.mutable_hidden());
    }
    v1::ForwardResponse resp;
    s = Call(
        hop.worker, "Forward",
        [&](grpc::ClientContext* ctx) {
          return workers_->stub(hop.worker)->Forward(ctx, req, &resp);
        },
        options_.step_timeout);
    if (s.ok()) {
      auto t = rpc::MoveTensorFromProto(resp.mutable_hidden(), /*rank=*/2, "reply hidden");
      if (t.ok()) out = *std::move(t);
      s = t.status();
    }
  } else {
    s = Call(
        hop.worker, "ForwardStream",
        [&](grpc::ClientContext* ctx) -> grpc::Status {
          auto stream = workers_->stub(hop.worker)->ForwardStream(ctx);
          for (size_t off = 0; off < in.data.size(); off += rpc::kMaxTensorPieceBytes) {
            const size_t len = std::min(rpc::kMaxTensorPieceBytes, in.data.size() - off);
            rpc::CopyTensorPieceToProto(in, off, len, /*with_header=*/off == 0,
                                        req.mutable_hidden());
            if (!stream->Write(req)) break;  // The server ended the call; Finish says why.
            req.Clear();
          }
          stream->WritesDone();
          rpc::TensorAssembler assembler;
          v1::ForwardResponse piece;
          absl::Status a;
          while (a.ok() && stream->Read(&piece)) {
            a = assembler.started()
                    ? assembler.Append(piece.mutable_hidden()->mutable_data())
                    : assembler.Begin(piece.mutable_hidden(), 2, INT64_MAX, "reply hidden");
          }
          if (!a.ok()) ctx->TryCancel();
          grpc::Status fs = stream->Finish();
          if (!fs.ok()) return fs;
          if (!a.ok()) return rpc::ToGrpcStatus(a);
          if (!assembler.complete()) {
            return grpc::Status(grpc::StatusCode::DATA_LOSS, "reply hidden state incomplete");
          }
          out = assembler.Take();
          return grpc::Status::OK;
        },
        options_.step_timeout);
  }
  if (options_.observer != nullptr) {
    options_.observer->OnHop(hop.worker, positions, absl::Now() - start, s);
  }
  if (!s.ok()) {
    return Annotate(s,
                    absl::StrCat("layers ", FormatLayers(hop.layers), " at position ", start_pos));
  }
  if (out.shape != shape) {
    return absl::InternalError(absl::StrCat("worker ", workers_->address(hop.worker),
                                            " answered shape [", absl::StrJoin(out.shape, ","),
                                            "] for [", absl::StrJoin(shape, ","), "]"));
  }
  return out;
}

absl::StatusOr<HostTensor> RemoteExecutor::RunSegment(int segment, const HostTensor& in,
                                                      int64_t start_pos) {
  const std::vector<Hop>& hops = plan_.segments[segment].hops;
  HostTensor cur;
  for (size_t i = 0; i < hops.size(); ++i) {
    ASSIGN_OR_RETURN(
        cur, RunHop(segment, hops[i], i == 0 ? in : cur, /*in_is_ours=*/i > 0, &cur, start_pos));
  }
  return cur;
}

absl::StatusOr<HostTensor> RemoteExecutor::Run(const HostTensor& h, int64_t start_pos) {
  const int n = static_cast<int>(plan_.segments.size());
  if (n == 0) return absl::InternalError("empty execution plan");
  if (!plan_.parallel) {
    HostTensor cur;
    for (int b = 0; b < n; ++b) {
      const HostTensor& x = b == 0 ? h : cur;
      ASSIGN_OR_RETURN(HostTensor out, RunSegment(b, x, start_pos));
      // The segment ran ungated on its workers; its gate is applied here, once.
      ASSIGN_OR_RETURN(cur, model::GateResidual(x, std::move(out), plan_.segments[b].weight));
    }
    return cur;
  }
  // Parallel: every segment reads h; the segments' chains run at once.
  std::vector<absl::StatusOr<HostTensor>> outs(n, absl::UnknownError("not run"));
  FanOut helpers(options_.hop_pool);
  for (int b = 1; b < n; ++b) {
    helpers.Spawn([&, b] { outs[b] = RunSegment(b, h, start_pos); });
  }
  outs[0] = RunSegment(0, h, start_pos);
  helpers.Join();
  std::vector<HostTensor> values;
  std::vector<float> weights;
  for (int b = 0; b < n; ++b) {
    if (!outs[b].ok()) return outs[b].status();
    values.push_back(*std::move(outs[b]));
    weights.push_back(plan_.segments[b].weight);
  }
  return model::CombineResiduals(h, values, weights);
}

}  // namespace swarm::coordinator
