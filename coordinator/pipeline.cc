#include "coordinator/pipeline.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/block_layout.h"
#include "common/logging.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "coordinator/hop_fusion.h"
#include "coordinator/scheduler.h"
#include "coordinator/worker_set.h"
#include "router/router.h"

namespace swarm::coordinator {

namespace {

constexpr char kLog[] = "swarm-coordinator";

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

// The metrics' label for a request's mode.
const char* ModeLabel(GenerationMode mode) {
  switch (mode) {
    case GenerationMode::kExact:
      return "exact";
    case GenerationMode::kSparse:
      return "sparse";
  }
  return "other";
}

}  // namespace

void CancellationHandle::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (on_cancel_) on_cancel_();
}

bool CancellationHandle::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void CancellationHandle::SetOnCancel(std::function<void()> on_cancel) {
  absl::MutexLock lock(&mu_);
  on_cancel_ = std::move(on_cancel);
  if (cancelled_ && on_cancel_) on_cancel_();
}

// One request as it goes through the stages. Used by Generate's thread only.
struct GenerationPipeline::Run {
  const char* mode = "exact";
  absl::Time arrival;
  absl::Time deadline;
  int64_t generated = 0;
  absl::Time last_token;
  bool deadline_hit = false;
  bool stopped_by_sink = false;
  std::vector<int64_t> resume_ids;  // GenerationRequest::resume_ids.
  GenerationResult result;
};

GenerationPipeline::GenerationPipeline(const CoordinatorModel* model, WorkerSet* workers,
                                       const PipelineOptions& options)
    : model_(model),
      workers_(workers),
      options_(options),
      observer_(options.observer != nullptr ? options.observer : &default_observer_) {
  if (options.hop_threads > 0) {
    hop_pool_ = std::make_unique<ThreadPool>(
        options.hop_threads, static_cast<size_t>(std::max(options.max_queued_hops, 0)));
  }
  SchedulerOptions so;
  so.limits = options.limits;
  so.max_waiting_requests = options.max_waiting_requests;
  so.max_micro_batches = options.max_micro_batches;
  so.step_timeout = options.step_timeout;
  so.control_timeout = options.control_timeout;
  so.failover = options.failover;
  so.observer = observer_;
  so.hop_pool = hop_pool_.get();
  scheduler_ = std::make_unique<Scheduler>(model, workers, so);
  if (options.balance.enabled && model->router() != nullptr) {
    balancer_ = std::make_unique<AdmissionBalancer>(
        model->router(), static_cast<int>(model->config().num_layers), options.balance,
        [this] { return WorkerLoads(); }, observer_);
  }
}

std::vector<WorkerLoad> GenerationPipeline::WorkerLoads() const {
  const std::vector<WorkerState> states = workers_->Snapshot();
  const std::vector<double> busy =
      options_.worker_busy ? options_.worker_busy() : std::vector<double>();
  std::vector<WorkerLoad> out(states.size());
  for (size_t i = 0; i < states.size(); ++i) {
    out[i].layers.assign(states[i].info.layers().begin(), states[i].info.layers().end());
    out[i].usable = states[i].usable();
    out[i].queued = states[i].active_requests;
    if (i < busy.size()) out[i].busy_fraction = busy[i];
  }
  return out;
}

GenerationPipeline::~GenerationPipeline() { scheduler_.reset(); }

int GenerationPipeline::running_requests() const { return scheduler_->running(); }
int GenerationPipeline::waiting_requests() const { return scheduler_->waiting(); }

