// The router's serving surface as a user reaches it: `swarm predict` against a coordinator with a
// router file (the same blocks and weights the router library picks), a router file for another
// N refused at swarm-coordinator start-up, the EstimateMemory RPC and `swarm memory --server`
// equal to router/memory.h, and the estimate checked against the resident memory of real
// swarm-worker processes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "client/client.h"
#include "nlohmann/json.hpp"
#include "router/memory.h"
#include "router/router.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"
#include "tests/router/router_test_util.h"
#include "tools/synth.h"

namespace swarm::testing {
namespace {

const std::string kStoriesDir = kShared + "/models/stories260K";

std::vector<int64_t> Prompt() { return GoldenIds("stories260K", "prompt.input_ids"); }

// One worker with every layer and a coordinator with the tiny router file (N = 5), in process.
class RouterServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    router_file_ = new std::string(router::testing::TinyCalibration().path);
    worker_ = StartWorker(kStoriesDir, {0, 1, 2, 3, 4}).release();
    coordinator::CoordinatorOptions options;
    options.router_path = *router_file_;
    options.router_num_blocks = 5;
    coordinator_ = StartCoordinator(kStoriesDir, {worker_->address()}, true, options).release();
  }
  static void TearDownTestSuite() {
    delete coordinator_;
    delete worker_;
    delete router_file_;
  }
  static std::string address() { return coordinator_->address(); }

  static std::string* router_file_;
  static worker::WorkerServer* worker_;
  static coordinator::CoordinatorServer* coordinator_;
};

std::string* RouterServingTest::router_file_ = nullptr;
worker::WorkerServer* RouterServingTest::worker_ = nullptr;
coordinator::CoordinatorServer* RouterServingTest::coordinator_ = nullptr;

TEST_F(RouterServingTest, PredictCliPrintsTheRoutersBlocksAndWeights) {
  ASSERT_NE(coordinator_, nullptr);
  ScratchDir scratch("predict");
  // The reference: the router library on the same file, no tolls.
  auto ckpt = model::Checkpoint::Open(kStoriesDir);
  ASSERT_TRUE(ckpt.ok());
  auto r = router::Router::Load(*router_file_, *ckpt);
  ASSERT_TRUE(r.ok()) << r.status();
  auto want = (*r)->Predict(Prompt(), 3);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_EQ(want->blocks.size(), 3u);

  CommandResult json = RunCommand({kBin + "/swarm", "predict", "--server", address(), "--ids",
                                   absl::StrJoin(Prompt(), ","), "--top-k-blocks", "3", "--json"},
                                  scratch.path() + "/json.log");
  ASSERT_EQ(json.exit_code, 0) << json.out;
  nlohmann::json j = nlohmann::json::parse(json.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << json.out;
  EXPECT_EQ(j["blocks"].get<std::vector<int>>(), want->blocks);
  const auto weights = j["weights"].get<std::vector<float>>();
  ASSERT_EQ(weights.size(), want->weights.size());
  for (size_t i = 0; i < weights.size(); ++i) EXPECT_FLOAT_EQ(weights[i], want->weights[i]);
  EXPECT_NEAR(j["expected_kl"].get<double>(), want->expected_kl, 1e-9);
  EXPECT_EQ(j["num_blocks"].get<int>(), 5);
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int64_t>>(), Prompt());
  // 5 layers in 5 blocks: block b is layer b.
  for (size_t i = 0; i < want->blocks.size(); ++i) {
    EXPECT_EQ(j["layers"][i]["begin"].get<int>(), want->blocks[i]);
    EXPECT_EQ(j["layers"][i]["end"].get<int>(), want->blocks[i] + 1);
  }

  // Text: the prompt is tokenized by the coordinator (BOS added), as the golden prompt was.
  CommandResult text = RunCommand({kBin + "/swarm", "predict", "--server", address(), "--prompt",
                                   "Once upon a time, Lily", "--top-k-blocks", "3"},
                                  scratch.path() + "/text.log");
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_TRUE(absl::StrContains(
      text.out, absl::StrCat("blocks [", absl::StrJoin(want->blocks, ", "), "] of 5")))
      << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "weights [")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "expected KL")) << text.out;
}

TEST_F(RouterServingTest, PredictCliRejectsBadRequestsWithAReason) {
  ASSERT_NE(coordinator_, nullptr);
  ScratchDir scratch("predict-bad");
  const std::string log = scratch.path() + "/k.log";
  CommandResult k9 = RunCommand({kBin + "/swarm", "predict", "--server", address(), "--prompt",
                                 "Once", "--top-k-blocks", "9"},
                                log);
  EXPECT_NE(k9.exit_code, 0);
  std::ifstream f(log);
  const std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(absl::StrContains(err, "top_k_blocks 9 is not in 1..5")) << err;
  EXPECT_EQ(RunCommand({kBin + "/swarm", "predict", "--server", address(), "--prompt", "Once",
                        "--top-k-blocks", "0"},
                       scratch.path() + "/k0.log")
                .exit_code,
            2);
  EXPECT_EQ(RunCommand({kBin + "/swarm", "predict", "--prompt", "Once"}, scratch.path() + "/s.log")
                .exit_code,
            2);  // No --server.
}

