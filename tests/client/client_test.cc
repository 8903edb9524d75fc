// The SDK (swarm::Client) against an in-process cluster: streaming, cancellation from the
// callback, Status fields, errors carrying the server's address, WaitUntilServing.
#include "client/client.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "model/generate.h"
#include "tests/coordinator/test_cluster.h"

namespace swarm {
namespace {

using ::swarm::testing::GoldenIds;

TEST(ClientTest, ConnectRejectsMalformedAddresses) {
  EXPECT_EQ(Client::Connect("localhost").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Client::Connect("127.0.0.1:1").ok());  // Lazy: nothing is contacted yet.
}

TEST(ClientTest, ErrorsNameTheServerWhenNothingListens) {
  const std::string address = absl::StrCat("127.0.0.1:", testing::UnusedPort());
  auto client = Client::Connect(address);
  ASSERT_TRUE(client.ok());
  auto s = (*client)->Status(absl::Seconds(2));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.status().message().find(address), std::string::npos) << s.status();
  GenerateRequest req;
  req.prompt = "x";
  req.timeout = absl::Seconds(2);
  EXPECT_EQ((*client)->Generate(req).status().code(), absl::StatusCode::kUnavailable);
  absl::Status w = (*client)->WaitUntilServing(absl::Milliseconds(300));
  EXPECT_EQ(w.code(), absl::StatusCode::kDeadlineExceeded);
}

class ClientClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new testing::Cluster(testing::StartCluster("stories260K", {{0, 1, 2}, {3, 4}}));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    auto c = Client::Connect(cluster_->coordinator->address());
    ASSERT_TRUE(c.ok());
    client_ = *std::move(c);
  }
  static testing::Cluster* cluster_;
  std::unique_ptr<Client> client_;
};

testing::Cluster* ClientClusterTest::cluster_ = nullptr;

TEST_F(ClientClusterTest, ChunksAddUpToTheResult) {
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  req.request_id = "sdk-test-1";
  std::vector<int64_t> ids;
  std::string text;
  auto r = client_->Generate(req, [&](const GenerateChunk& c) {
    ids.insert(ids.end(), c.ids.begin(), c.ids.end());
    text += c.text;
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, GoldenIds("stories260K", "prompt.greedy"));
  EXPECT_EQ(ids, r->ids);
  EXPECT_EQ(text, r->text);
  EXPECT_FALSE(r->text.empty());
  EXPECT_EQ(r->request_id, "sdk-test-1");
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_GT(r->total_seconds, 0);
  EXPECT_LE(r->time_to_first_token_seconds, r->total_seconds);
}

// Stop strings and logprobs over the wire: the same text and numbers as the in-process engine.
TEST_F(ClientClusterTest, StopStringsAndLogprobsMatchTheEngine) {
  auto engine = model::Engine::Create(testing::ModelDir("stories260K"));
  ASSERT_TRUE(engine.ok()) << engine.status();
  model::SamplingParams params;
  params.max_new_tokens = 24;
  params.stop_at_eos = false;
  params.logprobs = true;
  params.top_logprobs = 2;
  const std::vector<int64_t> prompt = GoldenIds("stories260K", "prompt.input_ids");
  std::vector<model::GeneratedToken> local;
  auto full = (*engine)->Generate(prompt, params, [&](const model::GeneratedToken& t) {
    if (t.has_logprob) local.push_back(t);
    return true;
  });
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_GT(full->text.size(), 12u);

  GenerateRequest req;
  req.prompt_ids = prompt;
  req.max_new_tokens = 24;
  req.stop_at_eos = false;
  req.logprobs = true;
  req.top_logprobs = 2;
  auto r = client_->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, full->ids);
  ASSERT_EQ(r->logprobs.size(), local.size());
  for (size_t i = 0; i < local.size(); ++i) {
    EXPECT_EQ(r->logprobs[i].chosen.id, local[i].chosen.id);
    EXPECT_NEAR(r->logprobs[i].chosen.logprob, local[i].chosen.logprob, 1e-5);
    EXPECT_EQ(r->logprobs[i].chosen.text, local[i].chosen.text);
    ASSERT_EQ(r->logprobs[i].top.size(), 2u);
    EXPECT_EQ(r->logprobs[i].top[1].id, local[i].top_logprobs[1].id);
  }

  // A stop string from the middle of the text: the text up to it, never the stop string.
  const std::string stop = full->text.substr(8, 4);
  req.logprobs = false;
  req.top_logprobs = 0;
  req.stop = {stop};
  std::string streamed;
  r = client_->Generate(req, [&](const GenerateChunk& c) {
    streamed += c.text;
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, "stop");
  EXPECT_EQ(r->text, full->text.substr(0, full->text.find(stop)));
  EXPECT_EQ(streamed, r->text);
  EXPECT_TRUE(r->logprobs.empty());

  req.stop = {""};
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientClusterTest, GeneratesExactlyMaxNewTokens) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 7;
  auto r = client_->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids.size(), 7u);
  EXPECT_EQ(r->finish_reason, "length");
  EXPECT_EQ(r->prompt_ids.front(), 1);  // BOS added by the coordinator's tokenizer.
  req.add_special_tokens = false;
  auto plain = client_->Generate(req);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->prompt_ids.size() + 1, r->prompt_ids.size());
}

TEST_F(ClientClusterTest, ReturningFalseCancels) {
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 300;
  req.stop_at_eos = false;
  int calls = 0;
  auto r = client_->Generate(req, [&](const GenerateChunk&) { return ++calls < 2; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);
}

TEST_F(ClientClusterTest, StatusDescribesTheCluster) {
  ASSERT_TRUE(client_->WaitUntilServing(absl::Seconds(5)).ok());
  auto s = client_->Status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->serving);
  EXPECT_TRUE(s->reason.empty());
  EXPECT_EQ(s->architecture, "LlamaForCausalLM");
  EXPECT_EQ(s->num_layers, 5);
  EXPECT_EQ(s->max_position_embeddings, 512);
  EXPECT_FALSE(s->model_fingerprint.empty());
  ASSERT_EQ(s->workers.size(), 2u);
  EXPECT_EQ(s->workers[0].address, cluster_->workers[0]->address());
  EXPECT_EQ(s->workers[1].layers, (std::vector<std::pair<int, int>>{{3, 5}}));
  EXPECT_EQ(s->workers[0].max_sessions, 64);
}

TEST_F(ClientClusterTest, ServerErrorsKeepTheirCode) {
  GenerateRequest req;
  req.prompt = "x";
  req.max_new_tokens = 1000;
  auto r = client_->Generate(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find(cluster_->coordinator->address()), std::string::npos);
  req.max_new_tokens = 4;
  req.combine = "diagonal";
  EXPECT_EQ(client_->Generate(req).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace swarm
