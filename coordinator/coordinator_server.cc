#include "coordinator/coordinator_server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/block_layout.h"
#include "common/host_port.h"
#include "common/layer_set.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "coordinator/remote_executor.h"
#include "model/generate.h"
#include "router/memory.h"
#include "router/router.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/coordinator.grpc.pb.h"

namespace swarm::coordinator {

namespace {

constexpr char kLog[] = "swarm-coordinator";
constexpr int64_t kDefaultMaxNewTokens = 64;

absl::Time EffectiveDeadline(const grpc::CallbackServerContext* ctx, absl::Time start,
                             absl::Duration cap) {
  const auto client = ctx->deadline();
  if (client == std::chrono::system_clock::time_point::max()) return start + cap;
  return std::min(absl::FromChrono(client), start + cap);
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// Tells the observer about every completed step of `inner` (metrics of block load).
class ObservedExecutor : public model::StepExecutor {
 public:
  ObservedExecutor(model::StepExecutor* inner, CoordinatorObserver* observer,
                   const std::vector<int>* blocks)
      : inner_(inner), observer_(observer), blocks_(blocks) {}
  absl::StatusOr<HostTensor> Run(const HostTensor& h, int64_t start_pos) override {
    absl::StatusOr<HostTensor> out = inner_->Run(h, start_pos);
    if (out.ok()) observer_->OnStep(*blocks_);
    return out;
  }

 private:
  model::StepExecutor* const inner_;
  CoordinatorObserver* const observer_;
  const std::vector<int>* const blocks_;
};

}  // namespace

// One Generate call. The generation runs on the server's request pool (Run); tokens are queued in
// `pending_` and written one message at a time (gRPC allows one write in flight), tokens that
// arrive during a write being coalesced into the next message. Finish is called exactly once,
// after the generation ended and the last write completed; the object deletes itself in OnDone.
class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                           public HopObserver {
 public:
  GenerateCall(CoordinatorServer* server, grpc::CallbackServerContext* ctx,
               const v1::GenerateRequest* request)
      : server_(server),
        request_(request),
        start_(absl::Now()),
        deadline_(EffectiveDeadline(ctx, start_, server->options_.max_request_time)),
        stream_interval_(server->options_.stream_interval) {}

  void Begin() {
    if (server_->stopping()) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down"));
      return;
    }
    if (!server_->pool_->TrySchedule([this] { Run(); })) {
      Finish(rpc::ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
          "coordinator overloaded: ", server_->pool_->pending(), " requests running or queued"))));
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

  void OnHop(int worker, int64_t positions, absl::Duration elapsed,
             const absl::Status& status) override {
    server_->observer_->OnWorkerStep(server_->workers_->address(worker), Seconds(elapsed),
                                     status.code());
  }