TEST_F(RouterServingTest, EstimateMemoryRpcEqualsTheLibrary) {
  ASSERT_NE(coordinator_, nullptr);
  auto client = Client::Connect(address());
  ASSERT_TRUE(client.ok());
  auto ckpt = model::Checkpoint::Open(kStoriesDir);
  ASSERT_TRUE(ckpt.ok());
  router::MemoryOptions o;
  o.num_blocks = 5;  // The router's N: the RPC's default.
  o.top_k = 3;
  o.num_workers = 1;  // The coordinator's worker count: the RPC's default.
  auto want = router::EstimateMemory(**ckpt, o);
  ASSERT_TRUE(want.ok());
  MemoryRequest req;
  req.top_k_blocks = 3;
  auto got = (*client)->EstimateMemory(req);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->num_blocks, 5);
  EXPECT_EQ(got->top_k_blocks, 3);
  EXPECT_EQ(got->total_bytes, want->total_bytes);
  EXPECT_EQ(got->embedding_bytes, want->embedding_bytes);
  EXPECT_EQ(got->head_bytes, want->head_bytes);
  EXPECT_EQ(got->layer_bytes, want->layer_bytes);
  EXPECT_EQ(got->block_bytes, want->block_bytes);
  EXPECT_EQ(got->active_bytes, want->active_bytes);
  EXPECT_EQ(got->active_block_bytes, want->active_block_bytes);
  EXPECT_DOUBLE_EQ(got->savings_ratio, want->savings_ratio);
  EXPECT_EQ(got->worker_bytes, want->worker_bytes);
  EXPECT_EQ(got->kv_bytes_per_token, want->kv_bytes_per_token);

  // Explicit N, workers, dtype and kept blocks.
  o.num_blocks = 4;
  o.top_k = 2;
  o.num_workers = 2;
  o.dtype = DType::kBF16;
  o.keep = BlockMask{1};  // Block 0 only.
  want = router::EstimateMemory(**ckpt, o);
  ASSERT_TRUE(want.ok()) << want.status();
  req = MemoryRequest{};
  req.num_blocks = 4;
  req.top_k_blocks = 2;
  req.num_workers = 2;
  req.dtype = "bf16";
  req.keep_default = false;
  req.keep_blocks = {0};
  got = (*client)->EstimateMemory(req);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->dtype, "bf16");
  EXPECT_EQ(got->active_bytes, want->active_bytes);
  EXPECT_EQ(got->worker_bytes, want->worker_bytes);
  ASSERT_EQ(got->worker_blocks.size(), 2u);
  EXPECT_EQ(got->worker_blocks[0], std::make_pair(0, 2));
  EXPECT_EQ(got->worker_blocks[1], std::make_pair(2, 4));

  req = MemoryRequest{};
  req.top_k_blocks = 9;
  EXPECT_EQ((*client)->EstimateMemory(req).status().code(), absl::StatusCode::kInvalidArgument);
  req = MemoryRequest{};
  req.dtype = "f8";
  EXPECT_EQ((*client)->EstimateMemory(req).status().code(), absl::StatusCode::kInvalidArgument);

  // `swarm memory --server` prints the same JSON as `swarm memory --model`.
  ScratchDir scratch("memory-cli");
  CommandResult remote = RunCommand({kBin + "/swarm", "memory", "--server", address(),
                                     "--top-k-blocks", "3", "--workers", "2", "--json"},
                                    scratch.path() + "/remote.log");
  CommandResult local =
      RunCommand({kBin + "/swarm", "memory", "--model", kStoriesDir, "--num-blocks", "5",
                  "--top-k-blocks", "3", "--workers", "2", "--json"},
                 scratch.path() + "/local.log");
  ASSERT_EQ(remote.exit_code, 0) << remote.out;
  ASSERT_EQ(local.exit_code, 0) << local.out;
  EXPECT_EQ(nlohmann::json::parse(remote.out, nullptr, false),
            nlohmann::json::parse(local.out, nullptr, false));
}

