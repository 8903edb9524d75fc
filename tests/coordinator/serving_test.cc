// The coordinator as a service: bad requests get their gRPC status, concurrent clients get what
// they get alone and leave no sessions behind, cancellation frees sessions, workers of another
// model are rejected, a worker that is down at start-up (or dies later) is handled, health.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "model/generate.h"
#include "swarm/v1/coordinator.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"

namespace swarm {
namespace {

using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;
using ::swarm::testing::Range;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

// Sessions the workers report, summed.
int WorkerSessions(Client& client) {
  auto s = client.Status();
  EXPECT_TRUE(s.ok()) << s.status();
  int n = 0;
  if (s.ok()) {
    for (const WorkerStatus& w : s->workers) n += w.sessions;
  }
  return n;
}

// Waits up to 5 s for the workers to report no session.
bool NoSessionsLeft(Client& client) {
  for (int i = 0; i < 250; ++i) {
    if (WorkerSessions(client) == 0) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

class ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = testing::StartCluster("stories260K", {{0, 1, 2}, {3, 4}});
    ASSERT_NE(cluster_.coordinator, nullptr);
    auto client = Client::Connect(cluster_.coordinator->address());
    ASSERT_TRUE(client.ok());
    client_ = *std::move(client);
    stub_ = v1::CoordinatorService::NewStub(
        grpc::CreateChannel(cluster_.coordinator->address(), grpc::InsecureChannelCredentials()));
  }

  // Generate through the raw stub (for fields the SDK validates itself).
  grpc::Status RawGenerate(const v1::GenerateRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto reader = stub_->Generate(&ctx, req);
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  }

  testing::Cluster cluster_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
};

TEST_F(ServingTest, HealthAndStatusOfAServingCluster) {
  EXPECT_EQ(testing::Health(cluster_.coordinator->address(), ""), HealthStatus::SERVING);
  EXPECT_EQ(testing::Health(cluster_.coordinator->address(), "swarm.v1.CoordinatorService"),
            HealthStatus::SERVING);
  EXPECT_NE(testing::ReflectionListServices(cluster_.coordinator->address())
                .find("swarm.v1.CoordinatorService"),
            std::string::npos);
  auto s = client_->Status();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->serving);
  EXPECT_EQ(s->num_layers, 5);
  ASSERT_EQ(s->workers.size(), 2u);
  EXPECT_EQ(s->workers[0].layers, (std::vector<std::pair<int, int>>{{0, 3}}));
  EXPECT_EQ(s->workers[1].layers, (std::vector<std::pair<int, int>>{{3, 5}}));
  for (const WorkerStatus& w : s->workers) {
    EXPECT_TRUE(w.reachable && w.compatible && w.ready) << w.error;
    EXPECT_EQ(w.device, "cpu");
    EXPECT_EQ(w.dtype, "f32");
    EXPECT_GT(w.weight_bytes, 0);
  }
}

// The scheduler's hooks (called here as the scheduler calls them) reach Status through the SDK:
// occupancy, means per step and each worker's busy fraction, in --workers order.
TEST_F(ServingTest, StatusShowsTheSchedulersFigures) {
  auto before = client_->Status();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->scheduler.running_requests, 0);
  EXPECT_EQ(before->scheduler.steps, 0u);
  EXPECT_GT(before->scheduler.window_seconds, 0);
  coordinator::CoordinatorObserver* hooks = cluster_.coordinator->observer();
  ASSERT_NE(hooks, nullptr);
  hooks->OnSchedulerState(3, 5);
  hooks->OnBatchStep(3, 3);
  hooks->OnBatchStep(4, 19);
  hooks->OnAdmitted(absl::Milliseconds(40));
  hooks->OnWorkerBusy(1, absl::Milliseconds(400));
  auto s = client_->Status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->scheduler.running_requests, 3);
  EXPECT_EQ(s->scheduler.waiting_requests, 5);
  EXPECT_EQ(s->scheduler.steps, 2u);
  EXPECT_EQ(s->scheduler.sequences_per_step, 3.5);
  EXPECT_EQ(s->scheduler.tokens_per_step, 11);
  EXPECT_EQ(s->scheduler.admitted, 1u);
  EXPECT_NEAR(s->scheduler.queue_seconds_mean, 0.04, 1e-9);
  ASSERT_EQ(s->workers.size(), 2u);
  EXPECT_EQ(s->workers[0].busy_fraction, 0);
  // 0.4 s over a window of 1 to 10 s.
  EXPECT_GE(s->workers[1].busy_fraction, 0.04 - 1e-9);
  EXPECT_LE(s->workers[1].busy_fraction, 0.4 + 1e-9);
}

