// Session leases and resumed streams, in process on stories260K.
//
// Leases: a worker frees the sessions nobody renews within its lease (and counts them), while
// renewed ones live on past it; the coordinator's lease thread renews the sessions its requests
// hold and closes, on a worker that answers again, the sessions it could not close there.
//
// Resume (GenerateRequest.resume_ids): a request resumed after k of its tokens generates exactly
// the tokens and text the uninterrupted request generated after them — greedy, seeded sampling
// and a stop string — and resume ids the first run could not have produced are refused.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "coordinator/pipeline.h"
#include "coordinator/worker_set.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"

namespace swarm::testing {
namespace {

class LeaseTest : public ::testing::Test {
 protected:
  void StartWorker(absl::Duration lease) {
    worker::SessionLimits limits;
    limits.lease = lease;
    limits.idle_ttl = absl::Hours(1);  // Only the lease frees a session here.
    worker_ = testing::StartWorker(ModelDir("stories260K"), Range(0, 5), limits);
    ASSERT_NE(worker_, nullptr);
    stub_ = v1::WorkerService::NewStub(
        grpc::CreateChannel(worker_->address(), grpc::InsecureChannelCredentials()));
  }

  std::string Open() {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::OpenSessionRequest req;
    req.set_max_length(16);
    v1::OpenSessionResponse resp;
    grpc::Status s = stub_->OpenSession(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.session_id();
  }

  int Sessions() const { return worker_->worker()->Stats().sessions; }
  uint64_t Expired() const { return worker_->worker()->Stats().leases_expired_total; }

  std::unique_ptr<worker::WorkerServer> worker_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

TEST_F(LeaseTest, UnrenewedSessionsExpireWithinTheLeaseRenewedOnesLiveOn) {
  StartWorker(absl::Seconds(1));
  coordinator::WorkerSet set({worker_->address()}, worker_->checkpoint().config().Fingerprint(), 5);
  set.Refresh(absl::Seconds(10));
  ASSERT_TRUE(set.Snapshot()[0].usable()) << set.Snapshot()[0].error;
  EXPECT_EQ(set.Snapshot()[0].info.session_lease_seconds(), 1.0);
  // A third of the lease.
  EXPECT_EQ(set.RenewInterval(absl::Seconds(5)), absl::Seconds(1) / 3);

  const std::string renewed = Open();
  const std::string orphan = Open();
  ASSERT_EQ(Sessions(), 2);
  set.AddSession(0, renewed);
  // Three leases long, the renewed session is kept and the other one goes.
  const absl::Time end = absl::Now() + absl::Seconds(3);
  while (absl::Now() < end) {
    const coordinator::WorkerSet::LeaseRound round = set.RenewLeases(absl::Seconds(5));
    EXPECT_EQ(round.renewed, 1);
    EXPECT_EQ(round.lost, 0);
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(Sessions(), 1);
  EXPECT_EQ(Expired(), 1u);
  {
    // The worker names the ids it does not hold.
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::RenewSessionsRequest req;
    req.add_session_ids(renewed);
    req.add_session_ids(orphan);
    v1::RenewSessionsResponse resp;
    ASSERT_TRUE(stub_->RenewSessions(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.unknown_session_ids_size(), 1);
    EXPECT_EQ(resp.unknown_session_ids(0), orphan);
  }

  // Once nobody renews it, the live one goes too; the coordinator side learns it is gone.
  EXPECT_TRUE(Eventually([&] { return Sessions() == 0; }));
  EXPECT_EQ(Expired(), 2u);
  const coordinator::WorkerSet::LeaseRound round = set.RenewLeases(absl::Seconds(5));
  EXPECT_EQ(round.lost, 1);
  EXPECT_EQ(set.SessionCount(0), 0);
}

TEST_F(LeaseTest, TooManyIdsInOneRenewalAreInvalid) {
  StartWorker(absl::Seconds(10));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::RenewSessionsRequest req;
  for (int i = 0; i < 4097; ++i) req.add_session_ids("x");
  v1::RenewSessionsResponse resp;
  EXPECT_EQ(stub_->RenewSessions(&ctx, req, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(LeaseTest, CoordinatorRenewsItsSessionsAndClosesStaleOnes) {
  StartWorker(absl::Seconds(1));
  auto coordinator = StartCoordinator(ModelDir("stories260K"), {worker_->address()});
  ASSERT_NE(coordinator, nullptr);
  coordinator::WorkerSet& set = coordinator->workers();

  // A request leaves nothing behind, on the worker or in the coordinator's lease table.
  coordinator::GenerationRequest request;
  request.prompt_ids = GoldenIds("stories260K", "greedy.input_ids");
  request.sampling.max_new_tokens = 8;
  auto result = coordinator->pipeline().Generate(request, {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(set.SessionCount(0), 0);
  EXPECT_TRUE(Eventually([&] { return Sessions() == 0; }));

  // A session the coordinator holds (as a request between steps would) outlives the lease.
  const std::string held = Open();
  set.AddSession(0, held);
  absl::SleepFor(absl::Seconds(3));
  EXPECT_EQ(Sessions(), 1);
  EXPECT_EQ(Expired(), 0u);

  // A close that did not reach the worker: the next lease round closes it there (not the lease).
  set.RemoveSession(0, held, /*closed=*/false);
  EXPECT_TRUE(Eventually([&] { return Sessions() == 0; }));
  EXPECT_EQ(Expired(), 0u);
}

// Resume: the uninterrupted run, streamed token by token, against runs resumed after k tokens.
class ResumeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster(StartCluster("stories260K", {Range(0, 2), Range(2, 5)}));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  struct Streamed {
    absl::StatusOr<coordinator::GenerationResult> result;
    std::vector<model::GeneratedToken> tokens;  // As the sink saw them.
  };

  static Streamed Run(const std::vector<int64_t>& prompt, const model::SamplingParams& params,
                      const std::vector<int64_t>& resume = {}) {
    coordinator::GenerationRequest request;
    request.prompt_ids = prompt;
    request.sampling = params;
    request.resume_ids = resume;
    Streamed out;
    coordinator::GenerationSink sink;
    sink.on_token = [&out](const model::GeneratedToken& t) {
      out.tokens.push_back(t);
      return true;
    };
    out.result = cluster_->coordinator->pipeline().Generate(request, sink);
    return out;
  }

  // Runs `params` whole, then resumed after each k of `cuts`: the resumed run streams the ids
  // after the first k and the text after what the first k tokens had streamed.
  static void ExpectResumesContinue(const model::SamplingParams& params,
                                    const std::vector<size_t>& cuts) {
    const std::vector<int64_t> prompt = GoldenIds("stories260K", "prompt.input_ids");
    const Streamed full = Run(prompt, params);
    ASSERT_TRUE(full.result.ok()) << full.result.status();
    std::vector<int64_t> ids;
    for (const model::GeneratedToken& t : full.tokens) {
      if (t.id >= 0) ids.push_back(t.id);
    }
    for (size_t k : cuts) {
      ASSERT_LT(k, ids.size());
      std::string before;  // What the first run had streamed once its k-th token arrived.
      size_t seen = 0;
      for (const model::GeneratedToken& t : full.tokens) {
        if (seen == k) break;
        before += t.text;
        if (t.id >= 0) ++seen;
      }
      const Streamed resumed =
          Run(prompt, params, std::vector<int64_t>(ids.begin(), ids.begin() + k));
      ASSERT_TRUE(resumed.result.ok()) << resumed.result.status();
      std::vector<int64_t> rest;
      std::string text;
      for (const model::GeneratedToken& t : resumed.tokens) {
        if (t.id >= 0) rest.push_back(t.id);
        text += t.text;
      }
      EXPECT_EQ(rest, std::vector<int64_t>(ids.begin() + k, ids.end())) << "k = " << k;
      ASSERT_EQ(full.result->text.compare(0, before.size(), before), 0);
      EXPECT_EQ(text, full.result->text.substr(before.size())) << "k = " << k;
      EXPECT_EQ(resumed.result->finish_reason, full.result->finish_reason) << "k = " << k;
    }
  }

  static Cluster* cluster_;
};

Cluster* ResumeTest::cluster_ = nullptr;

TEST_F(ResumeTest, GreedyContinuesTheSameStream) {
  model::SamplingParams greedy;
  greedy.max_new_tokens = 40;
  greedy.stop_at_eos = false;
  ExpectResumesContinue(greedy, {1, 9, 39});
  // The golden continuation, resumed after 5.
  const std::vector<int64_t> golden = GoldenIds("stories260K", "greedy.greedy");
  ASSERT_GT(golden.size(), 5u);
  model::SamplingParams p;
  p.max_new_tokens = static_cast<int64_t>(golden.size());
  p.stop_at_eos = false;
  const Streamed r = Run(GoldenIds("stories260K", "greedy.input_ids"), p,
                         std::vector<int64_t>(golden.begin(), golden.begin() + 5));
  ASSERT_TRUE(r.result.ok()) << r.result.status();
  EXPECT_EQ(r.result->ids.size() + 5, golden.size());
  std::vector<int64_t> streamed;
  for (const model::GeneratedToken& t : r.tokens) {
    if (t.id >= 0) streamed.push_back(t.id);
  }
  EXPECT_EQ(streamed, std::vector<int64_t>(golden.begin() + 5, golden.end()));
}

TEST_F(ResumeTest, SeededSamplingContinuesTheSameStream) {
  model::SamplingParams seeded;
  seeded.max_new_tokens = 48;
  seeded.temperature = 0.9f;
  seeded.top_p = 0.95f;
  seeded.seed = 1234;
  seeded.stop_at_eos = false;
  ExpectResumesContinue(seeded, {1, 17, 40});
}

TEST_F(ResumeTest, StopStringsSpanTheResumePoint) {
  model::SamplingParams greedy;
  greedy.max_new_tokens = 60;
  greedy.stop_at_eos = false;
  // The uninterrupted text, to pick a stop string whose first occurrence is late in it.
  const Streamed full = Run(GoldenIds("stories260K", "prompt.input_ids"), greedy);
  ASSERT_TRUE(full.result.ok()) << full.result.status();
  const std::string& text = full.result->text;
  ASSERT_GT(text.size(), 60u);
  std::string stop;
  for (size_t at = text.size() * 3 / 4; at + 6 <= text.size() && stop.empty(); ++at) {
    if (text.find(text.substr(at, 6)) == at) stop = text.substr(at, 6);
  }
  ASSERT_FALSE(stop.empty()) << text;
  greedy.stop = {stop};
  // Cuts before the stop string's tokens: the held-back window is rebuilt.
  ExpectResumesContinue(greedy, {1, 10, 25});
}

TEST_F(ResumeTest, ResumeIdsTheFirstRunCouldNotHaveMadeAreRefused) {
  const std::vector<int64_t> prompt = GoldenIds("stories260K", "prompt.input_ids");
  model::SamplingParams p;
  p.max_new_tokens = 4;
  p.stop_at_eos = true;
  auto code = [&](const std::vector<int64_t>& resume) {
    const Streamed r = Run(prompt, p, resume);
    return r.result.ok() ? absl::StatusCode::kOk : r.result.status().code();
  };
  EXPECT_EQ(code({5, 6, 7, 8}), absl::StatusCode::kInvalidArgument);  // All of max_new_tokens.
  EXPECT_EQ(code({5, 512}), absl::StatusCode::kInvalidArgument);      // Outside the vocabulary.
  EXPECT_EQ(code({5, 2}), absl::StatusCode::kInvalidArgument);        // EOS ended it.
  EXPECT_EQ(code({5, 6}), absl::StatusCode::kOk);
}

}  // namespace
}  // namespace swarm::testing
