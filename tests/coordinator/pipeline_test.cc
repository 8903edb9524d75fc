// GenerationPipeline without gRPC on the coordinator side (the workers are in-process servers):
// validation errors keep their codes and messages, a greedy exact request returns the golden ids
// and streams them through the sink, the sink and the cancellation handle stop a request and free
// its sessions, deadlines, the metric blocks a request reports, the router's choice, Predict,
// parallel combine over the hop pool (and without one, or with one that refuses every segment).
#include "coordinator/pipeline.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/worker_set.h"
#include "router/sparse.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/router/router_test_util.h"

namespace swarm::coordinator {
namespace {

using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;

// Records what the pipeline reports. Thread-safe (parallel blocks report from several threads).
class RecordingObserver : public CoordinatorObserver {
 public:
  struct Done {
    std::string mode;
    absl::StatusCode code;
    int64_t prompt_tokens;
    int64_t generated_tokens;
  };

  void OnRequestDone(absl::string_view mode, absl::StatusCode code, int64_t prompt_tokens,
                     int64_t generated_tokens, double /*seconds*/,
                     double /*ttft_seconds*/) override {
    absl::MutexLock lock(&mu_);
    done_.push_back(Done{std::string(mode), code, prompt_tokens, generated_tokens});
  }
  void OnWorkerStep(absl::string_view /*worker*/, double /*seconds*/,
                    absl::StatusCode code) override {
    absl::MutexLock lock(&mu_);
    if (code == absl::StatusCode::kOk) ++worker_steps_;
  }
  void OnBlocksChosen(absl::string_view /*mode*/, const std::vector<int>& blocks,
                      const std::vector<double>& router_tolls) override {
    absl::MutexLock lock(&mu_);
    chosen_.push_back(blocks);
    tolls_ = router_tolls;
  }
  void OnStep(const std::vector<int>& blocks) override {
    absl::MutexLock lock(&mu_);
    steps_.push_back(blocks);
  }

