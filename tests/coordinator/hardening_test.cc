// The coordinator's input hardening, through the gRPC service: an empty request, lengths whose
// sums would overflow, prompts over --max-prompt-bytes refused before tokenizing, request ids
// restricted to printable characters and 128 bytes, and error messages that quote at most ~200
// bytes of what was sent.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <limits>

#include "swarm/v1/coordinator.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"

namespace swarm {
namespace {

class CoordinatorHardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    worker_ = testing::StartWorker(testing::ModelDir("stories260K"), testing::Range(0, 5));
    ASSERT_NE(worker_, nullptr);
    coordinator::CoordinatorOptions options;
    options.max_prompt_bytes = 64;
    coordinator_ = testing::StartCoordinator(testing::ModelDir("stories260K"), {worker_->address()},
                                             true, options);
    ASSERT_NE(coordinator_, nullptr);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    stub_ = v1::CoordinatorService::NewStub(grpc::CreateCustomChannel(
        coordinator_->address(), grpc::InsecureChannelCredentials(), args));
  }

  grpc::Status Generate(const v1::GenerateRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto reader = stub_->Generate(&ctx, req);
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
    }
    return reader->Finish();
  }

  std::unique_ptr<worker::WorkerServer> worker_;
  std::unique_ptr<coordinator::CoordinatorServer> coordinator_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
};

TEST_F(CoordinatorHardeningTest, AnEmptyRequestIsInvalidArgument) {
  EXPECT_EQ(Generate(v1::GenerateRequest()).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest ok;
  ok.set_prompt("Once");
  ok.mutable_sampling()->set_max_new_tokens(2);
  EXPECT_TRUE(Generate(ok).ok());
}

TEST_F(CoordinatorHardeningTest, LengthsThatWouldOverflowAreOutOfRange) {
  v1::GenerateRequest req;
  req.set_prompt("Once");
  req.mutable_sampling()->set_max_new_tokens(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(Generate(req).error_code(), grpc::StatusCode::OUT_OF_RANGE);
  req.clear_prompt();
  req.mutable_prompt_ids()->Add(1);
  EXPECT_EQ(Generate(req).error_code(), grpc::StatusCode::OUT_OF_RANGE);
  // One short of the context is fine arithmetic, and still too long with a prompt.
  req.mutable_sampling()->set_max_new_tokens(512);
  EXPECT_EQ(Generate(req).error_code(), grpc::StatusCode::OUT_OF_RANGE);
}

TEST_F(CoordinatorHardeningTest, ALongPromptIsRefusedBeforeTokenizing) {
  v1::GenerateRequest req;
  req.set_prompt(std::string(3900000, 'a'));
  req.mutable_sampling()->set_max_new_tokens(1);
  grpc::Status s = Generate(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("--max-prompt-bytes"), std::string::npos) << s.error_message();
  EXPECT_LT(s.error_message().size(), 300u);
  req.set_prompt(std::string(65, 'a'));  // The limit is 64 bytes here.
  EXPECT_EQ(Generate(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_prompt(std::string(64, 'a'));
  EXPECT_TRUE(Generate(req).ok());
  EXPECT_EQ(coordinator::DefaultMaxPromptBytes(512), 64 << 10);
  EXPECT_EQ(coordinator::DefaultMaxPromptBytes(32768), 1 << 20);
}

TEST_F(CoordinatorHardeningTest, RequestIdsArePrintableAndShort) {
  v1::GenerateRequest req;
  req.set_prompt("Once");
  req.mutable_sampling()->set_max_new_tokens(1);
  req.set_request_id("job-1\n2026-12-01T00:00:00Z swarm-coordinator: forged line");
  grpc::Status s = Generate(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().find('\n'), std::string::npos) << s.error_message();
  req.set_request_id(std::string(3 << 20, 'x'));
  s = Generate(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(s.error_message().size(), 300u);
  req.set_request_id(std::string(128, 'x'));
  EXPECT_TRUE(Generate(req).ok());
  req.set_request_id(std::string(129, 'x'));
  EXPECT_EQ(Generate(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace swarm
