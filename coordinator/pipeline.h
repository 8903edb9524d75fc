// The coordinator's generation pipeline, free of any transport. One request, in plain C++ types,
// goes through
//
//   validate → tokenize → choose blocks → plan workers → execute → release
//
// (choose blocks: sparse mode only, the router's Prediction for the prompt or the request's
// explicit plan; plan workers: WorkerSet::AcquirePlans; execute: the pipeline's Scheduler
// (scheduler.h), which runs every admitted request's steps in micro-batches across the workers
// with model::SequenceDecoder, the project's one token loop), streaming tokens to a sink. The
// pipeline also owns what every request shares: the scheduler, the request counters, the metrics
// hooks (CoordinatorObserver), the request log line and the pool that fans one stage's hops out to
// their workers. The gRPC service (coordinator_service.h) translates v1::GenerateRequest into a
// GenerationRequest and the sink's calls into the response stream; an HTTP API can call the same
// class.
//
// Threading: Generate blocks its caller until the request ends (callers that must not block, such
// as gRPC handlers, call it from a pool of their own); any number of Generate calls may run at
// once, and the scheduler batches their steps. The sink is called on Generate's thread (tokens
// reach it through a per-request queue, so a slow sink never stalls the batch). Predict and the
// accessors are thread-safe and never block on a worker. A CancellationHandle may be cancelled
// from any thread.
#ifndef SWARM_COORDINATOR_PIPELINE_H_
#define SWARM_COORDINATOR_PIPELINE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/admission_balance.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/coordinator_observer.h"
#include "coordinator/failover_options.h"
#include "model/generate.h"

namespace swarm {
class ThreadPool;
}

