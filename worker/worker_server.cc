#include "worker/worker_server.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/byte_size.h"
#include "common/layer_set.h"
#include "common/logging.h"
#include "common/memory_limits.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "rpc/batch_codec.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "worker/emulated_time.h"

namespace swarm::worker {

namespace {

constexpr char kLog[] = "swarm-worker";

// RenewSessions ids per call at most (worker.proto).
constexpr int kMaxRenewIds = 4096;

// Who is calling, for the per-client session limit: the common name of a verified client
// certificate, else the peer's host (the port changes with every connection).
std::string ClientOf(const grpc::CallbackServerContext& ctx) {
  if (std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
      auth != nullptr && auth->IsPeerAuthenticated()) {
    std::vector<grpc::string_ref> cn = auth->FindPropertyValues("x509_common_name");
    if (!cn.empty()) return absl::StrCat("cn:", absl::string_view(cn[0].data(), cn[0].size()));
  }
  std::string peer = ctx.peer();  // "ipv4:127.0.0.1:5432", "ipv6:[::1]:5432".
  const size_t colon = peer.rfind(':');
  if (colon != std::string::npos && colon > peer.find(':')) peer.resize(colon);
  return peer;
}

// The earlier of the client's deadline and `start + cap`.
absl::Time EffectiveDeadline(const grpc::CallbackServerContext* ctx, absl::Time start,
                             absl::Duration cap) {
  const auto client = ctx->deadline();
  if (client == std::chrono::system_clock::time_point::max()) return start + cap;
  return std::min(absl::FromChrono(client), start + cap);
}

absl::Status CheckStillWanted(const grpc::CallbackServerContext* ctx, absl::Time deadline) {
  if (ctx->IsCancelled()) return absl::CancelledError("the caller cancelled the step");
  if (absl::Now() > deadline) {
    return absl::DeadlineExceededError("the step's deadline passed while it waited for a thread");
  }
  return absl::OkStatus();
}

StepRequest StepFromProto(const v1::ForwardRequest& req) {
  StepRequest step;
  step.session_id = req.session_id();
  step.step_id = req.step_id();
  step.start_position = req.start_position();
  step.layers.assign(req.layers().begin(), req.layers().end());
  step.gate = req.has_gate() ? req.gate() : 1.0f;
  return step;
}

BatchRequest BatchFromProto(const v1::ForwardBatchRequest& req) {
  BatchRequest batch;
  batch.steps.reserve(req.steps_size());
  for (const v1::BatchStep& s : req.steps()) {
    BatchStepRequest& step = batch.steps.emplace_back();
    step.session_id = s.session_id();
    step.step_id = s.step_id();
    step.start_position = s.start_position();
    step.positions = s.positions();
  }
  batch.layers.assign(req.layers().begin(), req.layers().end());
  return batch;
}

}  // namespace

// The gRPC face of a WorkerServer. Requests arrive as const messages owned by gRPC until the
// reactor finishes; Forward moves the hidden state's bytes out of them (const_cast) rather than
// copying, since gRPC does not read a request again after handing it to the handler.
class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(WorkerServer* owner) : owner_(owner) {}

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* ctx, const v1::InfoRequest*,
                                 v1::InfoResponse* resp) override {
    const model::ModelConfig& c = owner_->checkpoint_->config();
    const WorkerServerOptions& o = owner_->options_;
    resp->set_model_fingerprint(c.Fingerprint());
    resp->set_architecture(c.architecture);
    resp->set_num_layers(static_cast<int32_t>(c.num_layers));
    resp->set_hidden_size(c.hidden_size);
    resp->set_max_position_embeddings(c.max_position_embeddings);
    resp->set_model_dir(owner_->checkpoint_->dir());
    resp->mutable_layers()->Assign(o.layers.begin(), o.layers.end());
    resp->set_device(o.load.device);
    resp->set_dtype(rpc::ToProtoDType(o.load.dtype));
    const WeightQuant quant = model::LoadedQuant(c.quantization, o.load);
    resp->set_weight_format(quant == WeightQuant::kNone ? "" : WeightQuantName(quant));
    resp->set_kv_budget_bytes(owner_->kv_budget_bytes());
    resp->set_max_sessions(o.limits.max_sessions);
    resp->set_session_ttl_seconds(absl::ToDoubleSeconds(o.limits.idle_ttl));
    resp->set_session_lease_seconds(absl::ToDoubleSeconds(o.limits.lease));
    {
      absl::MutexLock lock(&owner_->mu_);
      resp->set_load_error(owner_->load_error_);
    }
    // A draining worker still reports its sessions and counters, but not ready: it takes no new
    // sessions, and the coordinator's poll reads `ready`.
    const bool draining = owner_->draining();
    resp->set_draining(draining);
    if (Worker* w = owner_->worker()) {
      resp->set_ready(!draining);
      resp->set_weight_bytes(w->host().WeightBytes());
      resp->set_kv_bytes_per_token(w->host().KvBytesPerToken());
      resp->set_invariant_rows(static_cast<int32_t>(w->host().InvariantStepRows()));
      WorkerStats s = w->Stats();
      resp->set_sessions(s.sessions);
      resp->set_kv_reserved_bytes(s.kv_reserved_bytes);
      resp->set_kv_used_bytes(s.kv_used_bytes);
      resp->set_inflight_steps(s.inflight_steps);
      resp->set_steps_total(s.steps_total);
      resp->set_tokens_total(s.tokens_total);
      resp->set_batches_total(s.batches_total);
      resp->set_batch_sequences_total(s.batch_sequences_total);
      resp->set_batch_rows_total(s.batch_rows_total);
      resp->set_busy_seconds_total(s.busy_seconds);
    }
    if (const ResidentLayerHost* r = owner_->resident_host()) {
      ResidencyStats rs = r->Stats();
      resp->set_memory_budget_bytes(rs.budget_bytes);
      resp->set_resident_weight_bytes(rs.resident_bytes);
      // The wire calls residency units blocks (worker.proto, a contract).
      resp->set_blocks(rs.units);
      resp->set_blocks_resident(rs.units_resident);
      resp->set_block_loads_total(rs.loads_total);
      resp->set_block_hits_total(rs.hits_total);
      resp->set_block_evictions_total(rs.evictions_total);
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* OpenSession(grpc::CallbackServerContext* ctx,
                                        const v1::OpenSessionRequest* req,
                                        v1::OpenSessionResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::StatusOr<Worker*> w = AcceptingSessions();
    if (!w.ok()) {
      FinishCall(reactor, "OpenSession", w.status());
      return reactor;
    }
    absl::StatusOr<std::string> id = (*w)->OpenSession(req->max_length(), ClientOf(*ctx));
    if (id.ok()) {
      resp->set_session_id(*id);
    } else {
      LogLine(kLog, absl::StrCat("OpenSession (request ", QuoteInput(req->request_id()),
                                 "): ", id.status().ToString()));
    }
    FinishCall(reactor, "OpenSession", id.status());
    return reactor;
  }

  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* ctx,
                                         const v1::CloseSessionRequest* req,
                                         v1::CloseSessionResponse*) override {
    auto* reactor = ctx->DefaultReactor();
    absl::StatusOr<Worker*> w = Ready();
    FinishCall(reactor, "CloseSession",
               w.ok() ? (*w)->CloseSession(req->session_id()) : w.status());
    return reactor;
  }

  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* ctx, const v1::ForwardRequest* req,
                                    v1::ForwardResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    const absl::Time deadline = EffectiveDeadline(ctx, absl::Now(), owner_->options_.max_step_time);
    auto* mreq = const_cast<v1::ForwardRequest*>(req);
    const int64_t positions = Positions(*req);  // Before RunUnary moves the tensor out.
    auto run = [this, ctx, reactor, mreq, resp, deadline, positions] {
      double seconds = 0;
      absl::Status s = RunUnary(ctx, deadline, mreq, resp, &seconds);
      FinishForward(*mreq, positions, seconds, s);
      reactor->Finish(rpc::ToGrpcStatus(s));
    };
    if (RunsInline(*req)) {
      run();
    } else if (!owner_->pool_->TrySchedule(run)) {
      const absl::Status s = Overloaded();
      FinishForward(*req, positions, 0, s);
      reactor->Finish(rpc::ToGrpcStatus(s));
    }
    return reactor;
  }

  grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* ForwardStream(
      grpc::CallbackServerContext* ctx) override;

  // As Forward, for the steps of several sessions (Worker::ForwardBatch); the same inline-or-pool
  // rule by the batch's rows.
  grpc::ServerUnaryReactor* ForwardBatch(grpc::CallbackServerContext* ctx,
                                         const v1::ForwardBatchRequest* req,
                                         v1::ForwardBatchResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    const absl::Time deadline = EffectiveDeadline(ctx, absl::Now(), owner_->options_.max_step_time);
    auto* mreq = const_cast<v1::ForwardBatchRequest*>(req);
    auto run = [this, ctx, reactor, mreq, resp, deadline] {
      BatchReport report;
      absl::Status s = RunBatchUnary(ctx, deadline, mreq, resp, &report);
      FinishBatch(*mreq, report, s);
      reactor->Finish(rpc::ToGrpcStatus(s));
    };
    if (RunsInline(Rows(req->hidden()))) {
      run();
    } else if (!owner_->pool_->TrySchedule(run)) {
      const absl::Status s = Overloaded();
      FinishBatch(*req, BatchReport(), s);
      reactor->Finish(rpc::ToGrpcStatus(s));
    }
    return reactor;
  }

  grpc::ServerBidiReactor<v1::ForwardBatchRequest, v1::ForwardBatchResponse>* ForwardBatchStream(
      grpc::CallbackServerContext* ctx) override;

  // Cheap bookkeeping: answered on the gRPC thread. Served while draining (the sessions being
  // drained are still held for their coordinator).
  grpc::ServerUnaryReactor* RenewSessions(grpc::CallbackServerContext* ctx,
                                          const v1::RenewSessionsRequest* req,
                                          v1::RenewSessionsResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::StatusOr<Worker*> w = Ready();
    if (!w.ok()) {
      FinishCall(reactor, "RenewSessions", w.status());
      return reactor;
    }
    if (req->session_ids_size() > kMaxRenewIds) {
      FinishCall(
          reactor, "RenewSessions",
          absl::InvalidArgumentError(absl::StrCat("RenewSessions: ", req->session_ids_size(),
                                                  " ids; at most ", kMaxRenewIds, " a call")));
      return reactor;
    }
    std::vector<std::string> ids(req->session_ids().begin(), req->session_ids().end());
    for (std::string& id : (*w)->RenewSessions(ids)) resp->add_unknown_session_ids(std::move(id));
    FinishCall(reactor, "RenewSessions", absl::OkStatus());
    return reactor;
  }

  // Loads on the compute pool (a load takes milliseconds to seconds); answers once the blocks
  // are resident. Without a memory budget every layer is resident: answers at once.
  grpc::ServerUnaryReactor* Prefetch(grpc::CallbackServerContext* ctx,
                                     const v1::PrefetchRequest* req,
                                     v1::PrefetchResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::StatusOr<Worker*> w = AcceptingSessions();
    if (!w.ok()) {
      FinishCall(reactor, "Prefetch", w.status());
      return reactor;
    }
    std::vector<int> layers(req->layers().begin(), req->layers().end());
    for (int l : layers) {
      if (!(*w)->host().Hosts(l)) {
        FinishCall(reactor, "Prefetch",
                   absl::InvalidArgumentError(
                       absl::StrCat("prefetch: layer ", l, " is not hosted here (hosted: ",
                                    FormatLayers(owner_->options_.layers), ")")));
        return reactor;
      }
    }
    const ResidentLayerHost* r = owner_->resident_host();
    if (r == nullptr || layers.empty()) {
      FinishCall(reactor, "Prefetch", absl::OkStatus());
      return reactor;
    }
    bool queued = owner_->pool_->TrySchedule([this, r, reactor, resp, layers] {
      absl::StatusOr<int> loaded = r->Prefetch(layers);
      if (loaded.ok()) resp->set_blocks_loaded(*loaded);
      FinishCall(reactor, "Prefetch", loaded.status());
    });
    if (!queued) FinishCall(reactor, "Prefetch", Overloaded());
    return reactor;
  }

  // Whether a step is cheap enough to run on the gRPC thread that received it: handing it to the
  // pool costs a thread wake-up (tens of microseconds), as much as a decode step of a small
  // block. Estimated by the weight bytes the step streams through (positions x hosted weights).
  bool RunsInline(const v1::ForwardRequest& req) const {
    return RunsInline(req.hidden().shape_size() > 0 ? req.hidden().shape(0) : 1);
  }
  bool RunsInline(int64_t positions) const {
    Worker* w = owner_->worker();
    if (w == nullptr) return true;                         // Answered UNAVAILABLE at once.
    if (owner_->resident_host() != nullptr) return false;  // The step may load a block.
    // An emulated pass sleeps: never on a gRPC thread.
    if (owner_->options_.emulated_layer_time > absl::ZeroDuration()) return false;
    // Compared as a quotient: positions comes from the caller and may be anything.
    const int64_t weights = std::max<int64_t>(1, w->host().WeightBytes());
    return std::max<int64_t>(positions, 1) <= owner_->options_.max_inline_step_bytes / weights;
  }

  // The worker, for calls on sessions already open (Forward, CloseSession): also while draining.
  absl::StatusOr<Worker*> Ready() const {
    if (Worker* w = owner_->worker()) return w;
    return absl::UnavailableError("this worker is still loading its layers");
  }

  // The worker, for calls that start new work (OpenSession, Prefetch): not while draining.
  absl::StatusOr<Worker*> AcceptingSessions() const {
    ASSIGN_OR_RETURN(Worker * w, Ready());
    if (owner_->draining()) {
      return absl::UnavailableError(
          "this worker is draining (shutting down): it takes no new sessions");
    }
    return w;
  }

  // Finishes a unary call other than Forward; the one place such a call's failure is counted,
  // refusals before the worker was asked (loading, draining, pool full) included.
  void FinishCall(grpc::ServerUnaryReactor* reactor, absl::string_view method,
                  const absl::Status& s) {
    if (!s.ok()) owner_->observer_->OnError(method, s.code());
    reactor->Finish(rpc::ToGrpcStatus(s));
  }

  // Reports a Forward or ForwardStream call that is about to finish with `s`; the one place a
  // step's outcome is counted, so that the error counter sees the steps refused before
  // Worker::Forward (loading, pool full, deadline passed while queued, malformed tensor) as well
  // as those it failed. `seconds` is the compute time, 0 when the step did not run.
  void FinishForward(const v1::ForwardRequest& header, int64_t positions, double seconds,
                     const absl::Status& s) {
    owner_->observer_->OnForward(absl::MakeConstSpan(header.layers().data(), header.layers_size()),
                                 positions, seconds, s.code());
  }

  // Positions of a request's hidden state as its header states them (0 when it has no shape).
  static int64_t Positions(const v1::ForwardRequest& req) {
    return req.hidden().shape_size() > 0 ? req.hidden().shape(0) : 0;
  }

  absl::Status Overloaded() const {
    return absl::ResourceExhaustedError(
        absl::StrCat("worker overloaded: ", owner_->pool_->pending(), " steps running or queued"));
  }

  // Bytes a streamed step may carry at most: the whole context in f32.
  int64_t MaxStepBytes() const {
    const model::ModelConfig& c = owner_->checkpoint_->config();
    return c.max_position_embeddings * c.hidden_size * 4;
  }
  // Bytes a streamed batch may carry at most: max_batch_rows rows (at least the context) in f32.
  int64_t MaxBatchBytes() const {
    const model::ModelConfig& c = owner_->checkpoint_->config();
    return std::max(owner_->options_.max_batch_rows, c.max_position_embeddings) * c.hidden_size * 4;
  }

  // Runs one step on the worker; `seconds` gets its compute time when it ran.
  absl::StatusOr<StepResult> RunStep(const grpc::CallbackServerContext* ctx, absl::Time deadline,
                                     const v1::ForwardRequest& header, HostTensor hidden,
                                     double* seconds) {
    ASSIGN_OR_RETURN(Worker * w, Ready());
    RETURN_IF_ERROR(CheckStillWanted(ctx, deadline));
    const absl::Time start = absl::Now();
    absl::StatusOr<StepResult> result = w->Forward(StepFromProto(header), std::move(hidden));
    *seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  }

  // Rows of a tensor as its header states them (0 when it has no shape).
  static int64_t Rows(const v1::Tensor& t) { return t.shape_size() > 0 ? t.shape(0) : 0; }

  // What a ForwardBatch or ForwardBatchStream call reports once it ends (FinishBatch).
  struct BatchReport {
    double seconds = 0;                   // Compute time, once the worker ran the batch.
    std::vector<absl::StatusCode> codes;  // Each step's code, once the worker ran the batch.
  };

  // Runs a batch on the worker: `header`'s steps and layers over `hidden`, its rows. Fills
  // `reply`'s results (each step's own status, rpc/batch_codec.h) and returns the reply's rows.
  absl::StatusOr<HostTensor> RunBatch(const grpc::CallbackServerContext* ctx, absl::Time deadline,
                                      const v1::ForwardBatchRequest& header, HostTensor hidden,
                                      v1::ForwardBatchResponse* reply, BatchReport* report) {
    ASSIGN_OR_RETURN(Worker * w, Ready());
    RETURN_IF_ERROR(CheckStillWanted(ctx, deadline));
    const absl::Time start = absl::Now();
    absl::StatusOr<BatchResult> result = w->ForwardBatch(BatchFromProto(header), std::move(hidden));
    report->seconds = absl::ToDoubleSeconds(absl::Now() - start);
    RETURN_IF_ERROR(result.status());
    for (size_t i = 0; i < result->steps.size(); ++i) {
      const BatchStepOutcome& step = result->steps[i];
      v1::BatchStepResult* r = reply->add_results();
      rpc::StepStatusToProto(step.status, r);
      r->set_step_id(header.steps(static_cast<int>(i)).step_id());
      r->set_length(step.length);
      r->set_replayed(step.replayed);
      report->codes.push_back(step.status.code());
    }
    return std::move(result->hidden);
  }

  // Reports a ForwardBatch or ForwardBatchStream call that is about to finish with `s`: each
  // step's outcome as a Forward's (OnForward, with the batch's compute time) when the call went
  // through, the call's failure (OnError "ForwardBatch") when it did not.
  void FinishBatch(const v1::ForwardBatchRequest& header, const BatchReport& report,
                   const absl::Status& s) {
    if (!s.ok()) {
      owner_->observer_->OnError("ForwardBatch", s.code());
      return;
    }
    const auto layers = absl::MakeConstSpan(header.layers().data(), header.layers_size());
    for (size_t i = 0; i < report.codes.size() && i < static_cast<size_t>(header.steps_size());
         ++i) {
      owner_->observer_->OnForward(layers, header.steps(static_cast<int>(i)).positions(),
                                   report.seconds, report.codes[i]);
    }
  }

 private:
  absl::Status RunUnary(const grpc::CallbackServerContext* ctx, absl::Time deadline,
                        v1::ForwardRequest* req, v1::ForwardResponse* resp, double* seconds) {
    ASSIGN_OR_RETURN(HostTensor hidden,
                     rpc::MoveTensorFromProto(req->mutable_hidden(), /*rank=*/2, "hidden"));
    ASSIGN_OR_RETURN(StepResult result, RunStep(ctx, deadline, *req, std::move(hidden), seconds));
    if (result.hidden.data.size() > rpc::kMaxTensorPieceBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("the reply of ", result.hidden.data.size(),
                       " bytes does not fit one message; use ForwardStream"));
    }
    resp->set_step_id(req->step_id());
    resp->set_length(result.length);
    resp->set_replayed(result.replayed);
    rpc::MoveTensorToProto(std::move(result.hidden), resp->mutable_hidden());
    return absl::OkStatus();
  }

  absl::Status RunBatchUnary(const grpc::CallbackServerContext* ctx, absl::Time deadline,
                             v1::ForwardBatchRequest* req, v1::ForwardBatchResponse* resp,
                             BatchReport* report) {
    ASSIGN_OR_RETURN(HostTensor hidden,
                     rpc::MoveTensorFromProto(req->mutable_hidden(), /*rank=*/2, "hidden"));
    // The reply has the request's shape: refuse what could not be answered before any step runs.
    if (hidden.data.size() > rpc::kMaxTensorPieceBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("the reply of ", hidden.data.size(),
                       " bytes would not fit one message; use ForwardBatchStream"));
    }
    ASSIGN_OR_RETURN(HostTensor out,
                     RunBatch(ctx, deadline, *req, std::move(hidden), resp, report));
    rpc::MoveTensorToProto(std::move(out), resp->mutable_hidden());
    return absl::OkStatus();
  }

  WorkerServer* owner_;
};

