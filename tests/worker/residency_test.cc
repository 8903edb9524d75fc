// Weight residency (swarm-worker --memory-budget): a worker hosting all 5 layers of stories260K
// with room for one layer at a time still produces the golden greedy ids through a coordinator;
// loads/hits/evictions move as the LRU rules say; resident bytes never pass the budget; a
// Prefetch makes the next Forward a hit; a budget below one residency unit is a clear error.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <thread>

#include "client/client.h"
#include "model/checkpoint.h"
#include "model/combine.h"
#include "model/layer_host.h"
#include "model/weights.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "worker/block_residency.h"
#include "worker/worker_server.h"

namespace swarm::worker {
namespace {

using ::swarm::testing::GoldenFloats;
using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;

constexpr int64_t kHidden = 64;  // stories260K

// Weight bytes of one stories260K layer (all five are the same size).
int64_t OneLayerBytes() {
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  auto host = model::LayerHost::Create(*ckpt, {0}, model::LoadOptions());
  EXPECT_TRUE(host.ok()) << host.status();
  return (*host)->WeightBytes();
}

std::unique_ptr<WorkerServer> StartBudgetedWorker(int64_t budget, int block_layers = 1) {
  WorkerServerOptions options;
  options.model_dir = ModelDir("stories260K");
  options.layers = {0, 1, 2, 3, 4};
  options.memory_budget_bytes = budget;
  options.block_layers = block_layers;
  auto server = WorkerServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  absl::Status s = (*server)->Load();
  EXPECT_TRUE(s.ok()) << s;
  return *std::move(server);
}

v1::InfoResponse Info(v1::WorkerService::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::InfoResponse resp;
  EXPECT_TRUE(stub->Info(&ctx, v1::InfoRequest(), &resp).ok());
  return resp;
}

std::unique_ptr<v1::WorkerService::Stub> Stub(const std::string& address) {
  return v1::WorkerService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

TEST(ResidentLayerHostTest, BudgetBelowTheLargestBlockIsAClearError) {
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  ASSERT_TRUE(ckpt.ok());
  const int64_t layer = OneLayerBytes();
  auto host = ResidentLayerHost::Create(*ckpt, {0, 1, 2, 3, 4}, model::LoadOptions(),
                                        /*block_layers=*/2, /*budget_bytes=*/2 * layer - 1);
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(host.status().message().find("--memory-budget"), std::string::npos) << host.status();
  EXPECT_NE(host.status().message().find("smaller than block 0"), std::string::npos)
      << host.status();
  EXPECT_FALSE(ResidentLayerHost::Create(*ckpt, {0}, model::LoadOptions(), 1, 0).ok());
  EXPECT_FALSE(ResidentLayerHost::Create(*ckpt, {0}, model::LoadOptions(), 0, layer).ok());

  // The units: runs of at most block_layers consecutive hosted layers; a gap starts a new one.
  auto ok = ResidentLayerHost::Create(*ckpt, {0, 1, 2, 4}, model::LoadOptions(), 2, 2 * layer);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->units(), (std::vector<std::vector<int>>{{0, 1}, {2}, {4}}));
  EXPECT_EQ((*ok)->WeightBytes(), 4 * layer);
  ResidencyStats s = (*ok)->Stats();
  EXPECT_EQ(s.units, 3);
  EXPECT_EQ(s.units_resident, 1);  // {0,1} fills the budget; {2} and {4} wait on the mapping.
  EXPECT_EQ(s.resident_bytes, 2 * layer);
}

TEST(ResidentLayerHostTest, GatedStepOverSeveralBlocksEqualsTheOneHostResult) {
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  ASSERT_TRUE(ckpt.ok());
  const int64_t layer = OneLayerBytes();
  auto paged = ResidentLayerHost::Create(*ckpt, {0, 1, 2, 3, 4}, model::LoadOptions(), 1, layer);
  ASSERT_TRUE(paged.ok()) << paged.status();
  auto whole = model::LayerHost::Create(*ckpt, {0, 1, 2, 3, 4}, model::LoadOptions());
  ASSERT_TRUE(whole.ok());
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  const int64_t t = static_cast<int64_t>(h0.size()) / kHidden;
  const HostTensor h = HostTensor::FromFloats({t, kHidden}, h0);
  auto c1 = (*paged)->NewCache();
  auto c2 = (*whole)->NewCache();
  const std::vector<int> layers = {1, 2, 3};
  // The layers run ungated (across three residency units here); the gate is the one rule's.
  auto a_out = (*paged)->Forward(h, 0, layers, c1.get());
  auto b_out = (*whole)->Forward(h, 0, layers, c2.get());
  ASSERT_TRUE(a_out.ok()) << a_out.status();
  ASSERT_TRUE(b_out.ok()) << b_out.status();
  auto a = model::GateResidual(h, *std::move(a_out), 0.5f);
  auto b = model::GateResidual(h, *std::move(b_out), 0.5f);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const std::vector<float> va = a->ToFloats(), vb = b->ToFloats();
  ASSERT_EQ(va.size(), vb.size());
  float diff = 0;
  for (size_t i = 0; i < va.size(); ++i) diff = std::max(diff, std::abs(va[i] - vb[i]));
  EXPECT_LT(diff, 1e-5);
  EXPECT_EQ(c1->Length(2), t);
  EXPECT_EQ(c1->Length(0), 0);
  EXPECT_LE((*paged)->Stats().max_resident_bytes, layer);
}

TEST(ResidentLayerHostTest, ConcurrentSessionsWithRoomForOneBlockMatchTheOneHostResult) {
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  ASSERT_TRUE(ckpt.ok());
  const int64_t layer = OneLayerBytes();
  auto paged = ResidentLayerHost::Create(*ckpt, {0, 1, 2, 3, 4}, model::LoadOptions(), 1, layer);
  ASSERT_TRUE(paged.ok()) << paged.status();
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  const int64_t t = static_cast<int64_t>(h0.size()) / kHidden;
  const std::vector<int> all = {0, 1, 2, 3, 4};
  // The reference: all five layers on one ordinary host, in one pass.
  auto whole = model::LayerHost::Create(*ckpt, all, model::LoadOptions());
  ASSERT_TRUE(whole.ok());
  auto whole_cache = (*whole)->NewCache();
  auto ref = (*whole)->Forward(HostTensor::FromFloats({t, kHidden}, h0), 0, all, whole_cache.get());
  ASSERT_TRUE(ref.ok()) << ref.status();
  const std::vector<float> h5 = ref->ToFloats();
  const int64_t steps = std::min<int64_t>(t, 12);  // Causal: a prefix of the one-pass output.
  std::vector<float> diffs(4, 1e9f);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto cache = (*paged)->NewCache();
      std::vector<float> out;
      // Prefill one position at a time: many unit switches racing with the other sessions.
      for (int64_t p = 0; p < steps; ++p) {
        std::vector<float> row(h0.begin() + p * kHidden, h0.begin() + (p + 1) * kHidden);
        auto step =
            (*paged)->Forward(HostTensor::FromFloats({1, kHidden}, row), p, all, cache.get());
        if (!step.ok()) return;
        const std::vector<float> v = step->ToFloats();
        out.insert(out.end(), v.begin(), v.end());
      }
      if (out.size() != static_cast<size_t>(steps * kHidden)) return;
      float d = 0;
      for (size_t k = 0; k < out.size(); ++k) d = std::max(d, std::abs(out[k] - h5[k]));
      diffs[i] = d;
    });
  }
  for (std::thread& th : threads) th.join();
  for (float d : diffs) EXPECT_LT(d, 1e-4);
  ResidencyStats s = (*paged)->Stats();
  EXPECT_LE(s.max_resident_bytes, layer);
  EXPECT_EQ(s.hits_total + s.loads_total, static_cast<uint64_t>(4 * steps * 5));
  EXPECT_EQ(s.units_resident, 1);
}

