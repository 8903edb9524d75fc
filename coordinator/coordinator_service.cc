#include "coordinator/coordinator_service.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>
#include <utility>

#include "common/layer_set.h"
#include "common/status_macros.h"
#include "coordinator/auth.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/pipeline.h"
#include "nlohmann/json.hpp"
#include "router/memory.h"
#include "rpc/status.h"
#include "swarm/v1/coordinator.grpc.pb.h"
#include "tokenizer/jinja.h"

namespace swarm::coordinator {

namespace {

constexpr int64_t kDefaultMaxNewTokens = 64;  // SamplingParams.max_new_tokens unset.

// The client's token check (coordinator/auth.h) on the call's `authorization` metadata: a lease
// (holding one of the token's request slots when `take_slot`), or an empty one when the
// coordinator takes no tokens; UNAUTHENTICATED or RESOURCE_EXHAUSTED otherwise.
absl::StatusOr<TokenAuth::Lease> Authorize(CoordinatorServer* server,
                                           const grpc::CallbackServerContext* ctx, bool take_slot) {
  TokenAuth* auth = server->auth();
  if (auth == nullptr) return TokenAuth::Lease();
  absl::string_view value;
  const auto& metadata = ctx->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    value = absl::string_view(it->second.data(), it->second.size());
  }
  if (take_slot) return auth->Acquire(value);
  absl::StatusOr<std::string> name = auth->Authenticate(value);
  if (!name.ok()) return name.status();
  return TokenAuth::Lease();
}

absl::Time ClientDeadline(const grpc::CallbackServerContext* ctx) {
  const auto client = ctx->deadline();
  if (client == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(client);
}

// The wire's mode as the pipeline's (unset = exact; an unknown value passes through).
GenerationMode ModeFromProto(const v1::GenerateRequest& r) {
  static_assert(static_cast<int>(GenerationMode::kExact) == v1::MODE_EXACT &&
                static_cast<int>(GenerationMode::kSparse) == v1::MODE_SPARSE);
  return r.mode() == v1::MODE_UNSPECIFIED ? GenerationMode::kExact
                                          : static_cast<GenerationMode>(r.mode());
}

// The wire request as the pipeline's. Unset optional fields get the proto's documented defaults;
// unknown enum values pass through for the pipeline's validation to name.
GenerationRequest FromProto(const v1::GenerateRequest& r) {
  GenerationRequest out;
  out.prompt_ids.assign(r.prompt_ids().begin(), r.prompt_ids().end());
  out.resume_ids.assign(r.resume_ids().begin(), r.resume_ids().end());
  out.prompt = r.prompt();
  out.add_special_tokens = r.has_add_special_tokens() ? r.add_special_tokens() : true;
  const v1::SamplingParams& sp = r.sampling();
  out.sampling.max_new_tokens =
      sp.has_max_new_tokens() ? sp.max_new_tokens() : kDefaultMaxNewTokens;
  out.sampling.temperature = sp.temperature();
  out.sampling.top_k = sp.top_k();
  out.sampling.top_p = sp.has_top_p() ? sp.top_p() : 1.0f;
  out.sampling.seed = sp.seed();
  out.sampling.stop_at_eos = sp.has_stop_at_eos() ? sp.stop_at_eos() : true;
  out.sampling.stop.assign(sp.stop().begin(), sp.stop().end());
  out.sampling.logprobs = sp.logprobs();
  out.sampling.top_logprobs = sp.top_logprobs();
  out.mode = ModeFromProto(r);
  out.combine = r.combine() == v1::COMBINE_UNSPECIFIED ? CombineMode::kSequential
                                                       : static_cast<CombineMode>(r.combine());
  static_assert(static_cast<int>(CombineMode::kSequential) == v1::COMBINE_SEQUENTIAL &&
                static_cast<int>(CombineMode::kParallel) == v1::COMBINE_PARALLEL);
  out.top_k_blocks = r.top_k_blocks();
  out.blocks.assign(r.blocks().begin(), r.blocks().end());
  out.block_weights.assign(r.block_weights().begin(), r.block_weights().end());
  out.num_blocks = r.num_blocks();
  out.request_id = r.request_id();
  return out;
}

// A request with messages: its prompt is the chat template's rendering of them
// (CoordinatorModel::RenderChat), tokenized without special tokens. InvalidArgument when a
// prompt is given too, or the template raises.
absl::Status RenderMessages(const v1::GenerateRequest& r, const CoordinatorModel& model,
                            GenerationRequest& out) {
  if (r.messages().empty()) return absl::OkStatus();
  if (!r.prompt().empty() || !r.prompt_ids().empty()) {
    return absl::InvalidArgumentError("give messages or a prompt (prompt / prompt_ids), not both");
  }
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const v1::ChatMessage& m : r.messages()) {
    messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  ASSIGN_OR_RETURN(tokenizer::jinja::Value value, tokenizer::jinja::Value::FromJson(messages));
  ASSIGN_OR_RETURN(out.prompt, model.RenderChat(value, std::nullopt));
  out.add_special_tokens = false;  // The template writes BOS itself.
  return absl::OkStatus();
}

void ToProto(const model::TokenLogprob& t, v1::TokenLogprob* out) {
  out->set_id(t.id);
  out->set_logprob(t.logprob);
  out->set_text(t.text);
}

// One Generate call. The pipeline runs on the server's request pool (Run); what its sink gets is
// queued in `pending_` and written one message at a time (gRPC allows one write in flight), what
// arrives during a write being coalesced into the next message. Finish is called exactly once,
// after the generation ended and the last write completed; the object deletes itself in OnDone.
class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(CoordinatorServer* server, grpc::CallbackServerContext* ctx,
               const v1::GenerateRequest* request)
      : server_(server),
        ctx_(ctx),
        request_(request),
        arrival_(absl::Now()),
        client_deadline_(ClientDeadline(ctx)),
        stream_interval_(server->options().stream_interval) {}

  void Begin() {
    absl::StatusOr<TokenAuth::Lease> lease = Authorize(server_, ctx_, /*take_slot=*/true);
    if (!lease.ok()) {
      server_->pipeline().Refuse(ModeFromProto(*request_), lease.status());
      Finish(rpc::ToGrpcStatus(lease.status()));
      return;
    }
    lease_ = *std::move(lease);  // Released when the call object is deleted (OnDone).
    absl::Status scheduled = server_->Schedule([this] { Run(); });
    if (!scheduled.ok()) {
      server_->pipeline().Refuse(ModeFromProto(*request_), scheduled);
      Finish(rpc::ToGrpcStatus(scheduled));
    }
  }

  void OnWriteDone(bool ok) override {
    Action action;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) CancelLocked();  // The client went away.
      action = NextLocked();
    }
    Perform(action);
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    CancelLocked();
  }

  void OnDone() override { delete this; }

 private:
  // What the caller of NextLocked does once it has released mu_: nothing, start the write of
  // writing_msg_, or finish the call with `status` (copied under mu_).
  struct Action {
    enum Kind { kNone, kWrite, kFinish } kind = kNone;
    grpc::Status status;
  };

  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    cancelled_ = true;
    cancel_.Cancel();
  }

  Action NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return {};
    // Tokens decoded faster than one message per stream interval are coalesced: each message
    // costs both processes a wake-up. The first message, the first token and the last message
    // go out at once; later tokens wait at most the interval (plus one token).
    const absl::Time now = absl::Now();
    const bool due = done_ || messages_ < 2 || now - last_write_ >= stream_interval_;
    if (has_pending_ && !cancelled_ && due) {
      last_write_ = now;
      ++messages_;
      writing_msg_.Clear();
      writing_msg_.Swap(&pending_);
      has_pending_ = false;
      writing_ = true;
      return {Action::kWrite, {}};
    }
    if (done_) {
      finished_ = true;
      return {Action::kFinish, final_status_};
    }
    return {};
  }

  // Called without mu_. After kFinish (and after the last kWrite of a finished generation) the
  // object may already be deleted: callers return right after.
  void Perform(const Action& action) {
    if (action.kind == Action::kWrite) {
      StartWrite(&writing_msg_);
    } else if (action.kind == Action::kFinish) {
      Finish(action.status);
    }
  }

  // Queues what `fill` adds to the pending message and starts a write if none is in flight.
  template <typename Fill>
  void Push(Fill fill) {
    Action action;
    {
      absl::MutexLock lock(&mu_);
      fill(&pending_);
      has_pending_ = true;
      action = NextLocked();
    }
    Perform(action);
  }

  void Run() {
    GenerationRequest request = FromProto(*request_);
    const absl::Status rendered = RenderMessages(*request_, server_->model(), request);
    request.arrival = arrival_;
    request.deadline = client_deadline_;
    GenerationSink sink;
    sink.on_start = [this](const GenerationStart& start) {
      Push([&](v1::GenerateResponse* m) {
        m->mutable_prompt_ids()->Assign(start.prompt_ids.begin(), start.prompt_ids.end());
        m->set_request_id(start.request_id);
        if (start.blocks.has_value()) {
          m->mutable_blocks()->Assign(start.blocks->blocks.begin(), start.blocks->blocks.end());
          m->mutable_block_weights()->Assign(start.blocks->weights.begin(),
                                             start.blocks->weights.end());
          m->set_num_blocks(start.blocks->num_blocks);
        }
      });
    };
    // Stopping is the cancellation handle's business (OnCancel, a failed write).
    sink.on_token = [this](const model::GeneratedToken& token) {
      Push([&](v1::GenerateResponse* m) {
        if (token.id >= 0) m->add_ids(token.id);
        m->mutable_text()->append(token.text);
        if (token.has_logprob) {
          v1::TokenLogprobs* lp = m->add_logprobs();
          ToProto(token.chosen, lp->mutable_chosen());
          for (const model::TokenLogprob& t : token.top_logprobs) ToProto(t, lp->add_top());
        }
      });
      return true;
    };
    absl::StatusOr<GenerationResult> result =
        rendered.ok() ? server_->pipeline().Generate(request, sink, &cancel_)
                      : absl::StatusOr<GenerationResult>(rendered);
    if (!rendered.ok()) server_->pipeline().Refuse(request.mode, rendered);
    Action action;
    {
      absl::MutexLock lock(&mu_);
      if (result.ok()) {
        pending_.set_finish_reason(result->finish_reason);
        v1::Usage* usage = pending_.mutable_usage();
        usage->set_prompt_tokens(result->usage.prompt_tokens);
        usage->set_generated_tokens(result->usage.generated_tokens);
        usage->set_time_to_first_token_seconds(
            absl::ToDoubleSeconds(result->usage.time_to_first_token));
        usage->set_total_seconds(absl::ToDoubleSeconds(result->usage.total));
        has_pending_ = true;
      }
      final_status_ = rpc::ToGrpcStatus(result.status());
      done_ = true;
      action = NextLocked();
    }
    Perform(action);  // May delete `this`.
  }

  CoordinatorServer* const server_;
  const grpc::CallbackServerContext* const ctx_;
  const v1::GenerateRequest* const request_;
  TokenAuth::Lease lease_;
  const absl::Time arrival_;
  const absl::Time client_deadline_;
  const absl::Duration stream_interval_;
  CancellationHandle cancel_;

  absl::Mutex mu_;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_write_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int messages_ ABSL_GUARDED_BY(mu_) = 0;
  v1::GenerateResponse writing_msg_;  // Owned by the write in flight.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