namespace {

// One streamed call (ForwardStream or ForwardBatchStream): read pieces until the hidden state is
// complete, compute on the pool, write the reply in pieces (rpc::FillPiece), finish. `Call` holds
// what differs between the two (ForwardStreamCall and BatchStreamCall below): its Request and
// Response types; MaxBytes(service), the most bytes the request's tensor may hold;
// OnHeader(header), once the first piece is in; Run(service, ctx, deadline, header, hidden,
// reply), on the pool, which fills the reply's fields other than hidden and returns the reply's
// tensor; Report(service, header, status), once, as the call ends.
//
// The arrival deadline: the first piece arms an alarm `max_arrival_time` ahead; when it fires
// while the request is still arriving, the buffer is freed and the call finished with
// DEADLINE_EXCEEDED (the read still pending then fails and is ignored). The alarm's callback runs
// on a gRPC thread of its own, concurrently with the reactions, so `mu_` orders the two and a
// reference count keeps the reactor alive until both OnDone and the alarm's callback (which
// gRPC always runs, with false once cancelled) have run.
template <typename Call>
class StreamReactor final
    : public grpc::ServerBidiReactor<typename Call::Request, typename Call::Response> {
 public:
  using Request = typename Call::Request;
  using Response = typename Call::Response;

  StreamReactor(WorkerServiceImpl* service, ThreadPool* pool, WorkerObserver* observer,
                grpc::CallbackServerContext* ctx, absl::Duration max_step_time,
                absl::Duration max_arrival_time)
      : service_(service),
        pool_(pool),
        observer_(observer),
        ctx_(ctx),
        deadline_(EffectiveDeadline(ctx, absl::Now(), max_step_time)),
        max_arrival_time_(max_arrival_time),
        assembler_(Call::MaxBytes(service), "hidden") {
    this->StartRead(&piece_);
  }

  void OnReadDone(bool ok) override {
    absl::Status ended;
    bool cancel_alarm = false;
    {
      absl::MutexLock lock(&mu_);
      if (phase_ != Phase::kArriving) return;  // The arrival deadline ended the call.
      if (!ok) {
        // The caller half-closed (or went away) before the tensor was complete.
        ended = absl::InvalidArgumentError(absl::StrCat("hidden: the stream ended with ",
                                                        assembler_.remaining(), " bytes missing"));
      } else {
        const bool first = !assembler_.started();
        ended = assembler_.Add(&piece_);
        if (first) {
          call_.OnHeader(assembler_.header());
          if (ended.ok() && !assembler_.complete()) ArmArrivalDeadline();
        }
        TrackBuffered();
        if (ended.ok() && !assembler_.complete()) {
          piece_.Clear();
          this->StartRead(&piece_);  // Its reaction is never run inline, so under mu_ is safe.
          return;
        }
      }
      phase_ = ended.ok() ? Phase::kComputing : Phase::kEnded;
      if (!ended.ok()) assembler_.Release();
      // Complete: the tensor moves to the step, it no longer counts as arriving.
      ReportBuffered(0);
      cancel_alarm = armed_;
    }
    // Outside mu_: the cancelled alarm's callback (on another thread) takes it.
    if (cancel_alarm) alarm_.Cancel();
    if (!ended.ok()) {
      End(ended);
      return;
    }
    if (!pool_->TrySchedule([this] { Compute(); })) End(service_->Overloaded());
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("the caller went away"));
      return;
    }
    WriteNext();
  }

  void OnDone() override { Unref(); }

 private:
  enum class Phase { kArriving, kComputing, kEnded };

  void ArmArrivalDeadline() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (max_arrival_time_ <= absl::ZeroDuration()) return;
    armed_ = true;
    refs_.fetch_add(1, std::memory_order_relaxed);
    alarm_.Set(absl::ToChronoTime(absl::Now() + max_arrival_time_), [this](bool fired) {
      if (fired) OnArrivalDeadline();
      Unref();
    });
  }

  void OnArrivalDeadline() {
    int64_t missing = 0;
    {
      absl::MutexLock lock(&mu_);
      if (phase_ != Phase::kArriving) return;
      phase_ = Phase::kEnded;
      missing = assembler_.remaining();
      assembler_.Release();
      ReportBuffered(0);
    }
    End(absl::DeadlineExceededError(absl::StrCat(
        "hidden: ", missing, " bytes still missing ", absl::FormatDuration(max_arrival_time_),
        " after the stream's first piece (the worker's --stream-arrival-timeout)")));
  }

  // Reports the assembler's buffer to the observer (the change since the last report).
  void TrackBuffered() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ReportBuffered(assembler_.buffered_bytes());
  }
  void ReportBuffered(int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (bytes != buffered_) observer_->OnStreamBuffered(bytes - buffered_);
    buffered_ = bytes;
  }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Every way the call ends goes through here: the outcome is reported once, then finished.
  void End(const absl::Status& s) {
    call_.Report(service_, assembler_.header(), s);
    this->Finish(rpc::ToGrpcStatus(s));
  }

  void Compute() {
    absl::StatusOr<HostTensor> out = call_.Run(service_, ctx_, deadline_, assembler_.header(),
                                               assembler_.TakeHidden(), &reply_header_);
    if (!out.ok()) {
      End(out.status());
      return;
    }
    reply_hidden_ = *std::move(out);
    WriteNext();
  }

  void WriteNext() {
    if (next_piece_ >= rpc::PieceCount(reply_hidden_)) {
      End(absl::OkStatus());
      return;
    }
    rpc::FillPiece(reply_header_, reply_hidden_, next_piece_++, &reply_);
    this->StartWrite(&reply_);
  }

  WorkerServiceImpl* const service_;
  ThreadPool* const pool_;
  WorkerObserver* const observer_;
  grpc::CallbackServerContext* const ctx_;
  const absl::Time deadline_;
  const absl::Duration max_arrival_time_;
  // OnDone's reference, and the alarm callback's while armed.
  std::atomic<int> refs_{1};
  grpc::Alarm alarm_;
  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kArriving;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t buffered_ ABSL_GUARDED_BY(mu_) = 0;  // Reported to the observer as arriving.
  Call call_;
  Request piece_;
  // Written by the reactions and the alarm under mu_ while arriving; by the compute and write
  // path only once phase_ left kArriving.
  rpc::PieceAssembler<Request> assembler_;
  Response reply_header_;  // The reply's fields but hidden, once computed.
  HostTensor reply_hidden_;
  Response reply_;  // The piece being written.
  size_t next_piece_ = 0;
};