TEST(ResidencyTest, OneBlockResidentStillGivesTheGoldenGreedyIds) {
  const int64_t layer = OneLayerBytes();
  auto worker = StartBudgetedWorker(layer);
  ASSERT_NE(worker, nullptr);
  auto coordinator = swarm::testing::StartCoordinator(ModelDir("stories260K"), {worker->address()});
  ASSERT_NE(coordinator, nullptr);
  auto client = Client::Connect(coordinator->address());
  ASSERT_TRUE(client.ok());
  for (const std::string seq : {"greedy", "prompt"}) {
    GenerateRequest req;
    req.prompt_ids = GoldenIds("stories260K", seq + ".input_ids");
    const std::vector<int64_t> want = GoldenIds("stories260K", seq + ".greedy");
    req.max_new_tokens = static_cast<int64_t>(want.size());
    req.stop_at_eos = false;
    auto result = (*client)->Generate(req);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids, want) << seq;
  }
  auto stub = Stub(worker->address());
  v1::InfoResponse info = Info(stub.get());
  EXPECT_EQ(info.memory_budget_bytes(), layer);
  EXPECT_EQ(info.blocks(), 5);
  EXPECT_EQ(info.blocks_resident(), 1);
  EXPECT_LE(info.resident_weight_bytes(), layer);
  EXPECT_LE(worker->resident_host()->Stats().max_resident_bytes, layer);
  // Every step runs the 5 residency units: each use is a hit or a load. With room for one unit, a
  // step finds only the unit it starts with resident at most (the last one of the previous step
  // is unit 4, not unit 0), so all but the very first use of unit 0 are loads.
  ASSERT_GT(info.steps_total(), 2u);
  EXPECT_EQ(info.block_hits_total() + info.block_loads_total(), 5 * info.steps_total());
  EXPECT_EQ(info.block_hits_total(), 1u);
  EXPECT_EQ(info.block_evictions_total(), info.block_loads_total());
}