void FillStatus(const CoordinatorServer& server, const ServingReport& report,
                v1::StatusResponse* resp) {
  const model::ModelConfig& c = server.config();
  resp->set_serving(report.serving);
  if (!report.serving) resp->set_reason(report.reason);
  resp->set_model_fingerprint(c.Fingerprint());
  resp->set_architecture(c.architecture);
  resp->set_num_layers(static_cast<int32_t>(c.num_layers));
  resp->set_max_position_embeddings(c.max_position_embeddings);
  resp->set_active_requests(report.active_requests);
  resp->set_requests_total(report.requests_total);
  resp->set_router(report.router_path);
  const SchedulerStats::Snapshot& sched = report.scheduler;
  v1::SchedulerStatus* st = resp->mutable_scheduler();
  st->set_running_requests(sched.running_requests);
  st->set_waiting_requests(sched.waiting_requests);
  st->set_window_seconds(sched.window_seconds);
  st->set_steps(static_cast<uint64_t>(sched.steps));
  st->set_sequences_per_step(sched.sequences_per_step);
  st->set_tokens_per_step(sched.tokens_per_step);
  st->set_admitted(static_cast<uint64_t>(sched.admitted));
  st->set_queue_seconds_mean(sched.queue_seconds_mean);
  for (size_t i = 0; i < report.workers.size(); ++i) {
    const WorkerState& s = report.workers[i];
    v1::WorkerStatus* w = resp->add_workers();
    w->set_address(s.address);
    w->set_reachable(s.reachable);
    w->set_compatible(s.compatible);
    w->set_ready(s.ready);
    w->set_error(s.error);
    for (auto [begin, end] :
         LayerRuns(std::vector<int>(s.info.layers().begin(), s.info.layers().end()))) {
      v1::LayerRange* r = w->add_layers();
      r->set_begin(begin);
      r->set_end(end);
    }
    w->set_device(s.info.device());
    w->set_dtype(s.info.dtype());
    w->set_weight_format(s.info.weight_format());
    w->set_sessions(s.info.sessions());
    w->set_max_sessions(s.info.max_sessions());
    w->set_kv_used_bytes(s.info.kv_used_bytes());
    w->set_kv_reserved_bytes(s.info.kv_reserved_bytes());
    w->set_kv_budget_bytes(s.info.kv_budget_bytes());
    w->set_weight_bytes(s.info.weight_bytes());
    w->set_inflight_steps(s.info.inflight_steps());
    w->set_active_requests(s.active_requests);
    w->set_steps_total(s.info.steps_total());
    if (i < sched.worker_busy_fraction.size()) w->set_busy_fraction(sched.worker_busy_fraction[i]);
  }
}