TEST(RouterStartupTest, ARouterFileForAnotherNIsAClearStartupError) {
  const std::string router_file = router::testing::TinyCalibration().path;  // N = 5.
  auto worker = StartWorker(kStoriesDir, {0, 1, 2, 3, 4});
  ASSERT_NE(worker, nullptr);
  coordinator::CoordinatorOptions options;
  options.model_dir = kStoriesDir;
  options.workers = {worker->address()};
  options.listen = "127.0.0.1:0";
  options.router_path = router_file;
  options.router_num_blocks = 4;
  auto server = coordinator::CoordinatorServer::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(server.status().message(), router_file)) << server.status();
  EXPECT_TRUE(absl::StrContains(server.status().message(), "N = 5")) << server.status();

  // The same through swarm-coordinator --num-blocks: exits at start-up, saying why.
  ScratchDir scratch("router-n");
  const std::string log = scratch.path() + "/c.log";
  CommandResult c = RunCommand(
      {kBin + "/swarm-coordinator", "--model", kStoriesDir, "--workers", worker->address(),
       "--listen", "127.0.0.1:0", "--router", router_file, "--num-blocks", "4"},
      log, absl::Seconds(30));
  EXPECT_NE(c.exit_code, 0);
  EXPECT_FALSE(absl::StrContains(c.out, "listening on")) << c.out;
  std::ifstream f(log);
  const std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(absl::StrContains(err, "calibrated for N = 5 blocks, but N = 4")) << err;
  EXPECT_TRUE(absl::StrContains(err, router_file)) << err;
  // --num-blocks without a router is a usage error.
  EXPECT_EQ(RunCommand({kBin + "/swarm-coordinator", "--model", kStoriesDir, "--workers",
                        worker->address(), "--num-blocks", "4"},
                       scratch.path() + "/c2.log", absl::Seconds(30))
                .exit_code,
            2);
}

// VmRSS (or another /proc/PID/status field) in bytes; -1 when unreadable.
int64_t StatusBytes(pid_t pid, const std::string& field) {
  std::ifstream f(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(f, line)) {
    if (absl::StartsWith(line, field + ":")) {
      int64_t kb = 0;
      if (std::sscanf(line.c_str() + field.size() + 1, "%ld", &kb) == 1) return kb * 1024;
    }
  }
  return -1;
}

bool WaitReady(const std::string& address, absl::Duration timeout) {
  auto stub =
      v1::WorkerService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::InfoRequest req;
    v1::InfoResponse resp;
    if (stub->Info(&ctx, req, &resp).ok() && resp.ready()) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

TEST(MemoryMeasurementTest, WorkerResidentMemoryMatchesTheEstimate) {
  // A synthetic model big enough that weights dominate the process's other memory: 8 layers of
  // ~13.6 MB. One worker hosts layer 0 (the baseline), another layers 0-7; the difference of
  // their resident sets is the weight bytes of layers 1-7.
  ScratchDir scratch("rss");
  tools::SynthOptions s;
  s.layers = 8;
  s.hidden = 512;
  s.intermediate = 1536;
  s.heads = 8;
  s.vocab = 512;
  s.seed = 3;
  s.out_dir = scratch.path() + "/model";
  auto written = tools::WriteSynthModel(s);
  ASSERT_TRUE(written.ok()) << written.status();
  auto ckpt = model::Checkpoint::Open(s.out_dir);
  ASSERT_TRUE(ckpt.ok());
  router::MemoryOptions o;
  o.num_blocks = 8;
  o.top_k = 8;
  auto m = router::EstimateMemory(**ckpt, o);
  ASSERT_TRUE(m.ok()) << m.status();
  int64_t want = 0;
  for (int b = 1; b < 8; ++b) want += m->block_bytes[b];
  ASSERT_GT(want, 80 << 20);

  const std::vector<std::string> common = {"--listen", "127.0.0.1:0",    "--threads",
                                           "1",        "--max-sessions", "1"};
  std::vector<std::string> small = {kBin + "/swarm-worker", "--model", s.out_dir, "--layers",
                                    "0-0"};
  std::vector<std::string> large = {kBin + "/swarm-worker", "--model", s.out_dir, "--layers",
                                    "0-7"};
  small.insert(small.end(), common.begin(), common.end());
  large.insert(large.end(), common.begin(), common.end());
  Process w_small(small, scratch.path() + "/small.log");
  Process w_large(large, scratch.path() + "/large.log");
  const std::string a_small = w_small.WaitForLine("listening on ");
  const std::string a_large = w_large.WaitForLine("listening on ");
  ASSERT_FALSE(a_small.empty() || a_large.empty()) << w_small.Log() << w_large.Log();
  ASSERT_TRUE(WaitReady(a_small, absl::Seconds(60))) << w_small.Log();
  ASSERT_TRUE(WaitReady(a_large, absl::Seconds(60))) << w_large.Log();

  const int64_t rss_small = StatusBytes(w_small.pid(), "VmRSS");
  const int64_t rss_large = StatusBytes(w_large.pid(), "VmRSS");
  ASSERT_GT(rss_small, 0);
  ASSERT_GT(rss_large, 0);
  const int64_t measured = rss_large - rss_small;
  std::printf("estimate %lld bytes for layers 1-7, measured VmRSS difference %lld bytes (%.3f)\n",
              static_cast<long long>(want), static_cast<long long>(measured),
              static_cast<double>(measured) / want);
  // Weights are copied out of the mapping and the file pages dropped: within 10 % (allocator,
  // page rounding, per-layer bookkeeping).
  EXPECT_NEAR(static_cast<double>(measured), static_cast<double>(want), 0.10 * want)
      << "VmRSS " << rss_small << " (layer 0) vs " << rss_large << " (layers 0-7)";
}

}  // namespace
}  // namespace swarm::testing