TEST(ResidencyTest, BudgetForEveryBlockLoadsNothingAfterStartUp) {
  auto worker = StartBudgetedWorker(5 * OneLayerBytes());
  ASSERT_NE(worker, nullptr);
  auto coordinator = swarm::testing::StartCoordinator(ModelDir("stories260K"), {worker->address()});
  ASSERT_NE(coordinator, nullptr);
  auto client = Client::Connect(coordinator->address());
  ASSERT_TRUE(client.ok());
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "greedy.input_ids");
  const std::vector<int64_t> want = GoldenIds("stories260K", "greedy.greedy");
  req.max_new_tokens = static_cast<int64_t>(want.size());
  req.stop_at_eos = false;
  auto result = (*client)->Generate(req);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->ids, want);
  v1::InfoResponse info = Info(Stub(worker->address()).get());
  EXPECT_EQ(info.block_loads_total(), 0u);
  EXPECT_EQ(info.block_evictions_total(), 0u);
  EXPECT_EQ(info.block_hits_total(), 5 * info.steps_total());
  EXPECT_EQ(info.blocks_resident(), 5);
}

TEST(ResidencyTest, PrefetchMakesTheNextForwardAHit) {
  const int64_t layer = OneLayerBytes();
  auto worker = StartBudgetedWorker(layer);
  ASSERT_NE(worker, nullptr);
  auto stub = Stub(worker->address());
  auto call_ctx = [] {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  };
  std::string id;
  {
    auto ctx = call_ctx();
    v1::OpenSessionResponse resp;
    ASSERT_TRUE(stub->OpenSession(ctx.get(), v1::OpenSessionRequest(), &resp).ok());
    id = resp.session_id();
  }
  const v1::InfoResponse before = Info(stub.get());
  EXPECT_EQ(before.block_loads_total(), 0u);
  {
    auto ctx = call_ctx();
    v1::PrefetchRequest req;
    req.add_layers(3);
    v1::PrefetchResponse resp;
    grpc::Status s = stub->Prefetch(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.blocks_loaded(), 1);
  }
  const v1::InfoResponse prefetched = Info(stub.get());
  EXPECT_EQ(prefetched.block_loads_total(), 1u);
  EXPECT_LE(prefetched.resident_weight_bytes(), layer);

  // Layer 3 over the golden input of layer 3: a hit, and the golden output of layer 3.
  const std::vector<float> h3 = GoldenFloats("stories260K", "greedy.hidden.3");
  const std::vector<float> h4 = GoldenFloats("stories260K", "greedy.hidden.4");
  const int64_t t = static_cast<int64_t>(h3.size()) / kHidden;
  v1::ForwardRequest req;
  req.set_session_id(id);
  req.set_step_id(1);
  req.set_start_position(0);
  req.add_layers(3);
  rpc::CopyTensorToProto(HostTensor::FromFloats({t, kHidden}, h3), req.mutable_hidden());
  v1::ForwardResponse resp;
  {
    auto ctx = call_ctx();
    grpc::Status s = stub->Forward(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  auto out = rpc::MoveTensorFromProto(resp.mutable_hidden(), 2, "reply");
  ASSERT_TRUE(out.ok());
  const std::vector<float> got = out->ToFloats();
  ASSERT_EQ(got.size(), h4.size());
  float diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::abs(got[i] - h4[i]));
  EXPECT_LT(diff, 1e-4);
  const v1::InfoResponse after = Info(stub.get());
  EXPECT_EQ(after.block_loads_total(), 1u);
  EXPECT_EQ(after.block_hits_total(), prefetched.block_hits_total() + 1);

  // Prefetching a layer not hosted is refused; a worker without a budget accepts the hint.
  {
    auto ctx = call_ctx();
    v1::PrefetchRequest bad;
    bad.add_layers(7);
    v1::PrefetchResponse r;
    EXPECT_EQ(stub->Prefetch(ctx.get(), bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto plain = swarm::testing::StartWorker(ModelDir("stories260K"), {0, 1});
  ASSERT_NE(plain, nullptr);
  auto plain_stub = Stub(plain->address());
  auto ctx = call_ctx();
  v1::PrefetchRequest hint;
  hint.add_layers(1);
  v1::PrefetchResponse r;
  EXPECT_TRUE(plain_stub->Prefetch(ctx.get(), hint, &r).ok());
  EXPECT_EQ(r.blocks_loaded(), 0);
}

}  // namespace
}  // namespace swarm::worker