  std::vector<Done> done() const {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  std::vector<std::vector<int>> chosen() const {
    absl::MutexLock lock(&mu_);
    return chosen_;
  }
  std::vector<std::vector<int>> steps() const {
    absl::MutexLock lock(&mu_);
    return steps_;
  }
  int worker_steps() const {
    absl::MutexLock lock(&mu_);
    return worker_steps_;
  }
  std::vector<double> tolls() const {
    absl::MutexLock lock(&mu_);
    return tolls_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<Done> done_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<int>> chosen_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<int>> steps_ ABSL_GUARDED_BY(mu_);
  std::vector<double> tolls_ ABSL_GUARDED_BY(mu_);
  int worker_steps_ ABSL_GUARDED_BY(mu_) = 0;
};

// Two in-process workers (layers 0-2 and 3-4 of stories260K) and a pipeline over them, with no
// gRPC server in front.
class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override { Build(/*router_path=*/""); }

  void Build(const std::string& router_path, bool refresh = true, PipelineOptions po = {}) {
    pipeline_.reset();
    workers_.clear();
    workers_.push_back(testing::StartWorker(ModelDir("stories260K"), {0, 1, 2}));
    workers_.push_back(testing::StartWorker(ModelDir("stories260K"), {3, 4}));
    ASSERT_NE(workers_[0], nullptr);
    ASSERT_NE(workers_[1], nullptr);
    CoordinatorModelOptions mo;
    mo.model_dir = ModelDir("stories260K");
    mo.router_path = router_path;
    auto model = CoordinatorModel::Load(mo);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const model::ModelConfig& c = model_->config();
    worker_set_ = std::make_unique<WorkerSet>(
        std::vector<std::string>{workers_[0]->address(), workers_[1]->address()}, c.Fingerprint(),
        static_cast<int>(c.num_layers));
    if (refresh) {
      worker_set_->Refresh(absl::Seconds(5));
      ASSERT_TRUE(worker_set_->Coverage().ok()) << worker_set_->Coverage();
    }
    po.observer = &observer_;
    pipeline_ = std::make_unique<GenerationPipeline>(model_.get(), worker_set_.get(), po);
  }

  static GenerationRequest Greedy(int64_t max_new_tokens) {
    GenerationRequest r;
    r.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
    r.sampling.max_new_tokens = max_new_tokens;
    r.sampling.stop_at_eos = false;
    return r;
  }

  // Sessions the workers report now, summed.
  int Sessions() {
    worker_set_->Refresh(absl::Seconds(5));
    int n = 0;
    for (const WorkerState& w : worker_set_->Snapshot()) n += w.info.sessions();
    return n;
  }

  RecordingObserver observer_;
  std::vector<std::unique_ptr<worker::WorkerServer>> workers_;
  std::unique_ptr<CoordinatorModel> model_;
  std::unique_ptr<WorkerSet> worker_set_;
  std::unique_ptr<GenerationPipeline> pipeline_;
};

TEST_F(PipelineTest, AGreedyExactRequestReturnsTheGoldenIdsThroughTheSink) {
  const std::vector<int64_t> want = GoldenIds("stories260K", "prompt.greedy");
  GenerationRequest request = Greedy(static_cast<int64_t>(want.size()));
  int starts = 0;
  std::vector<int64_t> streamed;
  GenerationSink sink;
  sink.on_start = [&](const GenerationStart& start) {
    ++starts;
    EXPECT_TRUE(streamed.empty()) << "on_start after a token";
    EXPECT_EQ(start.request_id, "req-1");
    EXPECT_EQ(start.prompt_ids, request.prompt_ids);
    EXPECT_FALSE(start.blocks.has_value());
  };
  sink.on_token = [&](const model::GeneratedToken& t) {
    if (t.id >= 0) streamed.push_back(t.id);
    return true;
  };
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(request, sink);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->ids, want);
  EXPECT_EQ(streamed, want);
  EXPECT_EQ(starts, 1);
  EXPECT_EQ(result->finish_reason, "length");
  EXPECT_EQ(result->request_id, "req-1");
  EXPECT_EQ(result->prompt_ids, request.prompt_ids);
  EXPECT_EQ(result->usage.prompt_tokens, static_cast<int64_t>(request.prompt_ids.size()));
  EXPECT_EQ(result->usage.generated_tokens, static_cast<int64_t>(want.size()));
  EXPECT_GT(result->usage.time_to_first_token, absl::ZeroDuration());
  EXPECT_GE(result->usage.total, result->usage.time_to_first_token);
  EXPECT_EQ(result->plan, workers_[0]->address() + "[0-2] -> " + workers_[1]->address() + "[3-4]");
  EXPECT_FALSE(result->blocks.has_value());