namespace swarm::coordinator {

class WorkerSet;
class Scheduler;
struct ExecutionPlan;

// Which layers a request runs. The values are the wire's (v1::Mode): an adapter passes an
// unknown wire value through as is, and validation names it ("unknown mode 7").
enum class GenerationMode : int { kExact = 1, kSparse = 2 };
// How the blocks of a sparse request combine (values as v1::Combine, unknown ones likewise).
enum class CombineMode : int { kSequential = 1, kParallel = 2 };

struct GenerationRequest {
  // The prompt: token ids, or else text for the tokenizer (not both).
  std::vector<int64_t> prompt_ids;
  std::string prompt;
  bool add_special_tokens = true;  // For `prompt` (BOS etc.).
  model::SamplingParams sampling;  // Validated by the pipeline.
  GenerationMode mode = GenerationMode::kExact;
  // Sparse mode: the router's top_k_blocks best blocks, unless `blocks` is an explicit plan: those
  // blocks of a num_blocks-way split, with `block_weights` (empty: 1 each; else one per block).
  int top_k_blocks = 0;
  CombineMode combine = CombineMode::kSequential;
  std::vector<int> blocks;
  std::vector<float> block_weights;
  int num_blocks = 0;
  std::string request_id;  // "" = the pipeline names it "req-N".
  // A resumed stream (GenerateRequest.resume_ids): the ids another coordinator already generated
  // and streamed; only what follows them is generated (model::SequenceDecoder::Create).
  std::vector<int64_t> resume_ids;
  // When the request arrived: its timings count from here, and its deadline is capped at
  // arrival + PipelineOptions::max_request_time. InfinitePast = when Generate is called.
  absl::Time arrival = absl::InfinitePast();
  absl::Time deadline = absl::InfiniteFuture();  // The client's deadline.
};

// The blocks a sparse request runs, of a num_blocks-way split, with their weights: what the
// router's Prediction (router/router.h) or the request's explicit plan says, as the request
// runs it.
struct ChosenBlocks {
  int num_blocks = 0;
  std::vector<int> blocks;     // Sorted, unique.
  std::vector<float> weights;  // One per block: the gate (sequential) or the weight (parallel).
  bool by_router = false;      // The router chose them (not an explicit plan).
};

// What a request's first streamed message says, known once its workers are planned and before
// its first token.
struct GenerationStart {
  std::string request_id;
  std::vector<int64_t> prompt_ids;
  std::optional<ChosenBlocks> blocks;  // Sparse mode only.
};

struct GenerationUsage {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  absl::Duration time_to_first_token;  // From arrival; zero when no token was generated.
  absl::Duration total;                // From arrival to the end of generation.
};

struct GenerationResult {
  std::string request_id;
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> ids;   // Generated ids only.
  std::string text;           // Their text (empty when the model has no tokenizer).
  std::string finish_reason;  // "eos", "length" or "context".
  GenerationUsage usage;
  // The workers and layers each step went through, as DescribePlan (scheduler.h) gives it:
  // "127.0.0.1:7001[0-2] -> 127.0.0.1:7002[3-4]".
  std::string plan;
  std::optional<ChosenBlocks> blocks;  // Sparse mode only.
};

// Where one request's output goes. Both are called on Generate's thread; either may be empty.
struct GenerationSink {
  // Once, after the workers are planned and before the first token.
  std::function<void(const GenerationStart&)> on_start;
  // Each token as it is decoded (id -1: text only). Return false to stop the request: it then
  // ends CANCELLED (DEADLINE_EXCEEDED once its deadline passed).
  std::function<bool(const model::GeneratedToken&)> on_token;
};

// Cancels one request from any thread: the request leaves the batch at once (the calls of its own
// in flight are aborted), every worker session of the request is closed and Generate returns
// CANCELLED (DEADLINE_EXCEEDED once the deadline passed). Cancelling before Generate starts or
// after it returned is allowed. Thread-safe; must outlive the Generate call it is given to.
class CancellationHandle {
 public:
  void Cancel();
  bool cancelled() const;
  // Used by the pipeline: `on_cancel` runs on Cancel() (at once when already cancelled), under
  // the handle's lock, until it is replaced; SetOnCancel(nullptr) returns only once no call of it
  // is running, and none starts after.
  void SetOnCancel(std::function<void()> on_cancel);

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_cancel_ ABSL_GUARDED_BY(mu_);
};

// Predict's question: the router's blocks for a prompt, without running anything.
struct PredictRequest {
  std::vector<int64_t> prompt_ids;  // Or else `prompt`, tokenized with special tokens.
  std::string prompt;
  int top_k_blocks = 0;  // 1..N.
};

struct BlockPrediction {
  std::vector<int64_t> prompt_ids;
  // What a sparse request of this prompt would run now (of the router's N-way split): with
  // --balance the router's choice under the load tolls of now (as a lone request of its window),
  // otherwise the toll-free choice.
  ChosenBlocks choice;
  std::vector<std::pair<int, int>> layers;  // [begin, end) of each chosen block.
  double expected_kl = 0;  // The router's estimate of the choice's damage (nats per token).
  bool balance = false;    // The coordinator balances load (--balance).
  // The router's choice without any toll, and its estimate (equal to choice without --balance).
  std::vector<int> toll_free_blocks;
  double toll_free_expected_kl = 0;
};

struct PipelineOptions {
  // Cap on a request's deadline (a request without one gets this one).
  absl::Duration max_request_time = absl::Minutes(10);
  absl::Duration step_timeout = absl::Seconds(60);    // One Forward.
  absl::Duration control_timeout = absl::Seconds(5);  // Open/CloseSession.
  FailoverOptions failover;                           // The scheduler's (scheduler.h).
  CoordinatorObserver* observer = nullptr;            // Not owned; null = no metrics.
  // The pipeline's pool for the hops of one stage on different workers (parallel combine, and
  // requests planned through different workers): a micro-batch runs its first hop on its own
  // thread and hands the others to this pool, taking back any the pool has not started (so a
  // full pool slows a step down, never blocks it). 0 threads = one hop after the other.
  int hop_threads = 16;
  int max_queued_hops = 64;
  // The scheduler (scheduler.h): rows and sequences per micro-batch (max_batch_sequences also
  // caps the requests running at once), requests waiting for admission (beyond:
  // RESOURCE_EXHAUSTED), micro-batches in flight (0 = DefaultMicroBatches in scheduler.h).
  model::BatchLimits limits;
  int max_waiting_requests = 64;
  int max_micro_batches = 0;
  // A prompt of more bytes is refused before it is tokenized (--max-prompt-bytes). 0 = 32 bytes
  // per position of the model's context, at least 64 KiB (DefaultMaxPromptBytes).
  int64_t max_prompt_bytes = 0;
  // Load balancing of router-chosen sparse requests (admission_balance.h); off by default.
  BalanceOptions balance;
  // Each worker's busy fraction (WorkerSet index) over the scheduler's window, for the balance
  // (the server passes SchedulerStats'); null = none measured.
  std::function<std::vector<double>()> worker_busy;
  // Run consecutive ungated blocks on one worker as one hop (hop_fusion.h).
  bool fuse_hops = true;
};

// PipelineOptions::max_prompt_bytes when it is 0, for a model of `context` positions.
int64_t DefaultMaxPromptBytes(int64_t context);

class GenerationPipeline {
 public:
  // `model` and `workers` are not owned and must outlive the pipeline. Starts the hop pool.
  GenerationPipeline(const CoordinatorModel* model, WorkerSet* workers,
                     const PipelineOptions& options);
  ~GenerationPipeline();  // Joins the scheduler and the hop pool; no Generate may be running.
  GenerationPipeline(const GenerationPipeline&) = delete;
  GenerationPipeline& operator=(const GenerationPipeline&) = delete;