// ForwardStream: one step (WorkerServiceImpl::RunStep).
class ForwardStreamCall {
 public:
  using Request = v1::ForwardRequest;
  using Response = v1::ForwardResponse;
  static int64_t MaxBytes(const WorkerServiceImpl* service) { return service->MaxStepBytes(); }
  void OnHeader(const Request& header) { positions_ = WorkerServiceImpl::Positions(header); }
  absl::StatusOr<HostTensor> Run(WorkerServiceImpl* service, const grpc::CallbackServerContext* ctx,
                                 absl::Time deadline, const Request& header, HostTensor hidden,
                                 Response* reply) {
    ASSIGN_OR_RETURN(StepResult result,
                     service->RunStep(ctx, deadline, header, std::move(hidden), &seconds_));
    reply->set_step_id(header.step_id());
    reply->set_length(result.length);
    reply->set_replayed(result.replayed);
    return std::move(result.hidden);
  }
  void Report(WorkerServiceImpl* service, const Request& header, const absl::Status& s) {
    service->FinishForward(header, positions_, seconds_, s);
  }

 private:
  int64_t positions_ = 0;
  double seconds_ = 0;  // Compute time, once the step ran.
};

// ForwardBatchStream: the steps of several sessions (WorkerServiceImpl::RunBatch).
class BatchStreamCall {
 public:
  using Request = v1::ForwardBatchRequest;
  using Response = v1::ForwardBatchResponse;
  static int64_t MaxBytes(const WorkerServiceImpl* service) { return service->MaxBatchBytes(); }
  void OnHeader(const Request& /*header*/) {}
  absl::StatusOr<HostTensor> Run(WorkerServiceImpl* service, const grpc::CallbackServerContext* ctx,
                                 absl::Time deadline, const Request& header, HostTensor hidden,
                                 Response* reply) {
    return service->RunBatch(ctx, deadline, header, std::move(hidden), reply, &report_);
  }
  void Report(WorkerServiceImpl* service, const Request& header, const absl::Status& s) {
    service->FinishBatch(header, report_, s);
  }