absl::Status DoPredict(GenerationPipeline& pipeline, const v1::PredictRequest& req,
                       v1::PredictResponse* resp) {
  PredictRequest request;
  request.prompt_ids.assign(req.prompt_ids().begin(), req.prompt_ids().end());
  request.prompt = req.prompt();
  request.top_k_blocks = req.top_k_blocks();
  ASSIGN_OR_RETURN(BlockPrediction p, pipeline.Predict(request));
  for (size_t i = 0; i < p.choice.blocks.size(); ++i) {
    v1::BlockWeight* b = resp->add_blocks();
    b->set_block(p.choice.blocks[i]);
    b->mutable_layers()->set_begin(p.layers[i].first);
    b->mutable_layers()->set_end(p.layers[i].second);
    b->set_weight(p.choice.weights[i]);
  }
  resp->set_num_blocks(p.choice.num_blocks);
  resp->mutable_prompt_ids()->Assign(p.prompt_ids.begin(), p.prompt_ids.end());
  resp->set_expected_kl(p.expected_kl);
  resp->set_balance(p.balance);
  resp->mutable_toll_free_blocks()->Assign(p.toll_free_blocks.begin(), p.toll_free_blocks.end());
  resp->set_toll_free_expected_kl(p.toll_free_expected_kl);
  return absl::OkStatus();
}

