#include "coordinator/remote_executor.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/status_macros.h"
#include "proto/layer_ranges.h"
#include "proto/server_util.h"
#include "proto/status_util.h"
#include "proto/tensor_util.h"

namespace swarm::coordinator {

RemoteExecutor::RemoteExecutor(WorkerSet* workers, std::vector<struct Hop> route,
                               RemoteExecutorOptions options)
    : workers_(workers), route_(std::move(route)), options_(std::move(options)) {
  for (const struct Hop& hop : route_) {
    if (SessionFor(hop.worker) == nullptr) sessions_.push_back(WorkerSession{hop.worker, "", 0});
  }
}

RemoteExecutor::~RemoteExecutor() { Close(); }

RemoteExecutor::WorkerSession* RemoteExecutor::SessionFor(int worker) {
  for (WorkerSession& s : sessions_) {
    if (s.worker == worker) return &s;
  }
  return nullptr;
}

std::string RemoteExecutor::DescribeRoute() const {
  std::vector<std::string> parts;
  for (const struct Hop& hop : route_) {
    parts.push_back(
        absl::StrCat(workers_->address(hop.worker), "[", FormatLayers(hop.layers), "]"));
  }
  return absl::StrJoin(parts, " -> ");
}

void RemoteExecutor::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (inflight_ != nullptr) inflight_->TryCancel();
}

absl::Status RemoteExecutor::Call(int worker, const char* method,
                                  const std::function<grpc::Status(grpc::ClientContext*)>& rpc,
                                  absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(std::min(absl::Now() + timeout, options_.deadline)));
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return absl::CancelledError("the request was cancelled");
    inflight_ = &ctx;
  }
  grpc::Status s = rpc(&ctx);
  {
    absl::MutexLock lock(&mu_);
    inflight_ = nullptr;
  }
  if (s.ok()) return absl::OkStatus();
  absl::Status status =
      FromGrpcStatus(s, absl::StrCat("worker ", workers_->address(worker), ": ", method));
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) workers_->MarkUnreachable(worker, status);
  return status;
}

absl::Status RemoteExecutor::Open(int64_t max_length) {
  for (WorkerSession& ws : sessions_) {
    v1::OpenSessionRequest req;
    req.set_max_length(max_length);
    req.set_request_id(options_.request_id);
    v1::OpenSessionResponse resp;
    absl::Status s = Call(
        ws.worker, "OpenSession",
        [&](grpc::ClientContext* ctx) {
          return workers_->stub(ws.worker)->OpenSession(ctx, req, &resp);
        },
        options_.control_timeout);
    if (!s.ok()) {
      Close();
      return s;
    }
    ws.session_id = resp.session_id();
  }
  return absl::OkStatus();
}

void RemoteExecutor::Close() {
  for (WorkerSession& ws : sessions_) {
    if (ws.session_id.empty()) continue;
    // Not through Call(): closing must happen even after the request was cancelled.
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.control_timeout));
    v1::CloseSessionRequest req;
    req.set_session_id(ws.session_id);
    v1::CloseSessionResponse resp;
    grpc::Status s = workers_->stub(ws.worker)->CloseSession(&ctx, req, &resp);
    if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) {
      LogLine("swarm-coordinator",
              absl::StrCat("request '", options_.request_id, "': closing session on ",
                           workers_->address(ws.worker), ": ", FromGrpcStatus(s).ToString(),
                           " (the worker frees it after its idle TTL)"));
    }
    ws.session_id.clear();
  }
}

absl::StatusOr<model::HostTensor> RemoteExecutor::Run(const model::HostTensor& h,
                                                      int64_t start_pos) {
  model::HostTensor cur;
  for (size_t i = 0; i < route_.size(); ++i) {
    const struct Hop& hop = route_[i];
    const model::HostTensor& in = i == 0 ? h : cur;
    WorkerSession* ws = SessionFor(hop.worker);
    v1::ForwardRequest req;
    req.set_session_id(ws->session_id);
    req.set_step_id(++ws->last_step);
    req.set_start_position(start_pos);
    req.mutable_layers()->Assign(hop.layers.begin(), hop.layers.end());
    const int64_t positions = in.shape.empty() ? 0 : in.shape[0];
    const std::vector<int64_t> shape = in.shape;
    const absl::Time start = absl::Now();
    model::HostTensor out;
    absl::Status s;
    if (in.data.size() <= kMaxTensorPieceBytes) {
      // The common case (every decode step): one message each way; bytes moved, not copied,
      // except the first hop's input, which belongs to the caller.
      if (i == 0) {
        CopyTensorToProto(in, req.mutable_hidden());
      } else {
        MoveTensorToProto(std::move(cur), req.mutable_hidden());
      }
      v1::ForwardResponse resp;
      s = Call(
          hop.worker, "Forward",
          [&](grpc::ClientContext* ctx) {
            return workers_->stub(hop.worker)->Forward(ctx, req, &resp);
          },
          options_.step_timeout);
      if (s.ok()) {
        auto t = MoveTensorFromProto(resp.mutable_hidden(), /*rank=*/2, "reply hidden");
        if (t.ok()) out = *std::move(t);
        s = t.status();
      }
    } else {
      s = Call(
          hop.worker, "ForwardStream",
          [&](grpc::ClientContext* ctx) -> grpc::Status {
            auto stream = workers_->stub(hop.worker)->ForwardStream(ctx);
            for (size_t off = 0; off < in.data.size(); off += kMaxTensorPieceBytes) {
              const size_t len = std::min(kMaxTensorPieceBytes, in.data.size() - off);
              CopyTensorPieceToProto(in, off, len, /*with_header=*/off == 0, req.mutable_hidden());
              if (!stream->Write(req)) break;  // The server ended the call; Finish says why.
              req.Clear();
            }
            stream->WritesDone();
            TensorAssembler assembler;
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
            if (!a.ok()) return ToGrpcStatus(a);
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
      return Annotate(
          s, absl::StrCat("layers ", FormatLayers(hop.layers), " at position ", start_pos));
    }
    if (out.shape != shape) {
      return absl::InternalError(absl::StrCat("worker ", workers_->address(hop.worker),
                                              " answered shape [", absl::StrJoin(out.shape, ","),
                                              "] for [", absl::StrJoin(shape, ","), "]"));
    }
    cur = std::move(out);
  }
  return cur;
}

}  // namespace swarm::coordinator