 private:
  WorkerServiceImpl::BatchReport report_;
};

}  // namespace

grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* WorkerServiceImpl::ForwardStream(
    grpc::CallbackServerContext* ctx) {
  return new StreamReactor<ForwardStreamCall>(this, owner_->pool_.get(), owner_->observer_, ctx,
                                              owner_->options_.max_step_time,
                                              owner_->options_.max_arrival_time);
}

grpc::ServerBidiReactor<v1::ForwardBatchRequest, v1::ForwardBatchResponse>*
WorkerServiceImpl::ForwardBatchStream(grpc::CallbackServerContext* ctx) {
  return new StreamReactor<BatchStreamCall>(this, owner_->pool_.get(), owner_->observer_, ctx,
                                            owner_->options_.max_step_time,
                                            owner_->options_.max_arrival_time);
}

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(
    const WorkerServerOptions& options) {
  auto server = std::unique_ptr<WorkerServer>(new WorkerServer());
  server->options_ = options;
  if (options.observer != nullptr) server->observer_ = options.observer;
  ASSIGN_OR_RETURN(server->checkpoint_, model::Checkpoint::Open(options.model_dir));
  const int64_t num_layers = server->checkpoint_->config().num_layers;
  if (options.layers.empty()) return absl::InvalidArgumentError("no layers to host");
  for (size_t i = 0; i < options.layers.size(); ++i) {
    const int l = options.layers[i];
    if (l < 0 || l >= num_layers || (i > 0 && l <= options.layers[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layers [", absl::StrJoin(options.layers, ","), "]: must be sorted, unique and below ",
          num_layers, " (the layers of ", options.model_dir, ")"));
    }
  }
  server->pool_ = std::make_unique<ThreadPool>(options.compute_threads, options.max_queued_steps);
  server->service_ = std::make_unique<WorkerServiceImpl>(server.get());
  server->health_names_ = {v1::WorkerService::service_full_name()};
  ASSIGN_OR_RETURN(rpc::StartedServer started,
                   rpc::StartServer(options.listen, {server->service_.get()}, server->health_names_,
                                    options.security));
  server->server_ = std::move(started.server);
  server->address_ = std::move(started.address);
  server->reaper_ = std::thread([s = server.get()] { s->ReapLoop(); });
  return server;
}