absl::Status DoEstimateMemory(CoordinatorServer& server, const v1::EstimateMemoryRequest& req,
                              v1::EstimateMemoryResponse* resp) {
  MemoryQuery query;
  query.num_blocks = req.num_blocks();
  query.top_k_blocks = req.top_k_blocks();
  query.num_workers = req.num_workers();
  query.dtype = req.dtype();
  if (req.keep_blocks_set())
    query.keep_blocks.emplace(req.keep_blocks().begin(), req.keep_blocks().end());
  ASSIGN_OR_RETURN(router::MemoryEstimate m,
                   server.model().EstimateMemory(query, server.workers().size()));
  resp->set_num_blocks(m.num_blocks);
  resp->set_top_k_blocks(m.top_k);
  resp->set_dtype(m.dtype);
  resp->set_embedding_bytes(m.embedding_bytes);
  resp->set_head_bytes(m.head_bytes);
  resp->mutable_layer_bytes()->Assign(m.layer_bytes.begin(), m.layer_bytes.end());
  resp->mutable_block_bytes()->Assign(m.block_bytes.begin(), m.block_bytes.end());
  resp->set_blocks_bytes(m.blocks_bytes);
  resp->set_total_bytes(m.total_bytes);
  resp->set_active_block_bytes(m.active_block_bytes);
  resp->set_active_bytes(m.active_bytes);
  resp->set_savings_ratio(m.savings_ratio);
  resp->set_block_savings_ratio(m.block_savings_ratio);
  resp->mutable_worker_bytes()->Assign(m.worker_bytes.begin(), m.worker_bytes.end());
  for (const std::vector<int>& blocks : m.worker_blocks) {
    v1::LayerRange* r = resp->add_worker_blocks();
    r->set_begin(blocks.empty() ? 0 : blocks.front());
    r->set_end(blocks.empty() ? 0 : blocks.back() + 1);
  }
  resp->set_kv_bytes_per_token(m.kv_bytes_per_token);
  return absl::OkStatus();
}