absl::StatusOr<GenerationResult> GenerationPipeline::Generate(const GenerationRequest& request,
                                                              const GenerationSink& sink,
                                                              CancellationHandle* cancel) {
  Run run;
  run.mode = ModeLabel(request.mode);
  run.arrival = request.arrival == absl::InfinitePast() ? absl::Now() : request.arrival;
  run.deadline = std::min(request.deadline, run.arrival + options_.max_request_time);
  // An id that Validate will refuse is not repeated in the log line or the reply.
  run.result.request_id = request.request_id.empty() || !ValidateRequestId(request.request_id).ok()
                              ? absl::StrCat("req-", request_counter_.fetch_add(1) + 1)
                              : request.request_id;
  CancellationHandle own_cancel;
  active_requests_.fetch_add(1);
  observer_->OnRequestStart(run.mode);
  const absl::Status status =
      RunStages(run, request, sink, cancel != nullptr ? *cancel : own_cancel);
  active_requests_.fetch_sub(1);
  requests_total_.fetch_add(1);

  GenerationUsage& usage = run.result.usage;
  usage.total = absl::Now() - run.arrival;
  usage.prompt_tokens = static_cast<int64_t>(run.result.prompt_ids.size());
  usage.generated_tokens = run.generated;
  observer_->OnRequestDone(run.mode, status.code(), usage.prompt_tokens, usage.generated_tokens,
                           Seconds(usage.total),
                           run.generated > 0 ? Seconds(usage.time_to_first_token) : -1.0);
  LogLine(kLog,
          absl::StrFormat("request '%s': %d prompt + %d generated tokens in %s, %s%s%s",
                          run.result.request_id, usage.prompt_tokens, usage.generated_tokens,
                          absl::FormatDuration(absl::Trunc(usage.total, absl::Microseconds(100))),
                          status.ok() ? run.result.finish_reason : status.ToString(),
                          run.result.plan.empty() ? "" : ", plan ", run.result.plan));
  if (!status.ok()) return status;
  return std::move(run.result);
}