WorkerServer::~WorkerServer() { Shutdown(); }

absl::Status WorkerServer::Load() {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<model::LayerHost>> host;
  if (options_.memory_budget_bytes > 0) {
    ResidencyListener listener;
    WorkerObserver* observer = observer_;
    listener.on_load = [observer](double seconds) { observer->OnBlockLoad(seconds); };
    listener.on_evict = [observer] { observer->OnBlockEviction(); };
    listener.on_resident = [observer](int units, int64_t bytes) {
      observer->SetBlocksResident(units, bytes);
    };
    listener.on_hit = [observer] { observer->OnBlockHit(); };
    absl::StatusOr<std::unique_ptr<ResidentLayerHost>> resident =
        ResidentLayerHost::Create(checkpoint_, options_.layers, options_.load,
                                  options_.block_layers, options_.memory_budget_bytes, listener);
    if (resident.ok()) {
      resident_host_ = resident->get();
      const ResidencyStats rs = resident_host_->Stats();
      observer_->SetBlocksResident(rs.units_resident, rs.resident_bytes);
      host = std::unique_ptr<model::LayerHost>(*std::move(resident));
    } else {
      host = resident.status();
    }
  } else {
    host = model::LayerHost::Create(checkpoint_, options_.layers, options_.load);
  }
  if (host.ok() && options_.emulated_layer_time > absl::ZeroDuration()) {
    host = std::unique_ptr<model::LayerHost>(
        std::make_unique<EmulatedTimeLayerHost>(*std::move(host), options_.emulated_layer_time));
  }
  SessionLimits limits = options_.limits;
  std::string budget_note;
  if (host.ok() && options_.kv_budget_memory_fraction > 0) {
    absl::StatusOr<int64_t> budget = SizeKvBudget(**host, &budget_note);
    if (budget.ok()) {
      limits.kv_budget_bytes = *budget;
    } else {
      host = budget.status();
    }
  }
  if (!host.ok()) {
    absl::Status s =
        Annotate(host.status(), absl::StrCat("loading layers of ", checkpoint_->dir()));
    absl::MutexLock lock(&mu_);
    load_error_ = s.ToString();
    return s;
  }
  WorkerListener listener;
  WorkerObserver* observer = observer_;
  listener.on_batch = [observer](int sequences, int64_t rows) {
    observer->OnBatch(sequences, rows);
  };
  listener.on_busy = [observer](double seconds) { observer->OnBusy(seconds); };
  worker_ = std::make_unique<Worker>(*std::move(host), limits, std::move(listener));
  worker_ptr_.store(worker_.get(), std::memory_order_release);
  observer_->SetSessions(worker_->Stats(), limits.kv_budget_bytes);
  {
    absl::MutexLock lock(&mu_);
    if (!draining()) {
      rpc::SetServing(server_.get(), health_names_, true);
      observer_->SetReady(true);
    }
  }
  LogLine(kLog,
          absl::StrCat(
              "loaded layers ", FormatLayers(options_.layers), " (",
              FormatBytes(worker_->host().WeightBytes()), ") on ", options_.load.device, " in ",
              absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))),
              resident_host_ == nullptr
                  ? std::string()
                  : absl::StrCat("; memory budget ", FormatBytes(options_.memory_budget_bytes),
                                 ", ", resident_host_->Stats().units_resident, " of ",
                                 resident_host_->Stats().units, " blocks resident"),
              "; KV budget ",
              limits.kv_budget_bytes > 0 ? FormatBytes(limits.kv_budget_bytes) : "unlimited",
              budget_note, draining() ? "; draining" : "; serving"));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> WorkerServer::SizeKvBudget(const model::LayerHost& host,
                                                   std::string* note) const {
  absl::StatusOr<AvailableMemory> memory = ReadAvailableMemory(options_.memory_files);
  if (!memory.ok()) {
    return Annotate(memory.status(),
                    "sizing the default KV budget (give --kv-budget BYTES to set it)");
  }
  const double fraction = std::min(options_.kv_budget_memory_fraction, 1.0);
  const int64_t budget = static_cast<int64_t>(static_cast<double>(memory->bytes) * fraction);
  *note = absl::StrCat(" (", fraction, " of the ", FormatBytes(memory->bytes),
                       " available after loading: ", memory->source, ")");
  if (budget < host.KvBytesPerToken()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sizing the default KV budget: ", FormatBytes(budget), *note,
                     " does not hold one position of ", host.KvBytesPerToken(),
                     " bytes; give the worker more memory or set --kv-budget BYTES"));
  }
  return budget;
}