class CoordinatorServiceImpl final : public v1::CoordinatorService::CallbackService {
 public:
  explicit CoordinatorServiceImpl(CoordinatorServer* server) : server_(server) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) override {
    auto* call = new GenerateCall(server_, ctx, request);
    call->Begin();
    return call;
  }

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const v1::StatusRequest*,
                                   v1::StatusResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    // Unauthenticated callers learn nothing beyond grpc.health.v1's answer.
    if (absl::StatusOr<TokenAuth::Lease> lease = Authorize(server_, ctx, /*take_slot=*/false);
        !lease.ok()) {
      reactor->Finish(rpc::ToGrpcStatus(lease.status()));
      return reactor;
    }
    server_->ReportAsync([this, reactor, resp](const ServingReport& report) {
      FillStatus(*server_, report, resp);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

  // The router answers in well under a millisecond without running any block: done here.
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx, const v1::PredictRequest* req,
                                    v1::PredictResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::StatusOr<TokenAuth::Lease> lease = Authorize(server_, ctx, /*take_slot=*/true);
    reactor->Finish(rpc::ToGrpcStatus(lease.ok() ? DoPredict(server_->pipeline(), *req, resp)
                                                 : lease.status()));
    return reactor;
  }

  // Tensor sizes only: answered here.
  grpc::ServerUnaryReactor* EstimateMemory(grpc::CallbackServerContext* ctx,
                                           const v1::EstimateMemoryRequest* req,
                                           v1::EstimateMemoryResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    absl::StatusOr<TokenAuth::Lease> lease = Authorize(server_, ctx, /*take_slot=*/false);
    reactor->Finish(
        rpc::ToGrpcStatus(lease.ok() ? DoEstimateMemory(*server_, *req, resp) : lease.status()));
    return reactor;
  }

 private:
  CoordinatorServer* const server_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewCoordinatorService(CoordinatorServer* server) {
  return std::make_unique<CoordinatorServiceImpl>(server);
}

}  // namespace swarm::coordinator
