// The checks of one step's input that Worker::Forward makes before any layer runs (every Forward
// path, unary, streamed or batched, goes through them): non-finite hidden states, positions whose
// sums would overflow, huge layer lists not echoed whole; and the deadline on a ForwardStream
// still arriving.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "model/checkpoint.h"
#include "model/layer_host.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "worker/worker.h"
#include "worker/worker_server.h"

namespace swarm::worker {
namespace {

class WorkerHardeningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto checkpoint = model::Checkpoint::Open(testing::ModelDir("stories260K"));
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    auto host = model::LayerHost::Create(*std::move(checkpoint), {0, 1}, model::LoadOptions{});
    ASSERT_TRUE(host.ok()) << host.status();
    hidden_size_ = (*host)->config().hidden_size;
    worker_ = std::make_unique<Worker>(*std::move(host), SessionLimits{});
    auto id = worker_->OpenSession(0);
    ASSERT_TRUE(id.ok());
    session_ = *id;
  }

  HostTensor Hidden(int64_t positions, float value = 0.5f) const {
    return HostTensor::FromFloats({positions, hidden_size_},
                                  std::vector<float>(positions * hidden_size_, value));
  }

  StepRequest Step(int64_t start, std::vector<int> layers = {0, 1}) const {
    StepRequest r;
    r.session_id = session_;
    r.step_id = 1;
    r.start_position = start;
    r.layers = std::move(layers);
    return r;
  }

  int64_t hidden_size_ = 0;
  std::unique_ptr<Worker> worker_;
  std::string session_;
};

TEST_F(WorkerHardeningTest, NonFiniteHiddenStatesAreInvalidArgument) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    HostTensor h = Hidden(2);
    std::vector<float> v = h.ToFloats();
    v[hidden_size_ + 3] = bad;
    h = HostTensor::FromFloats(h.shape, v);
    absl::StatusOr<StepResult> r = worker_->Forward(Step(0), std::move(h));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find("row 1, column 3"), std::string::npos) << r.status();
  }
  // The same in f16 and bf16 (infinity's bits: 0x7c00 and 0x7f80).
  for (auto [dtype, bits] :
       {std::pair{DType::kF16, uint16_t{0x7c00}}, std::pair{DType::kBF16, uint16_t{0x7f80}}}) {
    HostTensor h;
    h.dtype = dtype;
    h.shape = {1, hidden_size_};
    h.data.assign(hidden_size_ * 2, '\0');
    std::memcpy(h.data.data() + 2 * 5, &bits, 2);
    EXPECT_EQ(h.CheckFinite("h").code(), absl::StatusCode::kInvalidArgument);
    std::memset(h.data.data() + 2 * 5, 0, 2);
    EXPECT_TRUE(h.CheckFinite("h").ok());
  }
  // The session was not touched: a finite step at position 0 still runs.
  EXPECT_TRUE(worker_->Forward(Step(0), Hidden(2)).ok());
}

TEST_F(WorkerHardeningTest, PositionsThatWouldOverflowAreOutOfRange) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t start : {kMax, kMax - 1, kMax / 2}) {
    absl::StatusOr<StepResult> r = worker_->Forward(Step(start), Hidden(2));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange) << start << ": " << r.status();
  }
  EXPECT_EQ(worker_->OpenSession(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(worker_->OpenSession(kMax).ok());  // Capped at the context.
}

TEST_F(WorkerHardeningTest, AHugeLayerListIsNotEchoed) {
  std::vector<int> layers(1000000, 0);  // Not increasing: the error quotes the list.
  absl::StatusOr<StepResult> r = worker_->Forward(Step(0, layers), Hidden(1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(r.status().message().size(), 400u) << r.status().message().substr(0, 400);
  EXPECT_NE(r.status().message().find("1000000 values"), std::string::npos);
}

TEST(WorkerSessionsTest, OneClientCannotTakeEverySession) {
  auto checkpoint = model::Checkpoint::Open(testing::ModelDir("stories260K"));
  ASSERT_TRUE(checkpoint.ok());
  auto host = model::LayerHost::Create(*std::move(checkpoint), {0}, model::LoadOptions{});
  ASSERT_TRUE(host.ok());
  SessionLimits limits;
  limits.max_sessions = 4;
  limits.max_sessions_per_client = 2;
  Worker worker(*std::move(host), limits);
  auto a1 = worker.OpenSession(0, "ipv4:10.0.0.1");
  auto a2 = worker.OpenSession(0, "ipv4:10.0.0.1");
  ASSERT_TRUE(a1.ok() && a2.ok());
  EXPECT_EQ(worker.OpenSession(0, "ipv4:10.0.0.1").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(worker.OpenSession(0, "cn:coordinator").ok());
  ASSERT_TRUE(worker.CloseSession(*a1).ok());
  EXPECT_TRUE(worker.OpenSession(0, "ipv4:10.0.0.1").ok());
}

}  // namespace
}  // namespace swarm::worker