TEST_F(ServingTest, MaxTokensBeyondTheContextIsOutOfRange) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 600;  // Context 512.
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kOutOfRange);
  req.prompt.clear();
  req.prompt_ids.assign(513, 5);
  req.max_new_tokens = 1;
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(ServingTest, UnknownModeOrCombineIsInvalidArgument) {
  v1::GenerateRequest req;
  req.set_prompt("Once");
  req.set_mode(static_cast<v1::Mode>(7));
  EXPECT_EQ(RawGenerate(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_mode(v1::MODE_EXACT);
  req.set_combine(static_cast<v1::Combine>(9));
  EXPECT_EQ(RawGenerate(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  GenerateRequest sdk;
  sdk.prompt = "Once";
  sdk.mode = "fast";
  EXPECT_EQ(client_->Generate(sdk).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServingTest, SparseModeWithoutARouterOrPlanIsFailedPrecondition) {
  GenerateRequest req;
  req.prompt = "Once";
  req.mode = "sparse";
  req.top_k_blocks = 2;
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ServingTest, BadPromptsAndSamplingAreInvalidArgument) {
  GenerateRequest req;
  req.prompt_ids = {1, 512};  // Vocabulary of 512.
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.prompt_ids = {1, -1};
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.prompt_ids.clear();
  req.prompt = "";
  req.add_special_tokens = false;  // Nothing to start from.
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.prompt = "Once";
  req.prompt_ids = {1};
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.prompt_ids.clear();
  req.top_p = 0;
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
  req.top_p = 1;
  req.temperature = -1;
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkerSessions(*client_), 0);
}

TEST_F(ServingTest, RequestDeadlineIsEnforced) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 400;
  req.stop_at_eos = false;
  req.timeout = absl::Milliseconds(30);
  auto r = client_->Generate(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(NoSessionsLeft(*client_));
}

TEST_F(ServingTest, PredictWithoutARouterIsFailedPrecondition) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::PredictRequest req;
  req.set_prompt("Once");
  req.set_top_k_blocks(2);
  v1::PredictResponse resp;
  EXPECT_EQ(stub_->Predict(&ctx, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServingTest, EightConcurrentClientsGetWhatTheyGetAloneAndLeaveNoSession) {
  const std::vector<std::string> prompts = {"Once upon a time", "The cat sat", "Lily and Tom",
                                            "One day, a big",   "The sun was", "A little dog",
                                            "There was a tree", "Mom said"};
  std::vector<GenerateRequest> reqs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateRequest r;
    r.prompt = prompts[i];
    r.max_new_tokens = 40;
    r.temperature = 0.9f;
    r.top_p = 0.9f;
    r.top_k = 40;
    r.seed = 1000 + i;
    reqs.push_back(r);
  }
  // What each request gives alone, in-process.
  auto engine = model::Engine::Create(ModelDir("stories260K"));
  ASSERT_TRUE(engine.ok());
  std::vector<std::vector<int64_t>> alone;
  for (const GenerateRequest& r : reqs) {
    auto ids = (*engine)->tokenizer()->Encode(r.prompt, true);
    ASSERT_TRUE(ids.ok());
    model::SamplingParams p;
    p.max_new_tokens = r.max_new_tokens;
    p.temperature = r.temperature;
    p.top_p = r.top_p;
    p.top_k = r.top_k;
    p.seed = r.seed;
    auto out = (*engine)->Generate(*ids, p);
    ASSERT_TRUE(out.ok());
    alone.push_back(out->ids);
  }
  std::vector<absl::StatusOr<GenerateResult>> got(reqs.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  absl::Notification go;
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] {
      auto client = Client::Connect(cluster_.coordinator->address());  // One connection each.
      go.WaitForNotification();
      got[i] = (*client)->Generate(reqs[i]);
    });
  }
  go.Notify();
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << i << ": " << got[i].status();
    EXPECT_EQ(got[i]->ids, alone[i]) << "client " << i;
  }
  // The sessions are closed before the last message is sent: none may be left.
  EXPECT_EQ(WorkerSessions(*client_), 0);
  auto s = client_->Status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->active_requests, 0);
  for (const WorkerStatus& w : s->workers) EXPECT_EQ(w.active_requests, 0);
}