  // Metrics: every block of the layout (one per layer without a router) on every step, two
  // worker hops per step.
  const std::vector<int> all = {0, 1, 2, 3, 4};
  EXPECT_EQ(observer_.chosen(), std::vector<std::vector<int>>{all});
  const auto steps = observer_.steps();
  ASSERT_FALSE(steps.empty());
  for (const auto& s : steps) EXPECT_EQ(s, all);
  EXPECT_EQ(observer_.worker_steps(), 2 * static_cast<int>(steps.size()));
  ASSERT_EQ(observer_.done().size(), 1u);
  EXPECT_EQ(observer_.done()[0].mode, "exact");
  EXPECT_EQ(observer_.done()[0].code, absl::StatusCode::kOk);
  EXPECT_EQ(pipeline_->requests_total(), 1u);
  EXPECT_EQ(pipeline_->active_requests(), 0);
  EXPECT_EQ(Sessions(), 0);
}

TEST_F(PipelineTest, ValidationErrorsKeepTheirCodesAndMessages) {
  struct Case {
    std::string name;
    std::function<void(GenerationRequest&)> change;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"unknown mode", [](GenerationRequest& r) { r.mode = static_cast<GenerationMode>(7); },
       absl::StatusCode::kInvalidArgument, "unknown mode 7"},
      {"unknown combine", [](GenerationRequest& r) { r.combine = static_cast<CombineMode>(9); },
       absl::StatusCode::kInvalidArgument, "unknown combine 9"},
      {"negative top_k_blocks", [](GenerationRequest& r) { r.top_k_blocks = -1; },
       absl::StatusCode::kInvalidArgument, "top_k_blocks -1 is negative"},
      {"negative temperature", [](GenerationRequest& r) { r.sampling.temperature = -1; },
       absl::StatusCode::kInvalidArgument, "temperature"},
      {"prompt and ids", [](GenerationRequest& r) { r.prompt = "Once"; },
       absl::StatusCode::kInvalidArgument, "give prompt or prompt_ids, not both"},
      {"id outside the vocabulary",
       [](GenerationRequest& r) {
         r.prompt_ids = {1, 512};
       },
       absl::StatusCode::kInvalidArgument, "prompt id 512 is outside the vocabulary of 512"},
      {"empty prompt",
       [](GenerationRequest& r) {
         r.prompt_ids.clear();
         r.add_special_tokens = false;
       },
       absl::StatusCode::kInvalidArgument, "the prompt is empty"},
      // 510 alone fits the context (600 would be refused before tokenizing, hardening_test.cc);
      // with the prompt it does not.
      {"beyond the context", [](GenerationRequest& r) { r.sampling.max_new_tokens = 510; },
       absl::StatusCode::kOutOfRange, "exceeds the model's context of 512 tokens"},
      {"sparse without router or plan",
       [](GenerationRequest& r) {
         r.mode = GenerationMode::kSparse;
         r.top_k_blocks = 2;
       },
       absl::StatusCode::kFailedPrecondition, "sparse mode needs a router file"},
      {"plan of no blocks",
       [](GenerationRequest& r) {
         r.mode = GenerationMode::kSparse;
         r.blocks = {1};
       },
       absl::StatusCode::kInvalidArgument, "num_blocks 0 is not in 1..5"},
      {"repeated block",
       [](GenerationRequest& r) {
         r.mode = GenerationMode::kSparse;
         r.blocks = {1, 1};
         r.num_blocks = 5;
       },
       absl::StatusCode::kInvalidArgument, "block 1 repeated"},
      {"weights for other blocks",
       [](GenerationRequest& r) {
         r.mode = GenerationMode::kSparse;
         r.blocks = {1, 2};
         r.block_weights = {0.5f};
         r.num_blocks = 5;
       },
       absl::StatusCode::kInvalidArgument, "2 blocks but 1 weights"},
  };
  int sink_calls = 0;
  GenerationSink sink;
  sink.on_start = [&](const GenerationStart&) { ++sink_calls; };
  sink.on_token = [&](const model::GeneratedToken&) { return ++sink_calls > 0; };
  for (const Case& c : cases) {
    GenerationRequest r = Greedy(4);
    c.change(r);
    absl::StatusOr<GenerationResult> result = pipeline_->Generate(r, sink);
    EXPECT_EQ(result.status().code(), c.code) << c.name << ": " << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), c.message))
        << c.name << ": " << result.status();
  }
  EXPECT_EQ(sink_calls, 0);
  const auto done = observer_.done();
  ASSERT_EQ(done.size(), cases.size());
  EXPECT_EQ(done[0].mode, "other");  // The unknown mode.
  EXPECT_EQ(done[1].mode, "exact");
  EXPECT_EQ(done[8].mode, "sparse");
  EXPECT_EQ(done[7].prompt_tokens, static_cast<int64_t>(Greedy(1).prompt_ids.size()));
  EXPECT_EQ(pipeline_->requests_total(), cases.size());
  EXPECT_TRUE(observer_.chosen().empty());  // No request got as far as its blocks.
  EXPECT_EQ(Sessions(), 0);
}

TEST_F(PipelineTest, ASinkReturningFalseCancelsTheRequestAndFreesItsSessions) {
  int tokens = 0;
  GenerationSink sink;
  sink.on_token = [&](const model::GeneratedToken& t) { return t.id < 0 || ++tokens < 3; };
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(Greedy(40), sink);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(result.status().message(), "the client cancelled the request");
  EXPECT_EQ(tokens, 3);
  ASSERT_EQ(observer_.done().size(), 1u);
  EXPECT_EQ(observer_.done()[0].code, absl::StatusCode::kCancelled);
  EXPECT_EQ(observer_.done()[0].generated_tokens, 3);
  EXPECT_EQ(Sessions(), 0);
}

