// WorkerService over the wire (in-process server on 127.0.0.1:0): results against the golden
// hidden states, the step rules, every bad input's gRPC status, limits (sessions, KV budget, idle
// TTL, deadlines, message size) and health.
#include "worker/worker_server.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/host_tensor.h"
#include "common/layer_set.h"
#include "common/metrics_server.h"
#include "coordinator/worker_set.h"
#include "model/checkpoint.h"
#include "model/combine.h"
#include "model/layer_host.h"
#include "model/weights.h"
#include "prometheus/registry.h"
#include "rpc/batch_codec.h"
#include "rpc/channel.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/util/metric_samples.h"
#include "worker/worker_metrics.h"

namespace swarm::worker {
namespace {

using ::swarm::testing::GoldenFloats;
using ::swarm::testing::ModelDir;
using HealthStatus = grpc::health::v1::HealthCheckResponse;

constexpr int64_t kHidden = 64;  // stories260K
constexpr int64_t kContext = 512;

HostTensor Rows(const std::vector<float>& all, int64_t begin, int64_t end) {
  std::vector<float> v(all.begin() + begin * kHidden, all.begin() + end * kHidden);
  return HostTensor::FromFloats({end - begin, kHidden}, v);
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

class WorkerServerTest : public ::testing::Test {
 protected:
  void Start(std::vector<int> layers, SessionLimits limits = {}, bool load = true,
             absl::Duration max_step_time = absl::Minutes(2)) {
    WorkerServerOptions options;
    options.model_dir = ModelDir("stories260K");
    options.layers = std::move(layers);
    options.limits = limits;
    options.reap_interval = absl::Milliseconds(10);
    options.max_step_time = max_step_time;
    options.observer = observer_;
    if (configure_) configure_(&options);
    auto server = WorkerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    if (load) {
      ASSERT_TRUE(server_->Load().ok());
    }
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    stub_ = v1::WorkerService::NewStub(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));
  }

  void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }

  grpc::Status Open(std::string* id, int64_t max_length = 0) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::OpenSessionRequest req;
    req.set_max_length(max_length);
    v1::OpenSessionResponse resp;
    grpc::Status s = stub_->OpenSession(&ctx, req, &resp);
    *id = resp.session_id();
    return s;
  }

  grpc::Status Close(const std::string& id) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::CloseSessionRequest req;
    req.set_session_id(id);
    v1::CloseSessionResponse resp;
    return stub_->CloseSession(&ctx, req, &resp);
  }

  v1::InfoResponse Info() {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::InfoResponse resp;
    EXPECT_TRUE(stub_->Info(&ctx, v1::InfoRequest(), &resp).ok());
    return resp;
  }

  static v1::ForwardRequest Request(const std::string& id, uint64_t step, int64_t start,
                                    std::vector<int> layers, const HostTensor& h) {
    v1::ForwardRequest req;
    req.set_session_id(id);
    req.set_step_id(step);
    req.set_start_position(start);
    req.mutable_layers()->Assign(layers.begin(), layers.end());
    rpc::CopyTensorToProto(h, req.mutable_hidden());
    return req;
  }

  grpc::Status Forward(const v1::ForwardRequest& req, v1::ForwardResponse* resp) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    return stub_->Forward(&ctx, req, resp);
  }

  grpc::Status Forward(const std::string& id, uint64_t step, int64_t start, std::vector<int> layers,
                       const HostTensor& h, std::vector<float>* out = nullptr) {
    v1::ForwardResponse resp;
    grpc::Status s = Forward(Request(id, step, start, std::move(layers), h), &resp);
    if (s.ok() && out != nullptr) {
      auto t = rpc::MoveTensorFromProto(resp.mutable_hidden(), 2, "reply");
      EXPECT_TRUE(t.ok()) << t.status();
      if (t.ok()) *out = t->ToFloats();
    }
    return s;
  }

  WorkerObserver* observer_ = nullptr;
  std::function<void(WorkerServerOptions*)> configure_;  // Runs on the options in Start().
  std::unique_ptr<WorkerServer> server_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

TEST_F(WorkerServerTest, ReportsIdentityAndServesOnlyAfterLoading) {
  Start({0, 1, 2}, {}, /*load=*/false);
  v1::InfoResponse info = Info();
  EXPECT_FALSE(info.ready());
  EXPECT_EQ(info.model_fingerprint(), server_->checkpoint().config().Fingerprint());
  EXPECT_EQ(info.num_layers(), 5);
  EXPECT_EQ(std::vector<int>(info.layers().begin(), info.layers().end()),
            std::vector<int>({0, 1, 2}));
  EXPECT_EQ(info.device(), "cpu");
  EXPECT_EQ(swarm::testing::Health(server_->address(), ""), HealthStatus::NOT_SERVING);
  EXPECT_EQ(swarm::testing::Health(server_->address(), "swarm.v1.WorkerService"),
            HealthStatus::NOT_SERVING);
  std::string id;
  EXPECT_EQ(Open(&id).error_code(), grpc::StatusCode::UNAVAILABLE);

  ASSERT_TRUE(server_->Load().ok());
  info = Info();
  EXPECT_TRUE(info.ready());
  EXPECT_EQ(info.dtype(), v1::DTYPE_F32);
  EXPECT_EQ(info.weight_format(), "");  // Not quantized.
  EXPECT_GT(info.weight_bytes(), 0);
  EXPECT_GT(info.kv_bytes_per_token(), 0);
  EXPECT_EQ(swarm::testing::Health(server_->address(), ""), HealthStatus::SERVING);
  EXPECT_EQ(swarm::testing::Health(server_->address(), "swarm.v1.WorkerService"),
            HealthStatus::SERVING);
  const std::string services = swarm::testing::ReflectionListServices(server_->address());
  EXPECT_NE(services.find("swarm.v1.WorkerService"), std::string::npos) << services;
  EXPECT_NE(services.find("grpc.health.v1.Health"), std::string::npos) << services;
}

// A q8 worker says so: `swarm status` shows its DTYPE as q8, not as the f32 it computes in.
TEST_F(WorkerServerTest, AQuantizedWorkerReportsItsWeightFormat) {
  configure_ = [](WorkerServerOptions* o) { o->load.quant = WeightQuant::kQ8; };
  Start({0, 1});
  const v1::InfoResponse info = Info();
  EXPECT_TRUE(info.ready());
  EXPECT_EQ(info.dtype(), v1::DTYPE_F32);
  EXPECT_EQ(info.weight_format(), "q8");
}