int64_t WorkerServer::kv_budget_bytes() const {
  if (Worker* w = worker()) return w->limits().kv_budget_bytes;
  return options_.limits.kv_budget_bytes;
}

void WorkerServer::StartDraining() {
  {
    absl::MutexLock lock(&mu_);
    if (draining_.exchange(true)) return;
    if (server_) rpc::SetServing(server_.get(), health_names_, false);
    observer_->SetReady(false);
    observer_->SetDraining(true);
  }
  LogLine(kLog, "draining: new sessions are refused, open ones are still served");
}

WorkerServer::DrainEnd WorkerServer::WaitForSessionsToEnd(
    absl::Duration grace, const std::function<bool(absl::Duration)>& wait) {
  const absl::Time end = absl::Now() + grace;
  for (absl::Time now = absl::Now();; now = absl::Now()) {
    Worker* w = worker();
    if (w == nullptr || w->Stats().sessions == 0) return DrainEnd::kNoSessions;
    if (now >= end) return DrainEnd::kGraceExpired;
    const absl::Duration step = std::min(absl::Milliseconds(50), end - now);
    if (wait) {
      if (wait(step)) return DrainEnd::kInterrupted;
    } else {
      absl::SleepFor(step);
    }
  }
}

void WorkerServer::ReapLoop() {
  // A lease expires within a quarter of its length past its end.
  absl::Duration interval = options_.reap_interval;
  if (options_.limits.lease > absl::ZeroDuration()) {
    interval = std::max(absl::Milliseconds(10), std::min(interval, options_.limits.lease / 4));
  }
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
    if (stopping_) break;
    if (Worker* w = worker()) {
      mu_.Unlock();
      const Worker::Reaped reaped = w->ReapIdle(absl::Now());
      for (int i = 0; i < reaped.idle; ++i) observer_->OnSessionEvicted("idle_ttl");
      for (int i = 0; i < reaped.lease; ++i) observer_->OnSessionEvicted("lease");
      observer_->SetSessions(w->Stats(), w->limits().kv_budget_bytes);
      if (reaped.idle > 0) {
        LogLine(kLog, absl::StrCat("closed ", reaped.idle, " session(s) idle for more than ",
                                   absl::FormatDuration(options_.limits.idle_ttl)));
      }
      if (reaped.lease > 0) {
        LogLine(kLog, absl::StrCat("closed ", reaped.lease,
                                   " session(s) whose lease was not renewed for ",
                                   absl::FormatDuration(options_.limits.lease),
                                   " (their coordinator is gone or lost this worker)"));
      }
      mu_.Lock();
    }
  }
}

void WorkerServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
  }
  StartDraining();
  if (server_) {
    // Let the steps already queued finish (up to `grace`), then shut down with an immediate
    // deadline: grpc::Server would otherwise also wait for idle client connections to close.
    const absl::Time end = absl::Now() + grace;
    while (pool_->pending() > 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(10));
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }
  if (reaper_.joinable()) reaper_.join();
  pool_.reset();  // Runs what is queued (their calls are already cancelled), joins the threads.
}

}  // namespace swarm::worker