TEST_F(PipelineTest, TheCancellationHandleStopsARequestFromAnotherThread) {
  CancellationHandle cancel;
  absl::Notification first_token;
  GenerationSink sink;
  sink.on_token = [&](const model::GeneratedToken& /*t*/) {
    if (!first_token.HasBeenNotified()) first_token.Notify();
    absl::SleepFor(absl::Milliseconds(5));  // Leaves the canceller time to act.
    return true;
  };
  std::thread canceller([&] {
    first_token.WaitForNotification();
    cancel.Cancel();
  });
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(Greedy(400), sink, &cancel);
  canceller.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_LT(observer_.done().at(0).generated_tokens, 400);
  EXPECT_EQ(Sessions(), 0);

  // Cancelled before it starts: no token.
  CancellationHandle early;
  early.Cancel();
  int tokens = 0;
  sink.on_token = [&](const model::GeneratedToken&) { return ++tokens > 0; };
  result = pipeline_->Generate(Greedy(8), sink, &early);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_EQ(tokens, 0);
  EXPECT_EQ(Sessions(), 0);
}

TEST_F(PipelineTest, ADeadlineThatPassesIsDeadlineExceeded) {
  // During generation: the request stops at the next token and closes its sessions.
  GenerationRequest r = Greedy(400);
  r.deadline = absl::Now() + absl::Milliseconds(100);
  GenerationSink sink;
  sink.on_token = [](const model::GeneratedToken&) {
    absl::SleepFor(absl::Milliseconds(5));
    return true;
  };
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(r, sink);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "the request's deadline passed after"))
      << result.status();
  EXPECT_LT(observer_.done().at(0).generated_tokens, 400);
  EXPECT_EQ(Sessions(), 0);

  // Before it started: its first call fails, and the error names the deadline.
  r.deadline = absl::Now();
  result = pipeline_->Generate(r, {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_TRUE(
      absl::StrContains(result.status().message(), "the request's deadline passed after 0 tokens"))
      << result.status();
}

TEST_F(PipelineTest, AnExplicitPlanOfAnotherSplitReportsTheLayoutBlocksItTouches) {
  GenerationRequest r = Greedy(4);
  r.mode = GenerationMode::kSparse;
  r.num_blocks = 2;  // Blocks {0,1,2} {3,4}.
  r.blocks = {1};
  r.block_weights = {0.5f};
  std::optional<ChosenBlocks> started;
  GenerationSink sink;
  sink.on_start = [&](const GenerationStart& s) { started = s.blocks; };
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(r, sink);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(started.has_value());
  EXPECT_EQ(started->num_blocks, 2);
  EXPECT_EQ(started->blocks, std::vector<int>{1});
  EXPECT_EQ(started->weights, std::vector<float>{0.5f});
  EXPECT_FALSE(started->by_router);
  ASSERT_TRUE(result->blocks.has_value());
  EXPECT_EQ(result->blocks->blocks, std::vector<int>{1});
  EXPECT_EQ(result->plan, workers_[1]->address() + "[3-4] x0.5");
  // The series follow one block per layer: the plan's block 1 is layers 3 and 4.
  EXPECT_EQ(observer_.chosen(), (std::vector<std::vector<int>>{{3, 4}}));
  for (const auto& s : observer_.steps()) EXPECT_EQ(s, (std::vector<int>{3, 4}));
  EXPECT_TRUE(observer_.tolls().empty());  // Not the router's choice.
}

TEST_F(PipelineTest, WithoutCoveringWorkersARequestIsUnavailable) {
  Build("", /*refresh=*/false);  // The workers were never asked for Info.
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(Greedy(4), {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(),
                                "coordinator is not serving: layers 0-4 of 5 are not hosted"))
      << result.status();
}

TEST_F(PipelineTest, PredictWithoutARouterIsFailedPrecondition) {
  PredictRequest p;
  p.prompt_ids = {1, 2, 3};
  p.top_k_blocks = 2;
  EXPECT_EQ(pipeline_->Predict(p).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(PipelineTest, TheRoutersChoiceRunsAndMatchesPredict) {
  Build(router::testing::TinyCalibration().path);  // N = 5.
  EXPECT_EQ(model_->block_layout().num_blocks, 5);
  PredictRequest p;
  p.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  p.top_k_blocks = 3;
  absl::StatusOr<BlockPrediction> prediction = pipeline_->Predict(p);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_EQ(prediction->choice.num_blocks, 5);
  ASSERT_EQ(prediction->choice.blocks.size(), 3u);
  ASSERT_EQ(prediction->layers.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(prediction->layers[i].first, prediction->choice.blocks[i]);
    EXPECT_EQ(prediction->layers[i].second, prediction->choice.blocks[i] + 1);
  }
  p.top_k_blocks = 9;
  EXPECT_EQ(pipeline_->Predict(p).status().code(), absl::StatusCode::kInvalidArgument);

  GenerationRequest r = Greedy(6);
  r.mode = GenerationMode::kSparse;
  r.top_k_blocks = 3;
  absl::StatusOr<GenerationResult> result = pipeline_->Generate(r, {});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(result->blocks.has_value());
  EXPECT_TRUE(result->blocks->by_router);
  // No --balance: serving routes toll-free, what Predict shows (and its toll-free choice).
  EXPECT_FALSE(prediction->balance);
  EXPECT_EQ(prediction->toll_free_blocks, prediction->choice.blocks);
  EXPECT_EQ(result->blocks->blocks, prediction->choice.blocks);
  EXPECT_EQ(observer_.chosen(), std::vector<std::vector<int>>{prediction->choice.blocks});
  EXPECT_TRUE(observer_.tolls().empty());  // No load tolls without --balance.
}

TEST_F(PipelineTest, ParallelCombineGivesTheSameIdsWhateverTheHopPool) {
  // The in-process reference: router::SparseExecutor over the same plan.
  const model::Engine& engine = router::testing::Stories();
  auto layout = BlockLayout::Create(5, 5);
  ASSERT_TRUE(layout.ok());
  router::SparsePlan sparse_plan;
  sparse_plan.blocks = {0, 2, 4};
  sparse_plan.weights = {0.5f, 0.3f, 0.7f};
  sparse_plan.combine = router::Combine::kParallel;
  auto local = router::SparseExecutor::Create(&engine.layers(), *layout, sparse_plan);
  ASSERT_TRUE(local.ok()) << local.status();
  const GenerationRequest base = Greedy(12);
  auto want = model::RunGenerationLoop(engine.ends(), **local, engine.tokenizer(), base.prompt_ids,
                                       base.sampling);
  ASSERT_TRUE(want.ok()) << want.status();

  struct Pool {
    std::string name;
    int threads;
    int queued;
  };
  for (const Pool& pool : {Pool{"default pool", 16, 64}, Pool{"no pool", 0, 0},
                           Pool{"a pool that refuses every segment", 1, 0}}) {
    PipelineOptions po;
    po.hop_threads = pool.threads;
    po.max_queued_hops = pool.queued;
    Build("", /*refresh=*/true, po);
    const int steps_before = static_cast<int>(observer_.steps().size());
    const int hops_before = observer_.worker_steps();
    GenerationRequest r = base;
    r.mode = GenerationMode::kSparse;
    r.combine = CombineMode::kParallel;
    r.num_blocks = 5;
    r.blocks = sparse_plan.blocks;
    r.block_weights = sparse_plan.weights;
    absl::StatusOr<GenerationResult> result = pipeline_->Generate(r, {});
    ASSERT_TRUE(result.ok()) << pool.name << ": " << result.status();
    EXPECT_EQ(result->ids, want->ids) << pool.name;
    // One hop per segment and step: blocks 0 and 2 on the first worker, 4 on the second.
    const int steps = static_cast<int>(observer_.steps().size()) - steps_before;
    EXPECT_GT(steps, 0) << pool.name;
    EXPECT_EQ(observer_.worker_steps() - hops_before, 3 * steps) << pool.name;
    EXPECT_EQ(Sessions(), 0) << pool.name;
  }
}

}  // namespace
}  // namespace swarm::coordinator