 private:
  enum class Action { kNone, kWrite, kFinish };

  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    cancelled_ = true;
    if (executor_ != nullptr) executor_->Cancel();
  }

  Action NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return Action::kNone;
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
      return Action::kWrite;
    }
    if (done_) {
      finished_ = true;
      return Action::kFinish;
    }
    return Action::kNone;
  }

  // Called without mu_. After kFinish (and after the last kWrite of a finished generation) the
  // object may already be deleted: callers return right after.
  void Perform(Action action) {
    if (action == Action::kWrite) {
      StartWrite(&writing_msg_);
    } else if (action == Action::kFinish) {
      Finish(final_status_);
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

  bool OnToken(const model::GeneratedToken& token) {
    const absl::Time now = absl::Now();
    if (token.id >= 0) {
      ++generated_;
      if (generated_ == 1) {
        ttft_ = now - start_;
      } else {
        server_->observer_->OnInterToken(mode_, Seconds(now - last_token_));
      }
      last_token_ = now;
    }
    Push([&](v1::GenerateResponse* m) {
      if (token.id >= 0) m->add_ids(token.id);
      m->mutable_text()->append(token.text);
    });
    if (now > deadline_) deadline_hit_ = true;
    absl::MutexLock lock(&mu_);
    return !cancelled_ && !deadline_hit_;
  }

  void Run() {
    server_->active_requests_.fetch_add(1);
    server_->observer_->OnRequestStart(mode_);
    std::string finish_reason;
    absl::Status status = Generate(&finish_reason);
    server_->active_requests_.fetch_sub(1);
    server_->requests_total_.fetch_add(1);
    const absl::Duration total = absl::Now() - start_;
    server_->observer_->OnRequestDone(mode_, status.code(), prompt_tokens_, generated_,
                                      Seconds(total), generated_ > 0 ? Seconds(ttft_) : -1.0);
    LogLine(kLog, absl::StrFormat("request '%s': %d prompt + %d generated tokens in %s, %s%s%s",
                                  request_id_, prompt_tokens_, generated_,
                                  absl::FormatDuration(absl::Trunc(total, absl::Microseconds(100))),
                                  status.ok() ? finish_reason : status.ToString(),
                                  route_.empty() ? "" : ", route ", route_));
    Action action;
    {
      absl::MutexLock lock(&mu_);
      if (status.ok()) {
        pending_.set_finish_reason(finish_reason);
        v1::Usage* usage = pending_.mutable_usage();
        usage->set_prompt_tokens(prompt_tokens_);
        usage->set_generated_tokens(generated_);
        usage->set_time_to_first_token_seconds(generated_ > 0 ? Seconds(ttft_) : 0.0);
        usage->set_total_seconds(Seconds(total));
        has_pending_ = true;
      }
      final_status_ = rpc::ToGrpcStatus(status);
      done_ = true;
      action = NextLocked();
    }
    Perform(action);  // May delete `this`.
  }

  absl::Status Generate(std::string* finish_reason) {
    const v1::GenerateRequest& r = *request_;
    request_id_ = r.request_id().empty()
                      ? absl::StrCat("req-", server_->request_counter_.fetch_add(1) + 1)
                      : r.request_id();
    switch (r.mode()) {
      case v1::MODE_UNSPECIFIED:
      case v1::MODE_EXACT:
        break;
      case v1::MODE_SPARSE:
        mode_ = "sparse";
        break;
      default:
        mode_ = "other";
        return absl::InvalidArgumentError(absl::StrCat("unknown mode ", r.mode()));
    }
    if (r.combine() != v1::COMBINE_UNSPECIFIED && r.combine() != v1::COMBINE_SEQUENTIAL &&
        r.combine() != v1::COMBINE_PARALLEL) {
      return absl::InvalidArgumentError(absl::StrCat("unknown combine ", r.combine()));
    }
    if (r.top_k_blocks() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("top_k_blocks ", r.top_k_blocks(), " is negative"));
    }
    const v1::SamplingParams& sp = r.sampling();
    model::SamplingParams params;
    params.max_new_tokens = sp.has_max_new_tokens() ? sp.max_new_tokens() : kDefaultMaxNewTokens;
    params.temperature = sp.temperature();
    params.top_k = sp.top_k();
    params.top_p = sp.has_top_p() ? sp.top_p() : 1.0f;
    params.seed = sp.seed();
    params.stop_at_eos = sp.has_stop_at_eos() ? sp.stop_at_eos() : true;
    RETURN_IF_ERROR(params.Validate());

    const model::ModelConfig& config = server_->config();
    std::vector<int64_t> ids;
    if (r.prompt_ids_size() > 0) {
      if (!r.prompt().empty()) {
        return absl::InvalidArgumentError("give prompt or prompt_ids, not both");
      }
      ids.assign(r.prompt_ids().begin(), r.prompt_ids().end());
      for (int64_t id : ids) {
        if (id < 0 || id >= config.vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrCat("prompt id ", id, " is outside the vocabulary of ", config.vocab_size));
        }
      }
    } else {
      if (server_->model_->tokenizer() == nullptr) {
        return absl::InvalidArgumentError(
            "this model has no tokenizer.json: send prompt_ids instead of a prompt");
      }
      ASSIGN_OR_RETURN(ids,
                       server_->model_->tokenizer()->Encode(
                           r.prompt(), r.has_add_special_tokens() ? r.add_special_tokens() : true));
    }
    if (ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
    prompt_tokens_ = static_cast<int64_t>(ids.size());
    const int64_t context = config.max_position_embeddings;
    if (prompt_tokens_ + params.max_new_tokens > context) {
      return absl::OutOfRangeError(absl::StrCat(
          "prompt (", prompt_tokens_, " tokens) + max_new_tokens (", params.max_new_tokens,
          ") exceeds the model's context of ", context, " tokens"));
    }

    // Which layers run: every layer (exact), or the chosen blocks (sparse); and the blocks of the
    // metric series (the coordinator's block layout) that they touch.
    const bool sparse = r.mode() == v1::MODE_SPARSE;
    SparseChoice choice;
    std::vector<std::vector<int>> layer_sets;
    const BlockLayout series = server_->model_->block_layout();
    std::vector<int> series_blocks;
    if (sparse) {
      ASSIGN_OR_RETURN(choice, server_->ChooseBlocks(r, ids));
      ASSIGN_OR_RETURN(BlockLayout layout,
                       BlockLayout::Create(config.num_layers, choice.num_blocks));
      for (int b : choice.blocks) layer_sets.push_back(layout.Layers(b));
      if (choice.num_blocks == series.num_blocks) {
        series_blocks = choice.blocks;
      } else {
        // An explicit plan of another split: the series blocks its layers touch.
        std::vector<int> layers;
        for (const std::vector<int>& set : layer_sets) {
          layers.insert(layers.end(), set.begin(), set.end());
        }
        std::sort(layers.begin(), layers.end());
        layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
        series_blocks = BlocksTouched(series, layers);
      }
    } else {
      std::vector<int> all(config.num_layers);
      for (int l = 0; l < config.num_layers; ++l) all[l] = l;
      layer_sets.push_back(std::move(all));
      for (int b = 0; b < series.num_blocks; ++b) series_blocks.push_back(b);
    }
    const bool by_router = sparse && r.blocks_size() == 0;
    server_->observer_->OnBlocksChosen(
        mode_, series_blocks,
        by_router ? server_->model_->router()->Tolls() : std::vector<double>());
    absl::StatusOr<std::vector<std::vector<Hop>>> plans =
        server_->workers_->AcquirePlans(layer_sets);
    if (!plans.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "coordinator is not serving: ",
          sparse ? plans.status().message() : server_->workers_->Coverage().message()));
    }
    ExecutionPlan plan;
    plan.parallel = sparse && r.combine() == v1::COMBINE_PARALLEL;
    for (size_t i = 0; i < plans->size(); ++i) {
      plan.blocks.push_back(PlanBlock{(*plans)[i], sparse ? choice.weights[i] : 1.0f});
    }
    RemoteExecutorOptions exec_options;
    exec_options.deadline = deadline_;
    exec_options.step_timeout = server_->options_.step_timeout;
    exec_options.control_timeout = server_->options_.control_timeout;
    exec_options.request_id = request_id_;
    exec_options.observer = this;
    absl::StatusOr<model::GenerateResult> result;
    {
      RemoteExecutor executor(server_->workers_.get(), std::move(plan), exec_options);
      route_ = executor.Describe();
      {
        absl::MutexLock lock(&mu_);
        executor_ = &executor;
        if (cancelled_) executor.Cancel();
      }
      Push([&](v1::GenerateResponse* m) {
        m->mutable_prompt_ids()->Assign(ids.begin(), ids.end());
        m->set_request_id(request_id_);
        if (sparse) {
          m->mutable_blocks()->Assign(choice.blocks.begin(), choice.blocks.end());
          m->mutable_block_weights()->Assign(choice.weights.begin(), choice.weights.end());
          m->set_num_blocks(choice.num_blocks);
        }
      });
      // The router has chosen: workers with a memory budget can load the blocks meanwhile.
      if (sparse) executor.Prefetch();
      absl::Status open = executor.Open(prompt_tokens_ + params.max_new_tokens);
      if (open.ok()) {
        ObservedExecutor observed(&executor, server_->observer_, &series_blocks);
        result = model::RunGenerationLoop(
            server_->model_->ends(), observed, server_->model_->tokenizer(), ids, params,
            [this](const model::GeneratedToken& t) { return OnToken(t); });
      } else {
        result = open;
      }
      executor.Close();
      absl::MutexLock lock(&mu_);
      executor_ = nullptr;
    }
    server_->workers_->Release(*plans);

    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      cancelled = cancelled_;
    }
    // A client's deadline reaches us as a cancellation too; name it for what it is.
    if (deadline_hit_ || ((cancelled || !result.ok()) && absl::Now() >= deadline_)) {
      return absl::DeadlineExceededError(
          absl::StrCat("the request's deadline passed after ", generated_, " tokens"));
    }
    if (cancelled) return absl::CancelledError("the client cancelled the request");
    if (!result.ok()) return result.status();
    *finish_reason = result->finish_reason;
    return absl::OkStatus();
  }

  CoordinatorServer* const server_;
  const v1::GenerateRequest* const request_;
  const absl::Time start_;
  const absl::Time deadline_;
  // Used by the request thread only.
  std::string mode_ = "exact";
  std::string request_id_;
  std::string route_;
  int64_t prompt_tokens_ = 0;
  int64_t generated_ = 0;
  absl::Duration ttft_;
  absl::Time last_token_;
  bool deadline_hit_ = false;

  absl::Mutex mu_;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  const absl::Duration stream_interval_;
  absl::Time last_write_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int messages_ ABSL_GUARDED_BY(mu_) = 0;
  v1::GenerateResponse writing_msg_;  // Owned by the write in flight.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  RemoteExecutor* executor_ ABSL_GUARDED_BY(mu_) = nullptr;
};

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
    server_->workers_->RefreshAsync(server_->options_.control_timeout, [this, reactor, resp] {
      server_->UpdateServing();
      Fill(resp);
      reactor->Finish(grpc::Status::OK);
    });
    return reactor;
  }

  // The router answers in well under a millisecond without running any block: done here.
  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx, const v1::PredictRequest* req,
                                    v1::PredictResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(rpc::ToGrpcStatus(DoPredict(*req, resp)));
    return reactor;
  }

  // Tensor sizes only: answered here.
  grpc::ServerUnaryReactor* EstimateMemory(grpc::CallbackServerContext* ctx,
                                           const v1::EstimateMemoryRequest* req,
                                           v1::EstimateMemoryResponse* resp) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(rpc::ToGrpcStatus(DoEstimateMemory(*req, resp)));
    return reactor;
  }

 private:
  absl::Status DoEstimateMemory(const v1::EstimateMemoryRequest& req,
                                v1::EstimateMemoryResponse* resp) {
    MemoryQuery query;
    query.num_blocks = req.num_blocks();
    query.top_k_blocks = req.top_k_blocks();
    query.num_workers = req.num_workers();
    query.dtype = req.dtype();
    if (req.keep_blocks_set()) {
      query.keep_blocks.emplace(req.keep_blocks().begin(), req.keep_blocks().end());
    }
    ASSIGN_OR_RETURN(
        router::MemoryEstimate m,
        server_->model_->EstimateMemory(query, static_cast<int>(server_->options_.workers.size())));
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

  absl::Status DoPredict(const v1::PredictRequest& req, v1::PredictResponse* resp) {
    if (server_->model_->router() == nullptr) {
      return absl::FailedPreconditionError(
          "Predict needs a router file: start swarm-coordinator with --router FILE");
    }
    std::vector<int64_t> ids(req.prompt_ids().begin(), req.prompt_ids().end());
    if (ids.empty()) {
      if (server_->model_->tokenizer() == nullptr) {
        return absl::InvalidArgumentError("this model has no tokenizer.json: send prompt_ids");
      }
      ASSIGN_OR_RETURN(ids, server_->model_->tokenizer()->Encode(req.prompt(), true));
    }
    if (ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
    const int n = server_->model_->router()->num_blocks();
    if (req.top_k_blocks() < 1 || req.top_k_blocks() > n) {
      return absl::InvalidArgumentError(
          absl::StrCat("top_k_blocks ", req.top_k_blocks(), " is not in 1..", n));
    }
    ASSIGN_OR_RETURN(router::Prediction p,
                     server_->model_->router()->Predict(ids, req.top_k_blocks()));
    ASSIGN_OR_RETURN(BlockLayout layout, BlockLayout::Create(server_->config().num_layers, n));
    for (size_t i = 0; i < p.blocks.size(); ++i) {
      v1::BlockWeight* b = resp->add_blocks();
      b->set_block(p.blocks[i]);
      b->mutable_layers()->set_begin(layout.begin(p.blocks[i]));
      b->mutable_layers()->set_end(layout.end(p.blocks[i]));
      b->set_weight(i < p.weights.size() ? p.weights[i] : 1.0f);
    }
    resp->set_num_blocks(n);
    resp->mutable_prompt_ids()->Assign(ids.begin(), ids.end());
    resp->set_expected_kl(p.expected_kl);
    return absl::OkStatus();
  }

  void Fill(v1::StatusResponse* resp) {
    const model::ModelConfig& c = server_->config();
    resp->set_serving(server_->serving());
    {
      absl::MutexLock lock(&server_->mu_);
      if (!server_->serving()) resp->set_reason(server_->not_serving_reason_);
    }
    resp->set_model_fingerprint(c.Fingerprint());
    resp->set_architecture(c.architecture);
    resp->set_num_layers(static_cast<int32_t>(c.num_layers));
    resp->set_max_position_embeddings(c.max_position_embeddings);
    resp->set_active_requests(server_->active_requests_.load());
    resp->set_requests_total(server_->requests_total_.load());
    resp->set_router(server_->options_.router_path);
    for (const WorkerState& s : server_->workers_->Snapshot()) {
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
      w->set_sessions(s.info.sessions());
      w->set_max_sessions(s.info.max_sessions());
      w->set_kv_used_bytes(s.info.kv_used_bytes());
      w->set_kv_reserved_bytes(s.info.kv_reserved_bytes());
      w->set_kv_budget_bytes(s.info.kv_budget_bytes());
      w->set_weight_bytes(s.info.weight_bytes());
      w->set_inflight_steps(s.info.inflight_steps());
      w->set_active_requests(s.active_requests);
      w->set_steps_total(s.info.steps_total());
    }
  }

  CoordinatorServer* const server_;
};

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorOptions& options) {
  for (const std::string& w : options.workers) RETURN_IF_ERROR(ValidateHostPort(w, "--workers"));
  CoordinatorModelOptions model_options;
  model_options.model_dir = options.model_dir;
  model_options.device = options.device;
  model_options.router_path = options.router_path;
  model_options.router_num_blocks = options.router_num_blocks;
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorModel> model, CoordinatorModel::Load(model_options));
  return Start(options, std::move(model));
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorOptions& options, std::unique_ptr<CoordinatorModel> model) {
  for (const std::string& w : options.workers) RETURN_IF_ERROR(ValidateHostPort(w, "--workers"));
  auto server = std::unique_ptr<CoordinatorServer>(new CoordinatorServer());
  server->options_ = options;
  server->observer_ = options.observer != nullptr ? options.observer : &server->default_observer_;
  server->model_ = std::move(model);
  const model::ModelConfig& c = server->model_->config();
  server->workers_ =
      std::make_unique<WorkerSet>(options.workers, c.Fingerprint(), static_cast<int>(c.num_layers));
  server->pool_ =
      std::make_unique<ThreadPool>(options.max_concurrent_requests, options.max_queued_requests);
  server->service_ = std::make_unique<CoordinatorServiceImpl>(server.get());
  server->health_names_ = {v1::CoordinatorService::service_full_name()};
  ASSIGN_OR_RETURN(
      rpc::StartedServer started,
      rpc::StartServer(options.listen, {server->service_.get()}, server->health_names_));
  server->server_ = std::move(started.server);
  server->address_ = std::move(started.address);
  server->monitor_ = std::thread([s = server.get()] { s->MonitorLoop(); });
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

absl::StatusOr<SparseChoice> CoordinatorServer::ChooseBlocks(const v1::GenerateRequest& request,
                                                             const std::vector<int64_t>& ids) {
  SparseChoice choice;
  const int num_layers = static_cast<int>(config().num_layers);
  if (request.blocks_size() > 0) {
    choice.num_blocks = request.num_blocks();
    if (choice.num_blocks < 1 || choice.num_blocks > num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_blocks ", choice.num_blocks, " is not in 1..", num_layers));
    }
    if (request.block_weights_size() != 0 &&
        request.block_weights_size() != request.blocks_size()) {
      return absl::InvalidArgumentError(absl::StrCat(request.blocks_size(), " blocks but ",
                                                     request.block_weights_size(), " weights"));
    }
    std::vector<std::pair<int, float>> chosen;
    for (int i = 0; i < request.blocks_size(); ++i) {
      const int b = request.blocks(i);
      const float w = request.block_weights_size() > 0 ? request.block_weights(i) : 1.0f;
      if (b < 0 || b >= choice.num_blocks || !std::isfinite(w)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "block ", b, " (weight ", w, ") is not a block of 0..", choice.num_blocks - 1));
      }
      chosen.emplace_back(b, w);
    }
    std::sort(chosen.begin(), chosen.end());
    for (size_t i = 1; i < chosen.size(); ++i) {
      if (chosen[i].first == chosen[i - 1].first) {
        return absl::InvalidArgumentError(absl::StrCat("block ", chosen[i].first, " repeated"));
      }
    }
    for (auto [b, w] : chosen) {
      choice.blocks.push_back(b);
      choice.weights.push_back(w);
    }
    return choice;
  }
  router::Router* router = model_->router();
  if (router == nullptr) {
    return absl::FailedPreconditionError(
        "sparse mode needs a router file (swarm-coordinator --router FILE) or an explicit plan "
        "(blocks and num_blocks)");
  }
  choice.num_blocks = router->num_blocks();
  if (request.top_k_blocks() < 1 || request.top_k_blocks() > choice.num_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k_blocks ", request.top_k_blocks(), " is not in 1..", choice.num_blocks));
  }
  ASSIGN_OR_RETURN(router::Prediction p, router->Route(ids, request.top_k_blocks()));
  choice.blocks = p.blocks;
  choice.weights = p.weights;
  choice.weights.resize(choice.blocks.size(), 1.0f);
  return choice;
}