TEST_F(WorkerServerTest, PrefillAndDecodeStepsMatchTheGoldenHiddenStates) {
  Start({0, 1, 2});
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  const std::vector<float> h3 = GoldenFloats("stories260K", "greedy.hidden.3");
  const int64_t t = static_cast<int64_t>(h0.size()) / kHidden;
  ASSERT_GT(t, 4);
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  // Prefill all but the last position, then one decode step: the same numbers as one pass.
  std::vector<float> out, last;
  ASSERT_TRUE(Forward(id, 1, 0, {0, 1, 2}, Rows(h0, 0, t - 1), &out).ok());
  ASSERT_TRUE(Forward(id, 2, t - 1, {0, 1, 2}, Rows(h0, t - 1, t), &last).ok());
  out.insert(out.end(), last.begin(), last.end());
  EXPECT_LT(MaxAbsDiff(out, h3), 1e-4);
  EXPECT_TRUE(Close(id).ok());
  EXPECT_EQ(Close(id).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkerServerTest, GateIsAppliedThroughTheOneCombineRule) {
  // ForwardRequest.gate g: the layers run ungated and the reply is h + g·(layers(h) − h), computed
  // by model::GateResidual (the function every sparse path uses), to the bit.
  Start({0, 1, 2});
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  const int64_t t = static_cast<int64_t>(h0.size()) / kHidden;
  const HostTensor h = Rows(h0, 0, t);
  std::string plain_id, gated_id;
  ASSERT_TRUE(Open(&plain_id).ok());
  ASSERT_TRUE(Open(&gated_id).ok());
  std::vector<float> plain, gated;
  ASSERT_TRUE(Forward(plain_id, 1, 0, {0, 1, 2}, h, &plain).ok());
  v1::ForwardRequest req = Request(gated_id, 1, 0, {0, 1, 2}, h);
  req.set_gate(0.5f);
  v1::ForwardResponse resp;
  ASSERT_TRUE(Forward(req, &resp).ok());
  auto reply = rpc::MoveTensorFromProto(resp.mutable_hidden(), 2, "reply");
  ASSERT_TRUE(reply.ok()) << reply.status();
  gated = reply->ToFloats();
  auto expected = model::GateResidual(h, HostTensor::FromFloats({t, kHidden}, plain), 0.5f);
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(gated, expected->ToFloats());
  std::vector<float> by_hand(plain.size());
  for (size_t i = 0; i < plain.size(); ++i) by_hand[i] = h0[i] + 0.5f * (plain[i] - h0[i]);
  EXPECT_LT(MaxAbsDiff(gated, by_hand), 1e-5);
  EXPECT_GT(MaxAbsDiff(gated, plain), 1e-3);
}

TEST_F(WorkerServerTest, NonContiguousLayersInSeparateStepsOfOneSession) {
  // Layers 0-1 then (elsewhere) 2, then 3-4 here again: the worker keeps one session for both.
  Start({0, 1, 3, 4});
  auto other = swarm::testing::StartWorker(ModelDir("stories260K"), {2});
  const std::vector<float> h0 = GoldenFloats("stories260K", "prompt.hidden.0");
  const std::vector<float> h2 = GoldenFloats("stories260K", "prompt.hidden.2");
  const std::vector<float> h3 = GoldenFloats("stories260K", "prompt.hidden.3");
  const int64_t t = static_cast<int64_t>(h0.size()) / kHidden;
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  std::vector<float> out;
  ASSERT_TRUE(Forward(id, 1, 0, {0, 1}, Rows(h0, 0, t), &out).ok());
  EXPECT_LT(MaxAbsDiff(out, h2), 1e-4);
  // Layer 3 of this worker needs the input of layer 3 (golden hidden.3), at position 0.
  ASSERT_TRUE(Forward(id, 2, 0, {3, 4}, Rows(h3, 0, t), &out).ok());
  EXPECT_EQ(out.size(), static_cast<size_t>(t * kHidden));
  // Running layers 0-1 again at position 0 is out of order now.
  EXPECT_EQ(Forward(id, 3, 0, {0, 1}, Rows(h0, 0, t)).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(WorkerServerTest, StreamedStepInPiecesEqualsUnaryStep) {
  Start({0, 1, 2});
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  const std::vector<float> h3 = GoldenFloats("stories260K", "greedy.hidden.3");
  const int64_t t = static_cast<int64_t>(h0.size()) / kHidden;
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->ForwardStream(&ctx);
  v1::ForwardRequest first = Request(id, 1, 0, {0, 1, 2}, Rows(h0, 0, t));
  const std::string data = first.hidden().data();
  // Uneven pieces: the server must not care where the cuts are.
  first.mutable_hidden()->set_data(data.substr(0, 1000));
  ASSERT_TRUE(stream->Write(first));
  for (size_t off = 1000; off < data.size(); off += 777) {
    v1::ForwardRequest piece;
    piece.mutable_hidden()->set_data(data.substr(off, 777));
    ASSERT_TRUE(stream->Write(piece));
  }
  stream->WritesDone();
  v1::ForwardResponse resp;
  std::string reply;
  v1::ForwardResponse header;
  int pieces = 0;
  while (stream->Read(&resp)) {
    if (pieces++ == 0) header = resp;
    reply += resp.hidden().data();
  }
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_EQ(header.step_id(), 1u);
  EXPECT_EQ(header.length(), t);
  header.mutable_hidden()->set_data(reply);
  auto out = rpc::MoveTensorFromProto(header.mutable_hidden(), 2, "reply");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LT(MaxAbsDiff(out->ToFloats(), h3), 1e-4);
}

TEST_F(WorkerServerTest, StreamEndingEarlyIsInvalidArgument) {
  Start({0});
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->ForwardStream(&ctx);
  v1::ForwardRequest first =
      Request(id, 1, 0, {0}, HostTensor::FromFloats({4, kHidden}, std::vector<float>(256)));
  first.mutable_hidden()->mutable_data()->resize(100);  // 924 bytes never come.
  ASSERT_TRUE(stream->Write(first));
  stream->WritesDone();
  v1::ForwardResponse resp;
  while (stream->Read(&resp)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

class BadInputTest : public WorkerServerTest {
 protected:
  void SetUp() override {
    Start({0, 1, 2});
    ASSERT_TRUE(Open(&id_).ok());
    one_ = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden, 0.5f));
  }
  std::string id_;
  HostTensor one_;
};

TEST_F(BadInputTest, WrongHiddenSize) {
  auto h = HostTensor::FromFloats({1, kHidden + 1}, std::vector<float>(kHidden + 1));
  grpc::Status s = Forward(id_, 1, 0, {0}, h);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  auto flat = HostTensor::FromFloats({kHidden}, std::vector<float>(kHidden));
  EXPECT_EQ(Forward(id_, 1, 0, {0}, flat).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInputTest, WrongDtype) {
  for (int dtype : {static_cast<int>(v1::DTYPE_UNSPECIFIED), 99}) {
    v1::ForwardRequest req = Request(id_, 1, 0, {0}, one_);
    req.mutable_hidden()->set_dtype(static_cast<v1::DType>(dtype));
    v1::ForwardResponse resp;
    grpc::Status s = Forward(req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << dtype << s.error_message();
  }
  // bf16 bytes labelled as such are accepted and answered in bf16.
  v1::ForwardRequest req = Request(id_, 1, 0, {0}, one_);
  req.mutable_hidden()->set_dtype(v1::DTYPE_BF16);
  req.mutable_hidden()->mutable_data()->resize(kHidden * 2);
  v1::ForwardResponse resp;
  ASSERT_TRUE(Forward(req, &resp).ok());
  EXPECT_EQ(resp.hidden().dtype(), v1::DTYPE_BF16);
  EXPECT_EQ(resp.hidden().data().size(), static_cast<size_t>(kHidden * 2));
}

TEST_F(BadInputTest, WrongByteCount) {
  v1::ForwardRequest req = Request(id_, 1, 0, {0}, one_);
  req.mutable_hidden()->mutable_data()->pop_back();
  v1::ForwardResponse resp;
  grpc::Status s = Forward(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("bytes"), std::string::npos) << s.error_message();
}

TEST_F(BadInputTest, PositionBeyondTheContext) {
  grpc::Status s = Forward(id_, 1, kContext, {0}, one_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  auto two = HostTensor::FromFloats({2, kHidden}, std::vector<float>(2 * kHidden));
  EXPECT_EQ(Forward(id_, 1, kContext - 1, {0}, two).error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(Forward(id_, 1, -1, {0}, one_).error_code(), grpc::StatusCode::OUT_OF_RANGE);
}

TEST_F(BadInputTest, UnknownSession) {
  EXPECT_EQ(Forward("no-such-session", 1, 0, {0}, one_).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(BadInputTest, LayersNotHostedOrMalformed) {
  EXPECT_EQ(Forward(id_, 1, 0, {3}, one_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Forward(id_, 1, 0, {}, one_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Forward(id_, 1, 0, {1, 0}, one_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Forward(id_, 1, 0, {0, 0}, one_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInputTest, StepAtTheWrongPositionIsNotApplied) {
  EXPECT_EQ(Forward(id_, 1, 5, {0}, one_).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // Nothing was written: the step at the right position still works.
  ASSERT_TRUE(Forward(id_, 1, 0, {0}, one_).ok());
  EXPECT_EQ(Forward(id_, 2, 0, {0}, one_).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Forward(id_, 2, 2, {0}, one_).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(Forward(id_, 2, 1, {0}, one_).ok());
}

TEST_F(BadInputTest, DuplicatedStepGetsTheCachedReplyAndIsNotAppliedTwice) {
  std::vector<float> first, again;
  ASSERT_TRUE(Forward(id_, 1, 0, {0, 1}, one_, &first).ok());
  v1::ForwardResponse resp;
  ASSERT_TRUE(Forward(Request(id_, 1, 0, {0, 1}, one_), &resp).ok());
  EXPECT_TRUE(resp.replayed());
  EXPECT_EQ(resp.length(), 1);
  auto t = rpc::MoveTensorFromProto(resp.mutable_hidden(), 2, "reply");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ToFloats(), first);
  // Not applied again: the next position is still 1.
  EXPECT_TRUE(Forward(id_, 2, 1, {0, 1}, one_).ok());
  // An older step id, or the last id with different contents, is ALREADY_EXISTS.
  EXPECT_EQ(Forward(id_, 1, 0, {0, 1}, one_).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Forward(id_, 2, 5, {0, 1}, one_).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Forward(id_, 0, 2, {0, 1}, one_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInputTest, NonFiniteGate) {
  v1::ForwardRequest req = Request(id_, 1, 0, {0}, one_);
  req.set_gate(std::numeric_limits<float>::infinity());
  v1::ForwardResponse resp;
  EXPECT_EQ(Forward(req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BadInputTest, MessageOverFourMebibytesIsRefused) {
  const int64_t rows = (5 << 20) / (kHidden * 4);
  auto big = HostTensor::FromFloats({rows, kHidden}, std::vector<float>(rows * kHidden));
  EXPECT_EQ(Forward(id_, 1, 0, {0}, big).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(WorkerServerTest, SessionLimit) {
  SessionLimits limits;
  limits.max_sessions = 2;
  Start({0}, limits);
  std::string a, b, c;
  ASSERT_TRUE(Open(&a).ok());
  ASSERT_TRUE(Open(&b).ok());
  EXPECT_EQ(Open(&c).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Close(a).ok());
  EXPECT_TRUE(Open(&c).ok());
}

TEST_F(WorkerServerTest, KvBudgetAtOpenAndWhenGrowing) {
  SessionLimits limits;
  Start({0}, limits, /*load=*/false);
  ASSERT_TRUE(server_->Load().ok());
  const int64_t per_token = server_->worker()->host().KvBytesPerToken();
  // Restart with a budget of 100 positions.
  limits.kv_budget_bytes = 100 * per_token;
  Start({0}, limits);
  std::string a, b, c;
  ASSERT_TRUE(Open(&a, 60).ok());
  grpc::Status s = Open(&b, 60);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  ASSERT_TRUE(Open(&b, 40).ok());
  EXPECT_EQ(Info().kv_reserved_bytes(), 100 * per_token);
  // Session a reserved 60 positions; growing it to 61 does not fit.
  auto h60 = HostTensor::FromFloats({60, kHidden}, std::vector<float>(60 * kHidden));
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden));
  ASSERT_TRUE(Forward(a, 1, 0, {0}, h60).ok());
  EXPECT_EQ(Forward(a, 2, 60, {0}, one).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Close(b).ok());
  EXPECT_TRUE(Forward(a, 2, 60, {0}, one).ok());
  EXPECT_EQ(Open(&c, 0).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);  // 0 = context.
}

TEST_F(WorkerServerTest, IdleSessionsAreReaped) {
  SessionLimits limits;
  limits.idle_ttl = absl::Milliseconds(100);
  Start({0}, limits);
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  EXPECT_EQ(Info().sessions(), 1);
  absl::SleepFor(absl::Milliseconds(400));
  EXPECT_EQ(Info().sessions(), 0);
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden));
  EXPECT_EQ(Forward(id, 1, 0, {0}, one).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkerServerTest, StepPastItsDeadlineIsNotRun) {
  Start({0}, {}, /*load=*/true, /*max_step_time=*/absl::Nanoseconds(1));
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden));
  EXPECT_EQ(Forward(id, 1, 0, {0}, one).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Info().steps_total(), 0u);
}

TEST_F(WorkerServerTest, ShutdownWithAnIdleClientConnectionIsPrompt) {
  Start({0});
  EXPECT_TRUE(Info().ready());  // Leaves an open, idle connection.
  const absl::Time start = absl::Now();
  server_->Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

class CountingObserver : public WorkerObserver {
 public:
  void OnForward(absl::Span<const int> layers, int64_t positions, double /*seconds*/,
                 absl::StatusCode code) override {
    absl::MutexLock lock(&mu);
    steps.push_back(
        absl::StrCat(FormatLayers(layers), ":", positions, ":", absl::StatusCodeToString(code)));
  }
  void SetReady(bool r) override { ready = r; }
  void SetSessions(const WorkerStats& s, int64_t) override { sessions = s.sessions; }
  absl::Mutex mu;
  std::vector<std::string> steps;
  std::atomic<bool> ready{false};
  std::atomic<int> sessions{-1};
};

TEST_F(WorkerServerTest, ObserverSeesStepsSessionsAndReadiness) {
  CountingObserver observer;
  observer_ = &observer;
  Start({0, 1});
  EXPECT_TRUE(observer.ready);
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  auto two = HostTensor::FromFloats({2, kHidden}, std::vector<float>(2 * kHidden));
  ASSERT_TRUE(Forward(id, 1, 0, {0, 1}, two).ok());
  EXPECT_FALSE(Forward(id, 2, 0, {0, 1}, two).ok());
  {
    absl::MutexLock lock(&observer.mu);
    EXPECT_EQ(observer.steps, std::vector<std::string>({"0-1:2:OK", "0-1:2:FAILED_PRECONDITION"}));
  }
  absl::SleepFor(absl::Milliseconds(100));  // A reap interval refreshes the gauges.
  EXPECT_EQ(observer.sessions, 1);
  server_->Shutdown();
  EXPECT_FALSE(observer.ready);
}

// The samples of an observer's metric set.
std::map<std::string, double> Samples(WorkerMetricsObserver& m) {
  return test_util::Samples(*m.metrics().registry());
}
using test_util::Value;

std::string ErrorsKey(const std::string& method, const std::string& code) {
  return absl::StrCat("swarm_worker_errors_total{code=\"", code, "\",method=\"", method, "\"}");
}

std::unique_ptr<WorkerMetricsObserver> StartMetrics(const std::vector<int>& layers) {
  WorkerMetricsObserver::Options o;
  o.listen = "127.0.0.1:0";
  o.layers = layers;
  auto m = WorkerMetricsObserver::Start(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

grpc::Status StreamedForward(v1::WorkerService::Stub* stub, const v1::ForwardRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ForwardStream(&ctx);
  stream->Write(req);
  stream->WritesDone();
  v1::ForwardResponse resp;
  while (stream->Read(&resp)) {
  }
  return stream->Finish();
}

// The bytes the streamed requests still arriving hold, as /metrics shows them.
double BufferedBytes(WorkerMetricsObserver& m) {
  return Value(Samples(m), "swarm_worker_stream_buffered_bytes");
}

// Waits (at most 10 s) until `done` holds.
bool WaitFor(const std::function<bool()>& done) {
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (!done() && absl::Now() < end) absl::SleepFor(absl::Milliseconds(5));
  return done();
}

// A sender that sends the first piece of a request and then nothing, its own deadline a minute
// away: the worker ends the call with DEADLINE_EXCEEDED once --stream-arrival-timeout has passed
// since that piece, and frees the whole-context buffer the piece made it reserve.
TEST_F(WorkerServerTest, StreamStillArrivingAfterItsArrivalTimeoutIsEndedAndFreed) {
  std::unique_ptr<WorkerMetricsObserver> metrics = StartMetrics({0});
  ASSERT_NE(metrics, nullptr);
  observer_ = metrics.get();
  constexpr absl::Duration kArrival = absl::Milliseconds(300);
  configure_ = [=](WorkerServerOptions* o) { o->max_arrival_time = kArrival; };
  Start({0});
  std::string id;
  ASSERT_TRUE(Open(&id).ok());
  const HostTensor whole =
      HostTensor::FromFloats({kContext, kHidden}, std::vector<float>(kContext * kHidden, 0.5f));
  const double reserved = static_cast<double>(whole.data.size());
  auto far_deadline = [](grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  };
  {
    grpc::ClientContext ctx;
    far_deadline(&ctx);
    auto stream = stub_->ForwardStream(&ctx);
    v1::ForwardRequest first = Request(id, 1, 0, {0}, whole);
    first.mutable_hidden()->mutable_data()->resize(1000);  // The rest never comes.
    const absl::Time sent = absl::Now();
    ASSERT_TRUE(stream->Write(first));
    EXPECT_TRUE(WaitFor([&] { return BufferedBytes(*metrics) >= reserved; }))
        << BufferedBytes(*metrics);
    v1::ForwardResponse resp;
    EXPECT_FALSE(stream->Read(&resp));  // Until the worker ends the call.
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_NE(s.error_message().find("--stream-arrival-timeout"), std::string::npos)
        << s.error_message();
    EXPECT_GE(absl::Now() - sent, kArrival);
    EXPECT_EQ(BufferedBytes(*metrics), 0);
  }
  {
    grpc::ClientContext ctx;
    far_deadline(&ctx);
    auto stream = stub_->ForwardBatchStream(&ctx);
    v1::ForwardBatchRequest first;
    first.add_layers(0);
    v1::BatchStep* step = first.add_steps();
    step->set_session_id(id);
    step->set_step_id(1);
    step->set_positions(kContext);
    rpc::CopyTensorToProto(whole, first.mutable_hidden());
    first.mutable_hidden()->mutable_data()->resize(whole.data.size() - 4);  // One value short.
    const absl::Time sent = absl::Now();
    ASSERT_TRUE(stream->Write(first));
    v1::ForwardBatchResponse resp;
    EXPECT_FALSE(stream->Read(&resp));
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
    EXPECT_NE(s.error_message().find("4 bytes still missing"), std::string::npos)
        << s.error_message();
    EXPECT_GE(absl::Now() - sent, kArrival);
    EXPECT_EQ(BufferedBytes(*metrics), 0);
  }
  // A request whose pieces all arrive is served, and leaves nothing counted as arriving.
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden, 0.5f));
  EXPECT_TRUE(StreamedForward(stub_.get(), Request(id, 1, 0, {0}, one)).ok());
  EXPECT_EQ(BufferedBytes(*metrics), 0);
  auto s = Samples(*metrics);
  EXPECT_EQ(Value(s, ErrorsKey("Forward", "deadline_exceeded")), 1);
  EXPECT_EQ(Value(s, ErrorsKey("ForwardBatch", "deadline_exceeded")), 1);
  server_.reset();  // Before the observer goes.
}

TEST_F(WorkerServerTest, CallsRefusedBeforeTheWorkerRanThemCountAsErrors) {
  std::unique_ptr<WorkerMetricsObserver> metrics = StartMetrics({0});
  ASSERT_NE(metrics, nullptr);
  observer_ = metrics.get();
  // No queue at all: every step that goes to the compute pool is refused as overloaded.
  configure_ = [](WorkerServerOptions* o) {
    o->max_inline_step_bytes = 0;
    o->max_queued_steps = 0;
  };
  Start({0}, {}, /*load=*/false);
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden));
  std::string id;
  // Still loading.
  EXPECT_EQ(Forward("any", 1, 0, {0}, one).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Open(&id).error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(server_->Load().ok());
  ASSERT_TRUE(Open(&id).ok());
  // The pool is full, for a unary and a streamed step.
  EXPECT_EQ(Forward(id, 1, 0, {0}, one).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(StreamedForward(stub_.get(), Request(id, 1, 0, {0}, one)).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);

  // A malformed tensor and a deadline that passed before the step could start.
  configure_ = nullptr;
  Start({0}, {}, /*load=*/true, /*max_step_time=*/absl::Nanoseconds(1));
  ASSERT_TRUE(Open(&id).ok());
  v1::ForwardRequest bad = Request(id, 1, 0, {0}, one);
  bad.mutable_hidden()->mutable_data()->pop_back();
  v1::ForwardResponse resp;
  EXPECT_EQ(Forward(bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Forward(id, 1, 0, {0}, one).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  auto s = Samples(*metrics);
  EXPECT_EQ(Value(s, ErrorsKey("Forward", "unavailable")), 1);
  EXPECT_EQ(Value(s, ErrorsKey("OpenSession", "unavailable")), 1);
  EXPECT_EQ(Value(s, ErrorsKey("Forward", "resource_exhausted")), 2);
  EXPECT_EQ(Value(s, ErrorsKey("Forward", "invalid_argument")), 1);
  EXPECT_EQ(Value(s, ErrorsKey("Forward", "deadline_exceeded")), 1);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-0\"}"), 0);
  server_.reset();  // Before the observer goes.
}

TEST_F(WorkerServerTest, KvGaugesExportReservedAndUsedBytes) {
  std::unique_ptr<WorkerMetricsObserver> metrics = StartMetrics({0});
  ASSERT_NE(metrics, nullptr);
  observer_ = metrics.get();
  Start({0, 1});
  const int64_t per_token = server_->worker()->host().KvBytesPerToken();
  // Reserved across both hosted layers; a step over layer 0 alone allocates only its cache (as a
  // sparse plan running one block of a worker does), a session that has not stepped nothing.
  std::string a, b;
  ASSERT_TRUE(Open(&a, 100).ok());
  ASSERT_TRUE(Open(&b, 100).ok());
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden));
  ASSERT_TRUE(Forward(a, 1, 0, {0}, one).ok());
  absl::SleepFor(absl::Milliseconds(100));  // A reap interval refreshes the gauges.
  auto s = Samples(*metrics);
  // The budget refuses on the reservation, well above what the caches hold.
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_reserved_bytes"), 200 * per_token);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_bytes"), 50 * per_token);
  server_.reset();
}

TEST_F(WorkerServerTest, DrainingWorkerTakesNoNewSessionsButServesOpenOnes) {
  Start(swarm::testing::Range(0, 5));
  coordinator::WorkerSet set({server_->address()}, server_->checkpoint().config().Fingerprint(), 5);
  set.Refresh(absl::Seconds(10));
  ASSERT_TRUE(set.Snapshot()[0].usable()) << set.Snapshot()[0].error;
  ASSERT_TRUE(set.Coverage().ok());
  auto one = HostTensor::FromFloats({1, kHidden}, std::vector<float>(kHidden));
  std::string open;
  ASSERT_TRUE(Open(&open).ok());
  ASSERT_TRUE(Forward(open, 1, 0, {0}, one).ok());

  server_->StartDraining();
  server_->StartDraining();  // Idempotent.
  EXPECT_TRUE(server_->draining());
  v1::InfoResponse info = Info();
  EXPECT_FALSE(info.ready());
  EXPECT_TRUE(info.draining());
  EXPECT_EQ(info.sessions(), 1);
  EXPECT_EQ(swarm::testing::Health(server_->address(), ""), HealthStatus::NOT_SERVING);
  std::string id;
  grpc::Status s = Open(&id);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("draining"), std::string::npos) << s.error_message();
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::PrefetchRequest req;
    req.add_layers(0);
    v1::PrefetchResponse resp;
    EXPECT_EQ(stub_->Prefetch(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  // The session that was open finishes its request.
  EXPECT_TRUE(Forward(open, 2, 1, {0}, one).ok());
  // An open session holds a drain until the grace passes, or until the waiter gives up.
  using DrainEnd = WorkerServer::DrainEnd;
  EXPECT_EQ(server_->WaitForSessionsToEnd(absl::Milliseconds(300)), DrainEnd::kGraceExpired);
  int waits = 0;
  EXPECT_EQ(server_->WaitForSessionsToEnd(absl::Seconds(60),
                                          [&waits](absl::Duration) { return ++waits == 3; }),
            DrainEnd::kInterrupted);
  EXPECT_EQ(waits, 3);
  ASSERT_TRUE(Forward(open, 3, 2, {0}, one).ok());
  EXPECT_TRUE(Close(open).ok());
  // No session: at once, whatever the grace.
  EXPECT_EQ(server_->WaitForSessionsToEnd(absl::Hours(1)), DrainEnd::kNoSessions);

  // What the coordinator makes of it: not usable, so no new request is routed here.
  set.Refresh(absl::Seconds(10));
  const coordinator::WorkerState state = set.Snapshot()[0];
  EXPECT_TRUE(state.reachable);
  EXPECT_FALSE(state.usable());
  EXPECT_NE(state.error.find("draining"), std::string::npos) << state.error;
  EXPECT_EQ(set.Coverage().code(), absl::StatusCode::kUnavailable);
}

// A scratch directory with fake /proc/meminfo and cgroup v2 files (8 GiB available on the node).
class FakeMemoryFiles {
 public:
  FakeMemoryFiles() : dir_(absl::StrCat(::testing::TempDir(), "swarm-kv-memory-", getpid())) {
    std::system(absl::StrCat("rm -rf '", dir_, "' && mkdir -p '", dir_, "'").c_str());
    files_.meminfo = dir_ + "/meminfo";
    files_.cgroup_v2_max = dir_ + "/memory.max";
    files_.cgroup_v2_current = dir_ + "/memory.current";
    files_.cgroup_v1_limit = dir_ + "/v1/memory.limit_in_bytes";
    files_.cgroup_v1_usage = dir_ + "/v1/memory.usage_in_bytes";
    Write(files_.meminfo, "MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\n");
  }
  ~FakeMemoryFiles() { std::system(absl::StrCat("rm -rf '", dir_, "'").c_str()); }
  void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
  const MemoryFiles& files() const { return files_; }

 private:
  std::string dir_;
  MemoryFiles files_;
};

TEST_F(WorkerServerTest, DefaultKvBudgetIsSizedFromTheCgroupOnceLoaded) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  FakeMemoryFiles fake;
  fake.Write(fake.files().cgroup_v2_max, "1073741824\n");     // The pod's 1 GiB limit...
  fake.Write(fake.files().cgroup_v2_current, "268435456\n");  // ...of which 256 MiB are used.
  std::unique_ptr<WorkerMetricsObserver> metrics = StartMetrics({0});
  ASSERT_NE(metrics, nullptr);
  observer_ = metrics.get();
  configure_ = [&fake](WorkerServerOptions* o) {
    o->kv_budget_memory_fraction = 0.5;
    o->memory_files = fake.files();
  };
  Start({0});
  // Half of min(8 GiB available on the node, 1 GiB - 256 MiB left in the cgroup).
  EXPECT_EQ(server_->kv_budget_bytes(), 384 * kMiB);
  EXPECT_EQ(Info().kv_budget_bytes(), 384 * kMiB);
  EXPECT_EQ(Value(Samples(*metrics), "swarm_worker_kv_cache_budget_bytes"), 384 * kMiB);

  // A limit that cannot be read stops the load, naming the file and the flag to set.
  fake.Write(fake.files().cgroup_v2_max, "lots\n");
  Start({0}, {}, /*load=*/false);
  absl::Status s = server_->Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find(fake.files().cgroup_v2_max), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("--kv-budget"), absl::string_view::npos) << s;
  v1::InfoResponse info = Info();
  EXPECT_FALSE(info.ready());
  EXPECT_NE(info.load_error().find("memory.max"), std::string::npos) << info.load_error();

  // A cgroup already full leaves no room: refused at load, not an unlimited budget.
  fake.Write(fake.files().cgroup_v2_max, "268435456\n");
  Start({0}, {}, /*load=*/false);
  s = server_->Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("does not hold one position"), absl::string_view::npos) << s;
  server_.reset();
}

// --- ForwardBatch / ForwardBatchStream over the wire.

// Steps of a batch: session, step id, start position, positions.
std::vector<rpc::BatchStepSpec> Specs(std::vector<rpc::BatchStepSpec> steps) { return steps; }

// The rows of `steps` from the golden tensor `all` (each step's positions from its start).
HostTensor BatchRows(const std::vector<float>& all, const std::vector<rpc::BatchStepSpec>& steps) {
  HostTensor h = HostTensor::FromFloats({0, kHidden}, {});
  for (const rpc::BatchStepSpec& s : steps) {
    const HostTensor rows = Rows(all, s.start_position, s.start_position + s.positions);
    h.shape[0] += s.positions;
    h.data += rows.data;
  }
  return h;
}

class ForwardBatchServerTest : public WorkerServerTest {
 protected:
  // One unary ForwardBatch; on OK, the reply split per step.
  grpc::Status Batch(const std::vector<rpc::BatchStepSpec>& steps, std::vector<int> layers,
                     HostTensor hidden, std::vector<rpc::BatchStepReply>* replies = nullptr) {
    std::vector<v1::ForwardBatchRequest> m = rpc::EncodeForwardBatch(steps, layers, hidden);
    EXPECT_EQ(m.size(), 1u);
    return Unary(m[0], steps, replies);
  }
  grpc::Status Unary(const v1::ForwardBatchRequest& req,
                     const std::vector<rpc::BatchStepSpec>& steps,
                     std::vector<rpc::BatchStepReply>* replies) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::ForwardBatchResponse resp;
    grpc::Status s = stub_->ForwardBatch(&ctx, req, &resp);
    if (s.ok() && replies != nullptr) {
      auto hidden = rpc::MoveTensorFromProto(resp.mutable_hidden(), 2, "reply");
      EXPECT_TRUE(hidden.ok()) << hidden.status();
      if (!hidden.ok()) return s;
      auto split = rpc::SplitForwardBatchResponse(steps, resp, *hidden, kHidden, DType::kF32);
      EXPECT_TRUE(split.ok()) << split.status();
      if (split.ok()) *replies = *std::move(split);
    }
    return s;
  }
  // One ForwardBatchStream call with the pieces EncodeForwardBatch makes (or `pieces` as given).
  grpc::Status Streamed(const std::vector<rpc::BatchStepSpec>& steps, std::vector<int> layers,
                        HostTensor hidden, std::vector<rpc::BatchStepReply>* replies,
                        size_t* reply_pieces = nullptr) {
    std::vector<v1::ForwardBatchRequest> m = rpc::EncodeForwardBatch(steps, layers, hidden);
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    auto stream = stub_->ForwardBatchStream(&ctx);
    for (const v1::ForwardBatchRequest& piece : m) {
      if (!stream->Write(piece)) break;
    }
    stream->WritesDone();
    rpc::PieceAssembler<v1::ForwardBatchResponse> assembler(int64_t{1} << 30, "reply");
    v1::ForwardBatchResponse piece;
    size_t n = 0;
    while (stream->Read(&piece)) {
      ++n;
      EXPECT_TRUE(assembler.Add(&piece).ok());
    }
    grpc::Status s = stream->Finish();
    if (reply_pieces != nullptr) *reply_pieces = n;
    if (s.ok() && replies != nullptr) {
      EXPECT_TRUE(assembler.complete());
      HostTensor h = assembler.TakeHidden();
      auto split =
          rpc::SplitForwardBatchResponse(steps, assembler.header(), h, kHidden, DType::kF32);
      EXPECT_TRUE(split.ok()) << split.status();
      if (split.ok()) *replies = *std::move(split);
    }
    return s;
  }
};

TEST_F(ForwardBatchServerTest, SessionsAtDifferentPositionsGetWhatTheyGetAlone) {
  Start({0, 1, 2});
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  const std::vector<float> h3 = GoldenFloats("stories260K", "greedy.hidden.3");
  std::vector<std::string> ids(4), alone(3);
  for (std::string& id : ids) ASSERT_TRUE(Open(&id).ok());
  for (std::string& id : alone) ASSERT_TRUE(Open(&id).ok());
  // Sessions 0 and 1 are some way in already (through Forward), 2 is new.
  ASSERT_TRUE(Forward(ids[0], 1, 0, {0, 1, 2}, Rows(h0, 0, 9)).ok());
  ASSERT_TRUE(Forward(ids[1], 1, 0, {0, 1, 2}, Rows(h0, 0, 3)).ok());
  ASSERT_TRUE(Forward(alone[0], 1, 0, {0, 1, 2}, Rows(h0, 0, 9)).ok());
  ASSERT_TRUE(Forward(alone[1], 1, 0, {0, 1, 2}, Rows(h0, 0, 3)).ok());
  // A decode row, a prefill chunk, a first chunk, and a session that does not exist.
  const auto steps =
      Specs({{ids[0], 2, 9, 1}, {ids[1], 2, 3, 6}, {ids[2], 1, 0, 5}, {"gone", 1, 0, 2}});
  std::vector<rpc::BatchStepReply> replies;
  grpc::Status s = Batch(steps, {0, 1, 2}, BatchRows(h0, steps), &replies);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(replies.size(), 4u);
  std::vector<float> out;
  ASSERT_TRUE(Forward(alone[0], 2, 9, {0, 1, 2}, Rows(h0, 9, 10), &out).ok());
  EXPECT_LT(MaxAbsDiff(replies[0].hidden.ToFloats(), out), 1e-4);
  ASSERT_TRUE(Forward(alone[1], 2, 3, {0, 1, 2}, Rows(h0, 3, 9), &out).ok());
  EXPECT_LT(MaxAbsDiff(replies[1].hidden.ToFloats(), out), 1e-4);
  ASSERT_TRUE(Forward(alone[2], 1, 0, {0, 1, 2}, Rows(h0, 0, 5), &out).ok());
  EXPECT_LT(MaxAbsDiff(replies[2].hidden.ToFloats(), out), 1e-4);
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(replies[k].status.ok()) << replies[k].status;
    const auto& spec = steps[k];
    EXPECT_EQ(replies[k].length, spec.start_position + spec.positions);
    EXPECT_LT(
        MaxAbsDiff(replies[k].hidden.ToFloats(),
                   Rows(h3, spec.start_position, spec.start_position + spec.positions).ToFloats()),
        1e-4);
  }
  EXPECT_EQ(replies[3].status.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(replies[3].status.message().find("gone"), std::string::npos);

  // The same batch again: every existing step is its session's last one, replayed.
  ASSERT_TRUE(Batch(steps, {0, 1, 2}, BatchRows(h0, steps), &replies).ok());
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(replies[k].replayed) << k;
  v1::InfoResponse info = Info();
  // Passes through the layers: 4 Forward calls before the batch, the batch, 3 Forward calls
  // after it; the replayed batch computed nothing.
  EXPECT_EQ(info.batches_total(), 8u);
  EXPECT_GT(info.busy_seconds_total(), 0);
}

TEST_F(ForwardBatchServerTest, WholeCallErrorsAreTheCallsStatus) {
  Start({0, 1});
  std::string a, b;
  ASSERT_TRUE(Open(&a).ok());
  ASSERT_TRUE(Open(&b).ok());
  auto zeros = [](int64_t rows) {
    return HostTensor::FromFloats({rows, kHidden}, std::vector<float>(rows * kHidden));
  };
  EXPECT_EQ(Batch({{a, 1, 0, 1}, {a, 2, 1, 1}}, {0, 1}, zeros(2)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Batch({}, {0, 1}, zeros(1)).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Batch({{a, 1, 0, 1}, {b, 1, 0, 2}}, {0, 1}, zeros(2)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Batch({{a, 1, 0, 1}}, {0, 3}, zeros(1)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // A malformed tensor: a byte short, or an unknown dtype.
  std::vector<v1::ForwardBatchRequest> m = rpc::EncodeForwardBatch({{a, 1, 0, 1}}, {0}, zeros(1));
  m[0].mutable_hidden()->mutable_data()->pop_back();
  EXPECT_EQ(Unary(m[0], {}, nullptr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  m = rpc::EncodeForwardBatch({{a, 1, 0, 1}}, {0}, zeros(1));
  m[0].mutable_hidden()->set_dtype(static_cast<v1::DType>(99));
  EXPECT_EQ(Unary(m[0], {}, nullptr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // None of it applied: both sessions still take their first steps.
  std::vector<rpc::BatchStepReply> replies;
  ASSERT_TRUE(Batch({{a, 1, 0, 1}, {b, 1, 0, 1}}, {0, 1}, zeros(2), &replies).ok());
  EXPECT_TRUE(replies[0].status.ok() && replies[1].status.ok());
  EXPECT_EQ(Info().steps_total(), 2u);
}

TEST_F(ForwardBatchServerTest, BatchesOverTheMessageLimitAreStreamedInPieces) {
  Start({0});
  // 26 sessions prefilling the whole context (512 rows of 64 floats each): 3.25 MiB, over one
  // piece (3 MiB) but under the 4 MiB message limit.
  constexpr int kSessions = 26;
  std::vector<float> values(kContext * kHidden);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.001f * static_cast<float>(i));
  std::vector<rpc::BatchStepSpec> steps;
  for (int i = 0; i < kSessions; ++i) {
    std::string id;
    ASSERT_TRUE(Open(&id).ok());
    steps.push_back({id, 1, 0, kContext});
  }
  HostTensor hidden = HostTensor::FromFloats({0, kHidden}, {});
  for (int i = 0; i < kSessions; ++i) {
    hidden.data += HostTensor::FromFloats({kContext, kHidden}, values).data;
    hidden.shape[0] += kContext;
  }
  ASSERT_GT(hidden.data.size(), rpc::kMaxTensorPieceBytes);
  ASSERT_LT(hidden.data.size() + 4096, static_cast<size_t>(rpc::kMaxMessageBytes));
  // In one message it would fit the request's limit but its reply would not: refused before
  // anything runs.
  {
    v1::ForwardBatchRequest req = rpc::EncodeForwardBatch(steps, {0}, HostTensor())[0];
    rpc::CopyTensorToProto(hidden, req.mutable_hidden());
    grpc::Status s = Unary(req, steps, nullptr);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find("ForwardBatchStream"), std::string::npos);
    EXPECT_EQ(Info().steps_total(), 0u);
  }
  std::vector<rpc::BatchStepReply> replies;
  size_t reply_pieces = 0;
  grpc::Status s = Streamed(steps, {0}, hidden, &replies, &reply_pieces);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(reply_pieces, 2u);
  ASSERT_EQ(replies.size(), static_cast<size_t>(kSessions));
  // Every session got what one of them gets alone.
  std::string alone;
  ASSERT_TRUE(Open(&alone).ok());
  std::vector<float> expected;
  ASSERT_TRUE(
      Forward(alone, 1, 0, {0}, HostTensor::FromFloats({kContext, kHidden}, values), &expected)
          .ok());
  for (const rpc::BatchStepReply& r : replies) {
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.length, kContext);
    EXPECT_LT(MaxAbsDiff(r.hidden.ToFloats(), expected), 1e-4);
  }
  EXPECT_EQ(Info().steps_total(), static_cast<uint64_t>(kSessions + 1));
}

TEST_F(ForwardBatchServerTest, StreamedBatchesAreBoundedByMaxBatchRows) {
  configure_ = [](WorkerServerOptions* o) { o->max_batch_rows = 600; };  // At least the context.
  Start({0});
  std::string a, b;
  ASSERT_TRUE(Open(&a).ok());
  ASSERT_TRUE(Open(&b).ok());
  auto zeros = [](int64_t rows) {
    return HostTensor::FromFloats({rows, kHidden}, std::vector<float>(rows * kHidden));
  };
  grpc::Status s = Streamed({{a, 1, 0, 300}, {b, 1, 0, 301}}, {0}, zeros(601), nullptr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  std::vector<rpc::BatchStepReply> replies;
  ASSERT_TRUE(Streamed({{a, 1, 0, 300}, {b, 1, 0, 300}}, {0}, zeros(600), &replies).ok());
  EXPECT_TRUE(replies[0].status.ok() && replies[1].status.ok());
}

TEST_F(ForwardBatchServerTest, MetricsCountStepsBatchesAndBusyTime) {
  std::unique_ptr<WorkerMetricsObserver> metrics = StartMetrics({0, 1});
  ASSERT_NE(metrics, nullptr);
  observer_ = metrics.get();
  Start({0, 1});
  std::string a, b, c;
  ASSERT_TRUE(Open(&a).ok());
  ASSERT_TRUE(Open(&b).ok());
  ASSERT_TRUE(Open(&c).ok());
  auto zeros = [](int64_t rows) {
    return HostTensor::FromFloats({rows, kHidden}, std::vector<float>(rows * kHidden));
  };
  std::vector<rpc::BatchStepReply> replies;
  // 3 steps computed in one pass of 7 rows; then 2 of 2 with a third at the wrong position.
  ASSERT_TRUE(Batch({{a, 1, 0, 4}, {b, 1, 0, 2}, {c, 1, 0, 1}}, {0, 1}, zeros(7), &replies).ok());
  ASSERT_TRUE(Batch({{a, 2, 4, 1}, {b, 2, 2, 1}, {c, 2, 5, 1}}, {0, 1}, zeros(3), &replies).ok());
  EXPECT_EQ(replies[2].status.code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Forward(c, 2, 1, {0, 1}, zeros(1)).ok());  // A Forward is a pass of one.
  EXPECT_EQ(Batch({{a, 3, 5, 1}, {a, 4, 6, 1}}, {0, 1}, zeros(2)).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto s = Samples(*metrics);
  EXPECT_EQ(Value(s, "swarm_worker_batch_rows_count"), 3);
  EXPECT_EQ(Value(s, "swarm_worker_batch_rows_sum"), 7 + 2 + 1);
  EXPECT_EQ(Value(s, "swarm_worker_batch_sequences_sum"), 3 + 2 + 1);
  EXPECT_EQ(Value(s, "swarm_worker_batch_sequences_bucket{le=\"2\"}"), 2);
  EXPECT_GT(Value(s, "swarm_worker_busy_seconds_total"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-1\"}"), 3 + 2 + 1);
  EXPECT_EQ(Value(s, "swarm_worker_forward_tokens_total{layers=\"0-1\"}"), 7 + 2 + 1);
  EXPECT_EQ(Value(s, ErrorsKey("Forward", "failed_precondition")), 1);
  EXPECT_EQ(Value(s, ErrorsKey("ForwardBatch", "invalid_argument")), 1);
  const v1::InfoResponse info = Info();
  EXPECT_EQ(info.batches_total(), 3u);
  EXPECT_EQ(info.batch_sequences_total(), 6u);
  EXPECT_EQ(info.batch_rows_total(), 10u);
  EXPECT_EQ(info.steps_total(), 6u);
  server_.reset();
}

TEST_F(ForwardBatchServerTest, BatchesWorkWithAMemoryBudget) {
  // All five layers, room for one at a time; the same batches on an unbudgeted worker.
  Start({0, 1, 2, 3, 4});
  std::unique_ptr<WorkerServer> whole = std::move(server_);
  std::unique_ptr<v1::WorkerService::Stub> whole_stub = std::move(stub_);
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  ASSERT_TRUE(ckpt.ok());
  auto one = model::LayerHost::Create(*ckpt, {0}, model::LoadOptions());
  ASSERT_TRUE(one.ok());
  const int64_t layer = (*one)->WeightBytes();
  configure_ = [layer](WorkerServerOptions* o) { o->memory_budget_bytes = layer; };
  Start({0, 1, 2, 3, 4});
  ASSERT_NE(server_->resident_host(), nullptr);
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  std::vector<std::string> paged_ids(3), whole_ids(3);
  for (std::string& id : paged_ids) ASSERT_TRUE(Open(&id).ok());
  std::swap(stub_, whole_stub);
  for (std::string& id : whole_ids) ASSERT_TRUE(Open(&id).ok());
  std::swap(stub_, whole_stub);
  const std::vector<std::vector<std::pair<int64_t, int64_t>>> rounds = {{{0, 5}, {0, 2}, {0, 8}},
                                                                        {{5, 1}, {2, 1}, {8, 1}}};
  uint64_t id = 0;
  for (const auto& round : rounds) {
    ++id;
    std::vector<rpc::BatchStepSpec> paged_steps, whole_steps;
    for (size_t k = 0; k < round.size(); ++k) {
      paged_steps.push_back({paged_ids[k], id, round[k].first, round[k].second});
      whole_steps.push_back({whole_ids[k], id, round[k].first, round[k].second});
    }
    const uint64_t loads_before = Info().block_loads_total() + Info().block_hits_total();
    std::vector<rpc::BatchStepReply> paged, plain;
    ASSERT_TRUE(Batch(paged_steps, {0, 1, 2, 3, 4}, BatchRows(h0, paged_steps), &paged).ok());
    std::swap(stub_, whole_stub);
    ASSERT_TRUE(Batch(whole_steps, {0, 1, 2, 3, 4}, BatchRows(h0, whole_steps), &plain).ok());
    std::swap(stub_, whole_stub);
    for (size_t k = 0; k < round.size(); ++k) {
      ASSERT_TRUE(paged[k].status.ok()) << paged[k].status;
      ASSERT_TRUE(plain[k].status.ok()) << plain[k].status;
      EXPECT_LT(MaxAbsDiff(paged[k].hidden.ToFloats(), plain[k].hidden.ToFloats()), 1e-4);
    }
    // Five units, each acquired once for the whole batch.
    const v1::InfoResponse info = Info();
    EXPECT_EQ(info.block_loads_total() + info.block_hits_total() - loads_before, 5u);
    EXPECT_LE(info.resident_weight_bytes(), layer);
  }
}

// Layer 0 of stories260K, for the Worker tests without a server.
std::unique_ptr<model::LayerHost> Layer0() {
  auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return nullptr;
  auto host = model::LayerHost::Create(*ckpt, {0}, {});
  EXPECT_TRUE(host.ok()) << host.status();
  return host.ok() ? *std::move(host) : nullptr;
}

TEST(WorkerTest, ReapIdleClosesOnlySessionsPastTheirTtl) {
  std::unique_ptr<model::LayerHost> host = Layer0();
  ASSERT_NE(host, nullptr);
  SessionLimits limits;
  limits.idle_ttl = absl::Minutes(1);
  Worker worker(std::move(host), limits);
  auto a = worker.OpenSession(10);
  auto b = worker.OpenSession(10);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(worker.ReapIdle(absl::Now()).total(), 0);
  const Worker::Reaped reaped = worker.ReapIdle(absl::Now() + absl::Minutes(2));
  EXPECT_EQ(reaped.idle, 2);
  EXPECT_EQ(reaped.lease, 0);  // Idle past the TTL counts as idle, whatever the lease.
  EXPECT_EQ(worker.Stats().sessions, 0);
  EXPECT_EQ(worker.Stats().kv_reserved_bytes, 0);
  EXPECT_EQ(worker.CloseSession(*a).code(), absl::StatusCode::kNotFound);
}

TEST(WorkerTest, ALeaseNotRenewedExpiresARenewedOneDoesNot) {
  std::unique_ptr<model::LayerHost> host = Layer0();
  ASSERT_NE(host, nullptr);
  SessionLimits limits;
  limits.idle_ttl = absl::Hours(1);
  limits.lease = absl::Minutes(1);
  Worker worker(std::move(host), limits);
  auto renewed = worker.OpenSession(10);
  auto orphan = worker.OpenSession(10);
  ASSERT_TRUE(renewed.ok() && orphan.ok());
  const absl::Time opened = absl::Now();  // Both leases began before this...
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time renewing = absl::Now();  // ...and the renewal after this.
  EXPECT_EQ(worker.RenewSessions({*renewed, "unknown"}), std::vector<std::string>{"unknown"});
  EXPECT_EQ(worker.ReapIdle(absl::Now()).total(), 0);
  // A lease after a moment between the opening and the renewal: only the orphan's lease ended.
  const absl::Time now = opened + (renewing - opened) / 2 + limits.lease;
  const Worker::Reaped reaped = worker.ReapIdle(now);
  EXPECT_EQ(reaped.lease, 1);
  EXPECT_EQ(reaped.idle, 0);
  EXPECT_EQ(worker.Stats().sessions, 1);
  EXPECT_EQ(worker.Stats().leases_expired_total, 1u);
  EXPECT_EQ(worker.Stats().kv_reserved_bytes, 10 * worker.host().KvBytesPerToken());
  EXPECT_EQ(worker.RenewSessions({*orphan, *renewed}), std::vector<std::string>{*orphan});
  EXPECT_EQ(worker.CloseSession(*orphan).code(), absl::StatusCode::kNotFound);
  // Without renewals the other one's lease ends too.
  EXPECT_EQ(worker.ReapIdle(absl::Now() + 2 * limits.lease).lease, 1);
  EXPECT_EQ(worker.Stats().sessions, 0);
}

TEST(WorkerTest, NoLeaseLeavesOnlyTheIdleTtl) {
  std::unique_ptr<model::LayerHost> host = Layer0();
  ASSERT_NE(host, nullptr);
  SessionLimits limits;
  limits.idle_ttl = absl::Hours(1);
  limits.lease = absl::ZeroDuration();
  Worker worker(std::move(host), limits);
  ASSERT_TRUE(worker.OpenSession(10).ok());
  EXPECT_EQ(worker.ReapIdle(absl::Now() + absl::Minutes(59)).total(), 0);
  EXPECT_EQ(worker.ReapIdle(absl::Now() + absl::Minutes(61)).idle, 1);
}

}  // namespace
}  // namespace swarm::worker