TEST_F(ServingTest, ACancelledClientFreesItsSessionsOnEveryWorker) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 400;
  req.stop_at_eos = false;
  int chunks = 0;
  auto r = client_->Generate(req, [&](const GenerateChunk&) { return ++chunks < 3; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(NoSessionsLeft(*client_));
  // The cluster still serves.
  req.max_new_tokens = 5;
  EXPECT_TRUE(client_->Generate(req).ok());
}

TEST_F(ServingTest, AWorkerThatDiesMakesRequestsUnavailableNotCrash) {
  cluster_.workers[1]->Shutdown();
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 5;
  auto r = client_->Generate(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  auto s = client_->Status();
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->serving);
  EXPECT_FALSE(s->workers[1].reachable);
  EXPECT_NE(s->reason.find("3-4"), std::string::npos) << s->reason;
  EXPECT_EQ(s->workers[0].sessions, 0);
}

TEST(CoordinatorStartTest, AWorkerDownAtStartIsWaitedFor) {
  auto first = testing::StartWorker(ModelDir("stories260K"), {0, 1, 2});
  const std::string later = absl::StrCat("127.0.0.1:", testing::UnusedPort());
  auto coordinator = testing::StartCoordinator(ModelDir("stories260K"), {first->address(), later},
                                               /*wait_serving=*/false);
  ASSERT_NE(coordinator, nullptr);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(coordinator->serving());
  EXPECT_EQ(testing::Health(coordinator->address(), ""), HealthStatus::NOT_SERVING);
  auto client = Client::Connect(coordinator->address());
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_FALSE(status->serving);
  EXPECT_NE(status->reason.find("layers 3-4"), std::string::npos) << status->reason;
  EXPECT_NE(status->reason.find("unreachable"), std::string::npos) << status->reason;
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  EXPECT_EQ((*client)->Generate(req).status().code(), absl::StatusCode::kUnavailable);

  // The missing worker comes up: the coordinator notices on its own (backoff retries).
  auto second = testing::StartWorker(ModelDir("stories260K"), {3, 4}, {}, later);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE((*client)->WaitUntilServing(absl::Seconds(20)).ok());
  EXPECT_EQ(testing::Health(coordinator->address(), ""), HealthStatus::SERVING);
  auto r = (*client)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, GoldenIds("stories260K", "prompt.greedy"));
}

TEST(CoordinatorStartTest, AWorkerOfAnotherModelIsRejected) {
  auto right = testing::StartWorker(ModelDir("stories260K"), {0, 1, 2});
  auto wrong = testing::StartWorker(ModelDir("llama-gqa"), Range(0, 8));
  auto coordinator =
      testing::StartCoordinator(ModelDir("stories260K"), {right->address(), wrong->address()},
                                /*wait_serving=*/false);
  ASSERT_NE(coordinator, nullptr);
  auto client = Client::Connect(coordinator->address());
  absl::SleepFor(absl::Milliseconds(300));
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_FALSE(status->serving);  // Layers 3-4 are only on the wrong model's worker.
  ASSERT_EQ(status->workers.size(), 2u);
  EXPECT_TRUE(status->workers[1].reachable);
  EXPECT_FALSE(status->workers[1].compatible);
  EXPECT_NE(status->workers[1].error.find("fingerprint"), std::string::npos)
      << status->workers[1].error;

  // With the right model's remaining layers on a third worker, it serves, never touching the
  // wrong one.
  auto third = testing::StartWorker(ModelDir("stories260K"), {3, 4});
  auto coordinator2 = testing::StartCoordinator(
      ModelDir("stories260K"), {right->address(), wrong->address(), third->address()});
  auto client2 = Client::Connect(coordinator2->address());
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  auto r = (*client2)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, GoldenIds("stories260K", "prompt.greedy"));
  auto s2 = (*client2)->Status();
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(s2->workers[1].steps_total, 0u);
}

TEST(CoordinatorStartTest, Bf16WorkersServeF32HiddenStates) {
  worker::WorkerServerOptions options;
  options.model_dir = ModelDir("stories260K");
  options.layers = Range(0, 5);
  options.load.dtype = DType::kBF16;
  auto w = worker::WorkerServer::Start(options);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->Load().ok());
  auto coordinator = testing::StartCoordinator(ModelDir("stories260K"), {(*w)->address()});
  auto client = Client::Connect(coordinator->address());
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 16;
  auto r = (*client)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids.size(), 16u);
  EXPECT_NE(r->text.find("Lily"), std::string::npos) << r->text;  // bf16 still tells the story.
  auto s = (*client)->Status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->workers[0].dtype, "bf16");
}

TEST(CoordinatorStartTest, ReplicasShareTheLoad) {
  auto cluster = testing::StartCluster("stories260K", {Range(0, 5), Range(0, 5)});
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      auto client = Client::Connect(cluster.coordinator->address());
      GenerateRequest req;
      req.prompt = "Once upon a time";
      req.max_new_tokens = 60;
      req.stop_at_eos = false;
      req.seed = i;
      req.temperature = 1;
      EXPECT_TRUE((*client)->Generate(req).ok());
    });
  }
  for (auto& t : threads) t.join();
  auto client = Client::Connect(cluster.coordinator->address());
  auto s = (*client)->Status();
  ASSERT_TRUE(s.ok());
  EXPECT_GT(s->workers[0].steps_total, 0u);
  EXPECT_GT(s->workers[1].steps_total, 0u);
}

}  // namespace
}  // namespace swarm
