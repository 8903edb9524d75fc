// The coordinator's Prefetch hint in sparse mode: a worker with room for one block receives the
// chosen block's layers before the first Forward (the hint is one more block use on the worker),
// and sparse output with a memory-budgeted worker equals the one with every block resident.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "client/client.h"
#include "model/checkpoint.h"
#include "model/layer_host.h"
#include "model/weights.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "worker/worker_server.h"

namespace swarm {
namespace {

using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;

v1::InfoResponse WorkerInfo(const std::string& address) {
  auto stub =
      v1::WorkerService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::InfoResponse resp;
  EXPECT_TRUE(stub->Info(&ctx, v1::InfoRequest(), &resp).ok());
  return resp;
}

absl::StatusOr<GenerateResult> Sparse(const std::string& coordinator, std::vector<int> blocks) {
  auto client = Client::Connect(coordinator);
  if (!client.ok()) return client.status();
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 12;
  req.stop_at_eos = false;
  req.mode = "sparse";
  req.blocks = std::move(blocks);
  req.num_blocks = 5;
  return (*client)->Generate(req);
}

TEST(PrefetchTest, SparseRequestPrefetchesTheChosenBlocksOnABudgetedWorker) {
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  ASSERT_TRUE(ckpt.ok());
  auto one = model::LayerHost::Create(*ckpt, {0}, model::LoadOptions());
  ASSERT_TRUE(one.ok());
  worker::WorkerServerOptions options;
  options.model_dir = ModelDir("stories260K");
  options.layers = {0, 1, 2, 3, 4};
  options.memory_budget_bytes = (*one)->WeightBytes();  // One layer (block) at a time.
  auto budgeted = worker::WorkerServer::Start(options);
  ASSERT_TRUE(budgeted.ok()) << budgeted.status();
  ASSERT_TRUE((*budgeted)->Load().ok());
  auto coordinator = testing::StartCoordinator(ModelDir("stories260K"), {(*budgeted)->address()});
  ASSERT_NE(coordinator, nullptr);

  // Block 3 only: layer 0 is resident at start-up, so block 3 is loaded once (by the hint or by
  // the first Forward, whichever the worker handles first) and every later use is a hit. The
  // hint itself is one use: hits + loads = steps + 1 once it has been handled.
  auto got = Sparse(coordinator->address(), {3});
  ASSERT_TRUE(got.ok()) << got.status();
  v1::InfoResponse info;
  for (int i = 0; i < 200; ++i) {
    info = WorkerInfo((*budgeted)->address());
    if (info.block_hits_total() + info.block_loads_total() > info.steps_total()) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(info.block_loads_total(), 1u);
  EXPECT_EQ(info.block_hits_total() + info.block_loads_total(), info.steps_total() + 1);
  EXPECT_LE(info.resident_weight_bytes(), options.memory_budget_bytes);

  // The same sparse request on a worker with every block resident gives the same ids.
  auto full = testing::StartCluster("stories260K", {{0, 1, 2, 3, 4}});
  ASSERT_NE(full.coordinator, nullptr);
  auto want = Sparse(full.coordinator->address(), {3});
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(got->ids, want->ids);
  auto two = Sparse(coordinator->address(), {1, 4});
  auto two_want = Sparse(full.coordinator->address(), {1, 4});
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_TRUE(two_want.ok()) << two_want.status();
  EXPECT_EQ(two->ids, two_want->ids);
}

}  // namespace
}  // namespace swarm
