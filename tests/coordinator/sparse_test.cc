// Sparse mode through the workers equals the in-process SparseExecutor (router/sparse.h) for the
// same plan: sequential and parallel combine, gates applied on a worker or (for a block spanning
// two workers) by the coordinator; the router's choice with a router file; Predict; bad plans.
#include "router/sparse.h"

#include <gtest/gtest.h>

#include "client/client.h"
#include "common/block_layout.h"
#include "model/generate.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/router/router_test_util.h"

namespace swarm {
namespace {

using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;

const model::Engine& Engine() { return router::testing::Stories(); }

// In-process reference: Generate over a SparseExecutor with the same plan.
std::vector<int64_t> InProcess(const std::vector<int64_t>& prompt, int num_blocks,
                               std::vector<int> blocks, std::vector<float> weights, bool parallel,
                               int64_t max_new_tokens) {
  auto layout = BlockLayout::Create(Engine().config().num_layers, num_blocks);
  router::SparsePlan plan;
  plan.blocks = std::move(blocks);
  plan.weights = std::move(weights);
  plan.combine = parallel ? router::Combine::kParallel : router::Combine::kSequential;
  auto exec = router::SparseExecutor::Create(&Engine().layers(), *layout, plan);
  EXPECT_TRUE(exec.ok()) << exec.status();
  if (!exec.ok()) return {};
  model::SamplingParams params;
  params.max_new_tokens = max_new_tokens;
  params.stop_at_eos = false;
  auto out =
      model::RunGenerationLoop(Engine().ends(), **exec, Engine().tokenizer(), prompt, params);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->ids : std::vector<int64_t>{};
}

struct Case {
  std::string name;
  std::vector<std::vector<int>> splits;  // Worker layer sets.
  int num_blocks;
  std::vector<int> blocks;
  std::vector<float> weights;
  bool parallel;
};

class SparseTest : public ::testing::TestWithParam<Case> {};

TEST_P(SparseTest, EqualsTheInProcessSparseExecutor) {
  const Case& c = GetParam();
  auto cluster = testing::StartCluster("stories260K", c.splits);
  auto client = Client::Connect(cluster.coordinator->address());
  const std::vector<int64_t> prompt = GoldenIds("stories260K", "prompt.input_ids");
  GenerateRequest req;
  req.prompt_ids = prompt;
  req.max_new_tokens = 24;
  req.stop_at_eos = false;
  req.mode = "sparse";
  req.combine = c.parallel ? "parallel" : "sequential";
  req.blocks = c.blocks;
  req.block_weights = c.weights;
  req.num_blocks = c.num_blocks;
  auto got = (*client)->Generate(req);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ids, InProcess(prompt, c.num_blocks, c.blocks, c.weights, c.parallel, 24));
  EXPECT_EQ(got->blocks, c.blocks);
  EXPECT_EQ(got->num_blocks, c.num_blocks);
  // Skipping blocks changes the output: the test can tell sparse from exact.
  if (c.blocks.size() < static_cast<size_t>(c.num_blocks)) {
    EXPECT_NE(got->ids, GoldenIds("stories260K", "prompt.greedy"));
  }
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok());
  for (const WorkerStatus& w : status->workers) EXPECT_EQ(w.sessions, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Plans, SparseTest,
    ::testing::Values(
        Case{"sequential_gated_on_workers", {{0, 1, 2}, {3, 4}}, 5, {0, 2, 4}, {1, 0.5f, 1}, false},
        Case{"parallel", {{0, 1, 2}, {3, 4}}, 5, {0, 2, 4}, {0.5f, 0.3f, 0.7f}, true},
        Case{"gate_across_workers", {{0, 1}, {2, 3, 4}}, 2, {0}, {0.6f}, false},
        Case{"parallel_block_across_workers", {{0, 1}, {2, 3, 4}}, 2, {0, 1}, {0.5f, 0.5f}, true},
        Case{"two_blocks_one_worker", {{0, 1, 2, 3, 4}}, 5, {1, 3}, {}, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(SparseExactTest, EveryBlockWithWeightOneIsTheExactModel) {
  auto cluster = testing::StartCluster("stories260K", {{0, 1, 2}, {3, 4}});
  auto client = Client::Connect(cluster.coordinator->address());
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  req.mode = "sparse";
  req.blocks = {0, 1, 2, 3, 4};
  req.num_blocks = 5;
  auto got = (*client)->Generate(req);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ids, GoldenIds("stories260K", "prompt.greedy"));
}

TEST(SparsePlanTest, BadPlansAreInvalidArgument) {
  auto cluster = testing::StartCluster("stories260K", {{0, 1, 2, 3, 4}});
  auto client = Client::Connect(cluster.coordinator->address());
  GenerateRequest req;
  req.prompt = "Once";
  req.max_new_tokens = 2;
  req.mode = "sparse";
  auto code = [&](std::vector<int> blocks, std::vector<float> weights, int n) {
    req.blocks = std::move(blocks);
    req.block_weights = std::move(weights);
    req.num_blocks = n;
    return (*client)->Generate(req).status().code();
  };
  EXPECT_EQ(code({5}, {}, 5), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({1, 1}, {}, 5), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({1}, {}, 0), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({1}, {}, 6), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({1, 2}, {0.5f}, 5), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({1}, {}, 5), absl::StatusCode::kOk);
}

TEST(SparseRouterTest, TheRoutersChoiceRunsAndPredictShowsIt) {
  const std::string router_file = router::testing::TinyCalibration().path;
  auto worker = testing::StartWorker(ModelDir("stories260K"), {0, 1, 2, 3, 4});
  coordinator::CoordinatorOptions options;
  options.router_path = router_file;
  auto coordinator = testing::StartCoordinator(ModelDir("stories260K"), {worker->address()},
                                               /*wait_serving=*/true, options);
  ASSERT_NE(coordinator, nullptr);
  auto client = Client::Connect(coordinator->address());
  const std::vector<int64_t> prompt = GoldenIds("stories260K", "prompt.input_ids");

  auto prediction = (*client)->Predict("", prompt, 3);
  ASSERT_TRUE(prediction.ok()) << prediction.status();
  EXPECT_EQ(prediction->num_blocks, 5);
  ASSERT_EQ(prediction->blocks.size(), 3u);
  std::vector<int> blocks;
  std::vector<float> weights;
  for (const BlockChoice& b : prediction->blocks) {
    EXPECT_EQ(b.end_layer - b.begin_layer, 1);  // 5 layers in 5 blocks.
    blocks.push_back(b.block);
    weights.push_back(b.weight);
  }
  EXPECT_EQ((*client)->Predict("", prompt, 9).status().code(), absl::StatusCode::kInvalidArgument);

  GenerateRequest req;
  req.prompt_ids = prompt;
  req.max_new_tokens = 16;
  req.stop_at_eos = false;
  req.mode = "sparse";
  req.top_k_blocks = 3;
  auto got = (*client)->Generate(req);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->blocks, blocks);  // Serving routes toll-free (no --balance): the same choice.
  EXPECT_EQ(got->ids, InProcess(prompt, 5, blocks, weights, false, 16));
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->router, router_file);
  req.top_k_blocks = 0;
  EXPECT_EQ((*client)->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace swarm
