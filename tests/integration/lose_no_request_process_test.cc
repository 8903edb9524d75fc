// Losing no request, with real processes on loopback (stories260K):
//  - SIGTERM drains a worker: health NOT_SERVING, new sessions refused, the open one still served;
//    it exits once it holds none, after --drain-grace if one stays, and at once on a second
//    signal;
//  - `swarm up` restarts a worker killed with SIGKILL on its address, and the cluster serves the
//    golden ids again;
//  - a coordinator killed mid-stream with a second one up: the SDK resumes the stream there, and
//    the caller gets the output of the run without a fault (greedy and seeded).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "client/client.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

using HealthStatus = grpc::health::v1::HealthCheckResponse;

bool ExitedZero(int wait_status) {
  return wait_status != -1 && WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
}

// A swarm-worker process hosting all of stories260K, and a stub to it.
class DrainTest : public ::testing::Test {
 protected:
  void Start(const std::string& drain_grace) {
    worker_ = std::make_unique<Process>(
        std::vector<std::string>{kBin + "/swarm-worker", "--model", ModelDir("stories260K"),
                                 "--layers", "0-4", "--listen", "127.0.0.1:0", "--kv-budget",
                                 "64MiB", "--drain-grace", drain_grace},
        scratch_.path() + "/worker.log");
    address_ = worker_->WaitForLine("listening on ");
    ASSERT_FALSE(address_.empty()) << worker_->Log();
    ASSERT_TRUE(Eventually([&] { return Health(address_, "") == HealthStatus::SERVING; }))
        << worker_->Log();
    stub_ = v1::WorkerService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  grpc::Status Open(std::string* id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::OpenSessionRequest req;
    req.set_max_length(16);
    v1::OpenSessionResponse resp;
    grpc::Status s = stub_->OpenSession(&ctx, req, &resp);
    *id = resp.session_id();
    return s;
  }

  grpc::Status Step(const std::string& id, uint64_t step) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ForwardRequest req;
    req.set_session_id(id);
    req.set_step_id(step);
    req.set_start_position(static_cast<int64_t>(step) - 1);
    for (int l = 0; l < 5; ++l) req.add_layers(l);
    req.mutable_hidden()->set_dtype(v1::DTYPE_F32);
    req.mutable_hidden()->add_shape(1);
    req.mutable_hidden()->add_shape(64);
    req.mutable_hidden()->set_data(std::string(64 * sizeof(float), '\0'));
    v1::ForwardResponse resp;
    return stub_->Forward(&ctx, req, &resp);
  }

  grpc::Status Close(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::CloseSessionRequest req;
    req.set_session_id(id);
    v1::CloseSessionResponse resp;
    return stub_->CloseSession(&ctx, req, &resp);
  }

  // SIGTERM, then waits until health says NOT_SERVING.
  void Drain() {
    worker_->Signal(SIGTERM);
    ASSERT_TRUE(Eventually([&] { return Health(address_, "") == HealthStatus::NOT_SERVING; }))
        << worker_->Log();
  }

  ScratchDir scratch_{"drain"};
  std::unique_ptr<Process> worker_;
  std::string address_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

TEST_F(DrainTest, SigtermRefusesNewSessionsServesOpenOnesAndExitsWhenNoneIsLeft) {
  Start("10m");
  std::string open;
  ASSERT_TRUE(Open(&open).ok());
  ASSERT_TRUE(Step(open, 1).ok());
  Drain();
  std::string refused;
  const grpc::Status s = Open(&refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_NE(s.error_message().find("draining"), std::string::npos) << s.error_message();
  // The open session keeps working, and holds the worker up meanwhile.
  for (uint64_t step = 2; step <= 20; ++step) ASSERT_TRUE(Step(open, step).ok()) << step;
  absl::SleepFor(absl::Seconds(1));
  EXPECT_TRUE(Alive(worker_->pid())) << worker_->Log();
  // Its request ends: the worker exits.
  ASSERT_TRUE(Close(open).ok());
  EXPECT_TRUE(ExitedZero(worker_->Wait(absl::Seconds(20)))) << worker_->Log();
  EXPECT_NE(worker_->Log().find("no session left"), std::string::npos) << worker_->Log();
}

TEST_F(DrainTest, ASessionThatStaysIsLeftBehindAfterTheGrace) {
  Start("1s");
  std::string open;
  ASSERT_TRUE(Open(&open).ok());
  ASSERT_TRUE(Step(open, 1).ok());
  Drain();
  // The session's lease (10 s) outlasts the grace (1 s): the grace ends the drain.
  EXPECT_TRUE(ExitedZero(worker_->Wait(absl::Seconds(30)))) << worker_->Log();
  EXPECT_NE(worker_->Log().find("drain grace"), std::string::npos) << worker_->Log();
}

TEST_F(DrainTest, ASecondSignalExitsAtOnce) {
  Start("10m");
  std::string open;
  ASSERT_TRUE(Open(&open).ok());
  Drain();
  EXPECT_TRUE(Alive(worker_->pid()));
  worker_->Signal(SIGINT);
  EXPECT_TRUE(ExitedZero(worker_->Wait(absl::Seconds(20)))) << worker_->Log();
  EXPECT_NE(worker_->Log().find("exiting now with 1 open session"), std::string::npos)
      << worker_->Log();
}

// The pid of `up`'s child whose command line names `binary`.
pid_t ChildRunning(pid_t up, const std::string& binary) {
  for (pid_t child : ChildrenOf(up)) {
    const std::string cmdline = ReadFile(absl::StrCat("/proc/", child, "/cmdline"));
    if (cmdline.find(binary) != std::string::npos && Alive(child)) return child;
  }
  return -1;
}

TEST(SwarmUpSupervisionTest, AKilledWorkerIsRestartedAndTheClusterServesAgain) {
  ScratchDir scratch("up-restart");
  const std::string& dir = scratch.path();
  Process up({kBin + "/swarm", "up", "--model", ModelDir("stories260K"), "--workers", "2",
              "--kv-budget", "64MiB", "--max-batch-tokens", "256"},
             dir + "/up.log");
  const std::string address = up.WaitForLine("serving on ");
  ASSERT_FALSE(address.empty()) << up.Log();
  // The scheduler flag reached the coordinator.
  const pid_t coordinator = ChildRunning(up.pid(), "swarm-coordinator");
  ASSERT_GT(coordinator, 0);
  EXPECT_NE(ReadFile(absl::StrCat("/proc/", coordinator, "/cmdline"))
                .find(std::string("--max-batch-tokens") + '\0' + "256"),
            std::string::npos);

  auto client = Client::Connect(address);
  ASSERT_TRUE(client.ok());
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "greedy.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  const std::vector<int64_t> golden = GoldenIds("stories260K", "greedy.greedy");

  const pid_t victim = ChildRunning(up.pid(), "swarm-worker");
  ASSERT_GT(victim, 0);
  kill(victim, SIGKILL);
  ASSERT_TRUE(Eventually([&] { return up.Log().find("restarted worker") != std::string::npos; }))
      << up.Log();
  EXPECT_TRUE(Alive(up.pid()));
  // The coordinator finds the worker on its address again.
  absl::StatusOr<GenerateResult> r = absl::UnavailableError("not tried");
  ASSERT_TRUE(Eventually([&] {
    r = (*client)->Generate(req);
    return r.ok();
  })) << r.status()
      << up.Log();
  EXPECT_EQ(r->ids, golden);
  EXPECT_EQ(ChildrenOf(up.pid()).size(), 3u);

  up.Signal(SIGINT);
  EXPECT_TRUE(ExitedZero(up.Wait(absl::Seconds(30)))) << up.Log();
}

// One worker process and two coordinator processes over it.
class ResumeProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = std::make_unique<Process>(
        std::vector<std::string>{kBin + "/swarm-worker", "--model", ModelDir("stories260K"),
                                 "--layers", "0-4", "--listen", "127.0.0.1:0", "--kv-budget",
                                 "64MiB"},
        scratch_.path() + "/worker.log");
    worker_address_ = worker_->WaitForLine("listening on ");
    ASSERT_FALSE(worker_address_.empty()) << worker_->Log();
  }

