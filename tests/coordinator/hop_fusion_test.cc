// Hop fusion (coordinator/hop_fusion.h): which plans merge, and that a fused sparse request
// through real workers gives the tokens of the in-process SparseExecutor and of the unfused path,
// with fewer worker calls.
#include "coordinator/hop_fusion.h"

#include <gtest/gtest.h>

#include <atomic>

#include "client/client.h"
#include "router/sparse.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/router/router_test_util.h"

namespace swarm {
namespace {

using coordinator::ExecutionPlan;
using coordinator::FuseSequentialHops;
using coordinator::Hop;
using coordinator::Segment;
using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;

ExecutionPlan Plan(std::vector<Segment> segments, bool parallel = false) {
  ExecutionPlan p;
  p.segments = std::move(segments);
  p.parallel = parallel;
  return p;
}

// "w0[0,1] w1[3] | w0[4]": segments separated by " | ".
std::string Show(const ExecutionPlan& p) {
  std::string out;
  for (const Segment& s : p.segments) {
    if (!out.empty()) out += " | ";
    std::string seg;
    for (const Hop& h : s.hops) {
      if (!seg.empty()) seg += " ";
      seg += "w" + std::to_string(h.worker) + "[";
      for (size_t i = 0; i < h.layers.size(); ++i) {
        seg += (i ? "," : "") + std::to_string(h.layers[i]);
      }
      seg += "]";
    }
    if (s.weight != 1.0f) seg += " x" + std::to_string(s.weight).substr(0, 3);
    out += seg;
  }
  return out;
}

TEST(HopFusionTest, ConsecutiveUngatedBlocksOnOneWorkerBecomeOneHop) {
  // Blocks 0, 1, 2 on worker 0 and block 4 on worker 1 (k = 4 of 5, block 3 skipped).
  ExecutionPlan p = Plan({Segment{{Hop{0, {0}}}, 1.0f}, Segment{{Hop{0, {1}}}, 1.0f},
                          Segment{{Hop{0, {2}}}, 1.0f}, Segment{{Hop{1, {4}}}, 1.0f}});
  EXPECT_EQ(Show(FuseSequentialHops(p)), "w0[0,1,2] w1[4]");
  // Skipped layers between blocks of one worker: still one hop (the worker runs listed layers).
  p = Plan({Segment{{Hop{0, {0}}}, 1.0f}, Segment{{Hop{0, {2}}}, 1.0f}});
  EXPECT_EQ(Show(FuseSequentialHops(p)), "w0[0,2]");
  // A block spanning two workers joins the next block on the second one.
  p = Plan({Segment{{Hop{0, {0, 1}}, Hop{1, {2}}}, 1.0f}, Segment{{Hop{1, {3}}}, 1.0f}});
  EXPECT_EQ(Show(FuseSequentialHops(p)), "w0[0,1] w1[2,3]");
}

TEST(HopFusionTest, GatesAndParallelCombineKeepTheirSegments) {
  // A gate g != 1 scales its own block's update: its segment stays apart.
  ExecutionPlan p = Plan({Segment{{Hop{0, {0}}}, 1.0f}, Segment{{Hop{0, {1}}}, 0.5f},
                          Segment{{Hop{0, {2}}}, 1.0f}, Segment{{Hop{0, {3}}}, 1.0f}});
  EXPECT_EQ(Show(FuseSequentialHops(p)), "w0[0] | w0[1] x0.5 | w0[2,3]");
  // Parallel: every segment reads the same input; nothing merges.
  p = Plan({Segment{{Hop{0, {0}}}, 1.0f}, Segment{{Hop{0, {1}}}, 1.0f}}, /*parallel=*/true);
  EXPECT_EQ(Show(FuseSequentialHops(p)), "w0[0] | w0[1]");
  // Different workers stay separate hops.
  p = Plan({Segment{{Hop{0, {0}}}, 1.0f}, Segment{{Hop{1, {1}}}, 1.0f}});
  EXPECT_EQ(Show(FuseSequentialHops(p)), "w0[0] w1[1]");
}

// Counts Forward calls to workers.
class StepCounter : public coordinator::CoordinatorObserver {
 public:
  void OnWorkerStep(absl::string_view, double, absl::StatusCode) override { steps_.fetch_add(1); }
  int steps() const { return steps_.load(); }

 private:
  std::atomic<int> steps_{0};
};

struct Served {
  std::vector<int64_t> ids;
  int worker_steps = 0;
};

Served Serve(bool fuse, const std::vector<int64_t>& prompt, const std::vector<int>& blocks,
             int64_t tokens) {
  StepCounter counter;
  auto w0 = testing::StartWorker(ModelDir("stories260K"), {0, 1, 2});
  auto w1 = testing::StartWorker(ModelDir("stories260K"), {3, 4});
  coordinator::CoordinatorOptions options;
  options.fuse_hops = fuse;
  options.observer = &counter;
  auto coordinator = testing::StartCoordinator(
      ModelDir("stories260K"), {w0->address(), w1->address()}, /*wait_serving=*/true, options);
  EXPECT_NE(coordinator, nullptr);
  if (coordinator == nullptr) return {};
  auto client = Client::Connect(coordinator->address());
  GenerateRequest req;
  req.prompt_ids = prompt;
  req.max_new_tokens = tokens;
  req.stop_at_eos = false;
  req.mode = "sparse";
  req.blocks = blocks;
  req.num_blocks = 5;
  auto got = (*client)->Generate(req);
  EXPECT_TRUE(got.ok()) << got.status();
  Served out;
  if (got.ok()) out.ids = got->ids;
  coordinator.reset();  // Every step's hook has run.
  out.worker_steps = counter.steps();
  return out;
}

TEST(HopFusionTest, FusedSparseThroughWorkersEqualsInProcessAndUnfused) {
  const std::vector<int64_t> prompt = GoldenIds("stories260K", "prompt.input_ids");
  const std::vector<int> blocks = {0, 1, 2, 4};  // 0-2 on worker 0, 4 on worker 1.
  const int64_t tokens = 12;
  // Reference: the in-process SparseExecutor (sequential, gates 1).
  const model::Engine& engine = router::testing::Stories();
  auto layout = BlockLayout::Create(5, 5);
  router::SparsePlan plan;
  plan.blocks = blocks;
  auto exec = router::SparseExecutor::Create(&engine.layers(), *layout, plan);
  ASSERT_TRUE(exec.ok()) << exec.status();
  model::SamplingParams params;
  params.max_new_tokens = tokens;
  params.stop_at_eos = false;
  auto want = model::RunGenerationLoop(engine.ends(), **exec, engine.tokenizer(), prompt, params);
  ASSERT_TRUE(want.ok()) << want.status();

  const Served fused = Serve(true, prompt, blocks, tokens);
  const Served unfused = Serve(false, prompt, blocks, tokens);
  EXPECT_EQ(fused.ids, want->ids);
  EXPECT_EQ(unfused.ids, want->ids);
  // Per step: 2 hops fused (w0[0,1,2], w1[4]) against 4 (one per block).
  EXPECT_GT(fused.worker_steps, 0);
  EXPECT_EQ(unfused.worker_steps, 2 * fused.worker_steps);
}

}  // namespace
}  // namespace swarm