absl::Status GenerationPipeline::RunStages(Run& run, const GenerationRequest& request,
                                           const GenerationSink& sink, CancellationHandle& cancel) {
  // Validate and tokenize.
  RETURN_IF_ERROR(Validate(request));
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, Tokenize(request));
  if (ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  run.result.prompt_ids = ids;
  run.resume_ids = request.resume_ids;
  const int64_t prompt_tokens = static_cast<int64_t>(ids.size());
  const model::SamplingParams& params = request.sampling;
  const int64_t context = model_->config().max_position_embeddings;
  if (params.max_new_tokens > context - prompt_tokens) {  // No sum that could overflow.
    return absl::OutOfRangeError(absl::StrCat(
        "prompt (", prompt_tokens, " tokens) + max_new_tokens (", params.max_new_tokens,
        ") exceeds the model's context of ", context, " tokens"));
  }

  // Choose blocks: which layers run, every layer (exact) or the chosen blocks' (sparse).
  const int num_layers = static_cast<int>(model_->config().num_layers);
  const bool sparse = request.mode == GenerationMode::kSparse;
  std::vector<std::vector<int>> layer_sets;
  const BlockLayout series = model_->block_layout();
  std::vector<int> series_blocks;  // The blocks of the metric series this request runs.
  if (sparse) {
    ASSIGN_OR_RETURN(ChosenBlocks chosen, ChooseBlocks(request, ids));
    ASSIGN_OR_RETURN(BlockLayout layout, BlockLayout::Create(num_layers, chosen.num_blocks));
    for (int b : chosen.blocks) layer_sets.push_back(layout.Layers(b));
    if (chosen.num_blocks == series.num_blocks) {
      series_blocks = chosen.blocks;
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
    run.result.blocks = std::move(chosen);
  } else {
    std::vector<int> all(num_layers);
    for (int l = 0; l < num_layers; ++l) all[l] = l;
    layer_sets.push_back(std::move(all));
    for (int b = 0; b < series.num_blocks; ++b) series_blocks.push_back(b);
  }
  const bool by_router = run.result.blocks.has_value() && run.result.blocks->by_router;
  observer_->OnBlocksChosen(
      run.mode, series_blocks,
      by_router && balancer_ != nullptr
          ? balancer_->LoadTolls(static_cast<int>(run.result.blocks->blocks.size()))
          : std::vector<double>());

  // Plan workers.
  absl::StatusOr<std::vector<std::vector<Hop>>> plans = workers_->AcquirePlans(layer_sets);
  if (!plans.ok()) {
    return absl::UnavailableError(
        absl::StrCat("coordinator is not serving: ",
                     sparse ? plans.status().message() : workers_->Coverage().message()));
  }

  // Execute, then release the workers.
  ExecutionPlan plan;
  plan.parallel = sparse && request.combine == CombineMode::kParallel;
  for (size_t i = 0; i < plans->size(); ++i) {
    plan.segments.push_back(Segment{(*plans)[i], sparse ? run.result.blocks->weights[i] : 1.0f});
  }
  if (sparse && options_.fuse_hops) plan = FuseSequentialHops(std::move(plan));
  absl::StatusOr<model::GenerateResult> out =
      Execute(run, std::move(plan), series_blocks, params, sink, cancel);
  workers_->Release(*plans);

  // A client's deadline reaches us as a cancellation too; name it for what it is.
  const bool cancelled = cancel.cancelled() || run.stopped_by_sink;
  if (run.deadline_hit || ((cancelled || !out.ok()) && absl::Now() >= run.deadline)) {
    return absl::DeadlineExceededError(
        absl::StrCat("the request's deadline passed after ", run.generated, " tokens"));
  }
  if (cancelled) return absl::CancelledError("the client cancelled the request");
  if (!out.ok()) return out.status();
  run.result.ids = std::move(out->ids);
  run.result.text = std::move(out->text);
  run.result.finish_reason = std::move(out->finish_reason);
  return absl::OkStatus();
}

int64_t DefaultMaxPromptBytes(int64_t context) {
  return std::max<int64_t>(int64_t{64} << 10, 32 * context);
}

absl::Status GenerationPipeline::Validate(const GenerationRequest& r) const {
  if (r.mode != GenerationMode::kExact && r.mode != GenerationMode::kSparse) {
    return absl::InvalidArgumentError(absl::StrCat("unknown mode ", static_cast<int>(r.mode)));
  }
  if (r.combine != CombineMode::kSequential && r.combine != CombineMode::kParallel) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown combine ", static_cast<int>(r.combine)));
  }
  if (r.top_k_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k_blocks ", r.top_k_blocks, " is negative"));
  }
  RETURN_IF_ERROR(r.sampling.Validate());
  RETURN_IF_ERROR(ValidateRequestId(r.request_id));
  // The limits that need no tokenizing come first: nothing expensive runs on a request refused.
  const int64_t context = model_->config().max_position_embeddings;
  if (r.sampling.max_new_tokens > context) {
    return absl::OutOfRangeError(absl::StrCat("max_new_tokens (", r.sampling.max_new_tokens,
                                              ") exceeds the model's context of ", context,
                                              " tokens"));
  }
  if (r.prompt.empty() && r.prompt_ids.empty()) {
    return absl::InvalidArgumentError("the prompt is empty: give prompt or prompt_ids");
  }
  const int64_t max_prompt_bytes =
      options_.max_prompt_bytes > 0 ? options_.max_prompt_bytes : DefaultMaxPromptBytes(context);
  if (static_cast<int64_t>(r.prompt.size()) > max_prompt_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", r.prompt.size(),
                                                   " bytes, more than this coordinator takes (",
                                                   max_prompt_bytes, ", --max-prompt-bytes)"));
  }
  if (static_cast<int64_t>(r.prompt_ids.size()) > context) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", r.prompt_ids.size(),
                                              " ids, more than the model's context of ", context));
  }
  if (!r.prompt_ids.empty()) {
    if (!r.prompt.empty()) {
      return absl::InvalidArgumentError("give prompt or prompt_ids, not both");
    }
    const int64_t vocab = model_->config().vocab_size;
    for (int64_t id : r.prompt_ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt id ", id, " is outside the vocabulary of ", vocab));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> GenerationPipeline::Tokenize(
    const GenerationRequest& r) const {
  if (!r.prompt_ids.empty()) return r.prompt_ids;
  if (model_->tokenizer() == nullptr) {
    return absl::InvalidArgumentError(
        "this model has no tokenizer.json: send prompt_ids instead of a prompt");
  }
  return model_->tokenizer()->Encode(r.prompt, r.add_special_tokens);
}

absl::StatusOr<ChosenBlocks> GenerationPipeline::ChooseBlocks(const GenerationRequest& request,
                                                              const std::vector<int64_t>& ids) {
  ChosenBlocks choice;
  const int num_layers = static_cast<int>(model_->config().num_layers);
  if (!request.blocks.empty()) {
    choice.num_blocks = request.num_blocks;
    if (choice.num_blocks < 1 || choice.num_blocks > num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_blocks ", choice.num_blocks, " is not in 1..", num_layers));
    }
    if (!request.block_weights.empty() && request.block_weights.size() != request.blocks.size()) {
      return absl::InvalidArgumentError(absl::StrCat(request.blocks.size(), " blocks but ",
                                                     request.block_weights.size(), " weights"));
    }
    std::vector<std::pair<int, float>> chosen;
    for (size_t i = 0; i < request.blocks.size(); ++i) {
      const int b = request.blocks[i];
      const float w = !request.block_weights.empty() ? request.block_weights[i] : 1.0f;
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
  if (request.top_k_blocks < 1 || request.top_k_blocks > choice.num_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k_blocks ", request.top_k_blocks, " is not in 1..", choice.num_blocks));
  }
  // Toll-free unless --balance: the choice `swarm eval` measures and Predict shows.
  router::Prediction p;
  if (balancer_ != nullptr) {
    ASSIGN_OR_RETURN(p, balancer_->Route(ids, request.top_k_blocks));
  } else {
    ASSIGN_OR_RETURN(p, router->Predict(ids, request.top_k_blocks));
  }
  choice.blocks = p.blocks;
  choice.weights = p.weights;
  choice.weights.resize(choice.blocks.size(), 1.0f);
  choice.by_router = true;
  return choice;
}

absl::StatusOr<model::GenerateResult> GenerationPipeline::Execute(
    Run& run, ExecutionPlan plan, const std::vector<int>& series_blocks,
    const model::SamplingParams& params, const GenerationSink& sink, CancellationHandle& cancel) {
  ScheduledRequest request;
  request.request_id = run.result.request_id;
  request.prompt_ids = run.result.prompt_ids;
  request.resume_ids = run.resume_ids;
  request.params = params;
  request.series_blocks = series_blocks;
  request.deadline = run.deadline;
  // The router has chosen: workers with a memory budget can load the blocks meanwhile.
  request.prefetch = run.result.blocks.has_value();
  run.result.plan = DescribePlan(*workers_, plan);
  request.plan = std::move(plan);
  auto on_start = [&] {
    if (sink.on_start) {
      sink.on_start(
          GenerationStart{run.result.request_id, run.result.prompt_ids, run.result.blocks});
    }
  };
  auto on_token = [&](const model::GeneratedToken& token) {
    const absl::Time now = absl::Now();
    if (token.id >= 0) {
      ++run.generated;
      if (run.generated == 1) {
        run.result.usage.time_to_first_token = now - run.arrival;
      } else {
        observer_->OnInterToken(run.mode, Seconds(now - run.last_token));
      }
      run.last_token = now;
    }
    if (sink.on_token && !sink.on_token(token)) run.stopped_by_sink = true;
    if (now > run.deadline) run.deadline_hit = true;
    return !run.stopped_by_sink && !run.deadline_hit && !cancel.cancelled();
  };
  return scheduler_->Run(std::move(request), on_start, on_token, cancel);
}

void GenerationPipeline::Refuse(GenerationMode mode, const absl::Status& status) const {
  observer_->OnRequestRefused(ModeLabel(mode), status.code());
}

absl::StatusOr<BlockPrediction> GenerationPipeline::Predict(const PredictRequest& request) const {
  router::Router* router = model_->router();
  if (router == nullptr) {
    return absl::FailedPreconditionError(
        "Predict needs a router file: start swarm-coordinator with --router FILE");
  }
  BlockPrediction out;
  out.prompt_ids = request.prompt_ids;
  if (out.prompt_ids.empty()) {
    if (model_->tokenizer() == nullptr) {
      return absl::InvalidArgumentError("this model has no tokenizer.json: send prompt_ids");
    }
    ASSIGN_OR_RETURN(out.prompt_ids, model_->tokenizer()->Encode(request.prompt, true));
  }
  if (out.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int n = router->num_blocks();
  if (request.top_k_blocks < 1 || request.top_k_blocks > n) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k_blocks ", request.top_k_blocks, " is not in 1..", n));
  }
  ASSIGN_OR_RETURN(router::Prediction free, router->Predict(out.prompt_ids, request.top_k_blocks));
  out.toll_free_blocks = free.blocks;
  out.toll_free_expected_kl = free.expected_kl;
  router::Prediction p = free;
  if (balancer_ != nullptr) {
    out.balance = true;
    router::PredictOptions po;
    po.extra_costs = balancer_->LoadTolls(request.top_k_blocks);
    ASSIGN_OR_RETURN(p, router->Predict(out.prompt_ids, request.top_k_blocks, po));
  }
  ASSIGN_OR_RETURN(BlockLayout layout,
                   BlockLayout::Create(static_cast<int>(model_->config().num_layers), n));
  out.choice.num_blocks = n;
  out.choice.by_router = true;
  for (size_t i = 0; i < p.blocks.size(); ++i) {
    out.choice.blocks.push_back(p.blocks[i]);
    out.choice.weights.push_back(i < p.weights.size() ? p.weights[i] : 1.0f);
    out.layers.emplace_back(layout.begin(p.blocks[i]), layout.end(p.blocks[i]));
  }
  out.expected_kl = p.expected_kl;
  return out;
}

}  // namespace swarm::coordinator