  const CoordinatorModel& model() const { return *model_; }

  // Runs one request to its end (see the file comment for the stages), streaming to `sink`;
  // `cancel` (may be null) stops it from another thread. Every worker session it opened is
  // closed, and the workers planned for it released, before it returns. Errors:
  // INVALID_ARGUMENT (unknown mode or combine, sampling parameters, a bad prompt or plan),
  // OUT_OF_RANGE (prompt + max_new_tokens beyond the context), FAILED_PRECONDITION (sparse mode
  // without a router or an explicit plan), UNAVAILABLE (the workers do not cover the layers: the
  // message names them), DEADLINE_EXCEEDED, CANCELLED, and the workers' errors.
  absl::StatusOr<GenerationResult> Generate(const GenerationRequest& request,
                                            const GenerationSink& sink,
                                            CancellationHandle* cancel = nullptr);

  // The router's choice for a prompt (no block runs; no toll changes). FAILED_PRECONDITION
  // without a router file; INVALID_ARGUMENT for an empty prompt or top_k_blocks outside 1..N.
  absl::StatusOr<BlockPrediction> Predict(const PredictRequest& request) const;

  // Reports a request refused before Generate (its caller's queue full, shutting down) to the
  // metrics hooks, so that every request a client sent is counted. Thread-safe.
  void Refuse(GenerationMode mode, const absl::Status& status) const;

  int active_requests() const { return active_requests_.load(); }  // Generating now.
  int running_requests() const;  // Admitted into the scheduler's batch.
  int waiting_requests() const;  // Waiting in the scheduler's queue.
  uint64_t requests_total() const { return requests_total_.load(); }  // Ended since start.

 private:
  struct Run;  // One request's state (pipeline.cc).

  // Every stage of one request; its outcome.
  absl::Status RunStages(Run& run, const GenerationRequest& request, const GenerationSink& sink,
                         CancellationHandle& cancel);
  // The stages.
  absl::Status Validate(const GenerationRequest& request) const;
  absl::StatusOr<std::vector<int64_t>> Tokenize(const GenerationRequest& request) const;
  absl::StatusOr<ChosenBlocks> ChooseBlocks(const GenerationRequest& request,
                                            const std::vector<int64_t>& ids);
  // The workers' load for the balancer.
  std::vector<WorkerLoad> WorkerLoads() const;
  // Runs the request through the scheduler. `series_blocks` go to OnStep.
  absl::StatusOr<model::GenerateResult> Execute(Run& run, ExecutionPlan plan,
                                                const std::vector<int>& series_blocks,
                                                const model::SamplingParams& params,
                                                const GenerationSink& sink,
                                                CancellationHandle& cancel);

  const CoordinatorModel* const model_;
  WorkerSet* const workers_;
  const PipelineOptions options_;
  CoordinatorObserver default_observer_;
  CoordinatorObserver* const observer_;
  std::unique_ptr<ThreadPool> hop_pool_;         // Null with hop_threads 0.
  std::unique_ptr<Scheduler> scheduler_;         // Uses hop_pool_: destroyed first.
  std::unique_ptr<AdmissionBalancer> balancer_;  // With options.balance.enabled and a router.

  std::atomic<int> active_requests_{0};
  std::atomic<uint64_t> requests_total_{0};
  std::atomic<uint64_t> request_counter_{0};
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_PIPELINE_H_