void CoordinatorServer::UpdateServing() {
  absl::Status coverage = workers_->Coverage();
  const bool now = coverage.ok();
  absl::MutexLock lock(&mu_);
  not_serving_reason_ = std::string(coverage.message());
  if (now == serving_.load()) return;
  serving_.store(now);
  if (server_) rpc::SetServing(server_.get(), health_names_, now);
  observer_->SetReady(now);
  if (now) {
    std::vector<std::string> hosts;
    for (const WorkerState& s : workers_->Snapshot()) {
      if (s.usable()) {
        hosts.push_back(absl::StrCat(
            s.address, "[",
            FormatLayers(std::vector<int>(s.info.layers().begin(), s.info.layers().end())), "]"));
      }
    }
    LogLine(kLog, absl::StrCat("serving: workers ", absl::StrJoin(hosts, ", "), " cover all ",
                               config().num_layers, " layers"));
  } else {
    LogLine(kLog, absl::StrCat("not serving: ", coverage.message()));
  }
}

void CoordinatorServer::MonitorLoop() {
  absl::Duration backoff = options_.min_backoff;
  absl::Time last_log = absl::InfinitePast();
  std::string last_reason;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    workers_->Refresh(options_.control_timeout);
    {
      const std::vector<WorkerState> snapshot = workers_->Snapshot();
      for (const WorkerState& s : snapshot) observer_->SetWorkerUp(s.address, s.usable());
      observer_->OnWorkers(snapshot);
    }
    UpdateServing();
    absl::Duration wait = options_.poll_interval;
    if (!serving_.load()) {
      wait = backoff;
      backoff = std::min(backoff * 2, options_.max_backoff);
      std::string reason;
      {
        absl::MutexLock lock(&mu_);
        reason = not_serving_reason_;
      }
      // One line when the reason changes, and a reminder every 30 s while it lasts.
      if (reason != last_reason || absl::Now() - last_log > absl::Seconds(30)) {
        LogLine(kLog, absl::StrCat("waiting for workers: ", reason, "; retrying in ",
                                   absl::FormatDuration(wait)));
        last_reason = reason;
        last_log = absl::Now();
      }
    } else {
      backoff = options_.min_backoff;
      last_reason.clear();
    }
    workers_->WaitForChange(wait);
  }
}

absl::Status CoordinatorServer::WaitUntilServing(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (!serving_.load()) {
    if (absl::Now() > end) {
      absl::MutexLock lock(&mu_);
      return absl::DeadlineExceededError(absl::StrCat("coordinator not serving after ",
                                                      absl::FormatDuration(timeout), ": ",
                                                      not_serving_reason_));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

void CoordinatorServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
  }
  if (workers_) workers_->Notify();  // Wakes the monitor.
  if (server_) {
    rpc::SetServing(server_.get(), health_names_, false);
    // Drain: new requests are refused (UNAVAILABLE) while running ones get `grace` to finish.
    // Then shut down with an immediate deadline: grpc::Server would otherwise also wait for idle
    // client connections to close, which a client that is not polling never does.
    const absl::Time end = absl::Now() + grace;
    while (pool_->pending() > 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(10));
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }
  if (monitor_.joinable()) monitor_.join();
  pool_.reset();
}

}  // namespace swarm::coordinator