  std::unique_ptr<Process> StartCoordinatorProcess(const std::string& name, std::string* address) {
    auto p = std::make_unique<Process>(
        std::vector<std::string>{kBin + "/swarm-coordinator", "--model", ModelDir("stories260K"),
                                 "--workers", worker_address_, "--listen", "127.0.0.1:0"},
        scratch_.path() + "/" + name + ".log");
    *address = p->WaitForLine("listening on ");
    EXPECT_FALSE(address->empty()) << p->Log();
    auto client = Client::Connect(*address);
    EXPECT_TRUE(client.ok() && (*client)->WaitUntilServing(absl::Seconds(30)).ok()) << p->Log();
    return p;
  }

  // The request without a fault (on `reference`), then on `victim`'s address with `backup` to
  // resume on, killing `victim` (SIGKILL) once the first piece of the stream arrives.
  void ExpectResumedStreamIsTheSame(const GenerateRequest& req) {
    std::string a1, a2;
    std::unique_ptr<Process> victim = StartCoordinatorProcess("victim", &a1);
    std::unique_ptr<Process> backup = StartCoordinatorProcess("backup", &a2);
    auto reference_client = Client::Connect(a2);
    ASSERT_TRUE(reference_client.ok());
    absl::StatusOr<GenerateResult> reference = (*reference_client)->Generate(req);
    ASSERT_TRUE(reference.ok()) << reference.status();
    ASSERT_EQ(reference->ids.size(), static_cast<size_t>(req.max_new_tokens));

    ClientOptions options;
    options.resume_addresses = {a2};
    auto client = Client::Connect(a1, options);
    ASSERT_TRUE(client.ok());
    std::vector<int64_t> streamed;
    std::string text;
    absl::StatusOr<GenerateResult> r = (*client)->Generate(req, [&](const GenerateChunk& chunk) {
      if (streamed.empty() && !chunk.ids.empty()) victim->Kill(SIGKILL);  // Mid-stream.
      streamed.insert(streamed.end(), chunk.ids.begin(), chunk.ids.end());
      text += chunk.text;
      return true;
    });
    ASSERT_TRUE(r.ok()) << r.status() << victim->Log() << backup->Log();
    EXPECT_EQ(r->resumes, 1);
    EXPECT_EQ(r->ids, reference->ids);
    EXPECT_EQ(streamed, reference->ids);  // One stream: nothing repeated, nothing missing.
    EXPECT_EQ(r->text, reference->text);
    EXPECT_EQ(text, reference->text);
    EXPECT_EQ(r->finish_reason, reference->finish_reason);
    EXPECT_EQ(r->prompt_ids, reference->prompt_ids);
  }

  ScratchDir scratch_{"resume"};
  std::unique_ptr<Process> worker_;
  std::string worker_address_;
};

TEST_F(ResumeProcessTest, GreedyStreamResumesOnTheSecondCoordinator) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 300;
  req.stop_at_eos = false;
  ExpectResumedStreamIsTheSame(req);
}

TEST_F(ResumeProcessTest, SeededStreamResumesOnTheSecondCoordinator) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 300;
  req.stop_at_eos = false;
  req.temperature = 0.8f;
  req.top_p = 0.9f;
  req.seed = 77;
  ExpectResumedStreamIsTheSame(req);
}

}  // namespace
}  // namespace swarm::testing
