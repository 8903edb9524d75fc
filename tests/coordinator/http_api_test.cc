// The HTTP API (coordinator/http_api.h) in-process over a stories260K cluster on loopback,
// through cpp-httplib's client: greedy ids equal the golden ones, streamed and not; the stream's
// event framing; the coordinator's tokens (401 in OpenAI's error shape, the per-token limit
// shared with gRPC as 429); /health and /v1/models. (The
// official `openai` client drives the full surface in tests/http.)
#include "coordinator/http_api.h"

#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/auth.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/coordinator/test_cluster.h"

namespace swarm::coordinator {
namespace {

using Json = nlohmann::json;
using testing::GoldenIds;

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The coordinator checks tokens (--auth-tokens); the HTTP API uses the same ones.
    tokens_.path = absl::StrCat(::testing::TempDir(), "/swarm-http-tokens-", getpid());
    {
      std::ofstream f(tokens_.path);
      f << "alice:" << kSecret << "\n";
    }
    const std::string dir = testing::ModelDir("stories260K");
    for (const std::vector<int>& layers : {std::vector<int>{0, 1, 2}, std::vector<int>{3, 4}}) {
      cluster_.workers.push_back(testing::StartWorker(dir, layers));
      ASSERT_NE(cluster_.workers.back(), nullptr);
    }
    CoordinatorOptions co;
    co.auth_tokens_file = tokens_.path;
    co.max_requests_per_token = kPerToken;
    cluster_.coordinator = testing::StartCoordinator(dir, cluster_.addresses(), true, co);
    ASSERT_NE(cluster_.coordinator, nullptr);
    HttpApiOptions options;
    auto api = HttpApi::Start(cluster_.coordinator.get(), options);
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = *std::move(api);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", api_->port());
    client_->set_read_timeout(60, 0);
    client_->set_bearer_token_auth(kSecret);
  }

  static constexpr char kSecret[] = "alice-0123456789abcdef";
  static constexpr int kPerToken = 2;
  testing::RemoveOnExit tokens_;

  httplib::Result Post(const std::string& path, const Json& body) {
    return client_->Post(path.c_str(), body.dump(), "application/json");
  }

  testing::Cluster cluster_;
  std::unique_ptr<HttpApi> api_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HttpApiTest, GreedyIdsStreamedAndNot) {
  const std::vector<int64_t> prompt = GoldenIds("stories260K", "greedy.input_ids");
  const std::vector<int64_t> want = GoldenIds("stories260K", "greedy.greedy");
  const Json body = {{"model", "stories260K"}, {"prompt", prompt},   {"max_tokens", want.size()},
                     {"temperature", 0},       {"ignore_eos", true}, {"return_token_ids", true}};
  auto res = Post("/v1/completions", body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const Json j = Json::parse(res->body);
  EXPECT_EQ(j["choices"][0]["token_ids"].get<std::vector<int64_t>>(), want);
  EXPECT_EQ(j["usage"]["completion_tokens"], want.size());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");

  Json stream_body = body;
  stream_body["stream"] = true;
  res = Post("/v1/completions", stream_body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::vector<int64_t> ids;
  std::string text;
  std::vector<std::string> events = absl::StrSplit(res->body, "\n\n", absl::SkipEmpty());
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "data: [DONE]");
  events.pop_back();
  for (const std::string& e : events) {
    ASSERT_EQ(e.rfind("data: ", 0), 0u) << e;
    const Json chunk = Json::parse(e.substr(6));
    for (const Json& id : chunk["choices"][0]["token_ids"]) ids.push_back(id.get<int64_t>());
    text += chunk["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(ids, want);
  EXPECT_EQ(text, j["choices"][0]["text"].get<std::string>());
}

TEST_F(HttpApiTest, TokensGive401) {
  httplib::Client anonymous("127.0.0.1", api_->port());
  auto res = anonymous.Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  const Json e = Json::parse(res->body)["error"];
  EXPECT_EQ(e["type"], "authentication_error");
  EXPECT_NE(e["message"].get<std::string>().find("a valid token is required"), std::string::npos)
      << e;
  EXPECT_TRUE(e.contains("param") && e.contains("code"));
  res = anonymous.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  httplib::Client wrong("127.0.0.1", api_->port());
  wrong.set_bearer_token_auth("mallory-0123456789abcdef");
  res = wrong.Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  res = anonymous.Get("/health");  // Health needs no token.
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = client_->Get("/v1/models");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(Json::parse(res->body)["data"][0]["id"], "stories260K");
}

// The per-token limit counts HTTP and gRPC requests together: with the token's slots all taken
// (as running gRPC calls take them, TokenAuth::Acquire) an HTTP generation gets 429, and one that
// ran gives its slot back.
TEST_F(HttpApiTest, HttpRequestsCountTowardThePerTokenLimit) {
  TokenAuth* auth = cluster_.coordinator->auth();
  ASSERT_NE(auth, nullptr);
  const std::string bearer = absl::StrCat("Bearer ", kSecret);
  const Json body = {{"prompt", "Once upon a time"}, {"max_tokens", 2}, {"temperature", 0}};
  {
    std::vector<TokenAuth::Lease> held;
    for (int i = 0; i < kPerToken; ++i) {
      absl::StatusOr<TokenAuth::Lease> lease = auth->Acquire(bearer);
      ASSERT_TRUE(lease.ok()) << lease.status();
      held.push_back(*std::move(lease));
    }
    auto res = Post("/v1/completions", body);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 429) << res->body;
    const Json e = Json::parse(res->body)["error"];
    EXPECT_EQ(e["type"], "rate_limit_error");
    EXPECT_NE(e["message"].get<std::string>().find("per-token limit"), std::string::npos) << e;
    res = client_->Get("/v1/models");  // Reading the model list takes no slot.
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
  }
  for (bool stream : {false, true}) {
    Json b = body;
    b["stream"] = stream;
    auto res = Post("/v1/completions", b);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
  }
  // Every slot is free again once the HTTP requests ended.
  std::vector<TokenAuth::Lease> all;
  for (int i = 0; i < kPerToken; ++i) {
    absl::StatusOr<TokenAuth::Lease> lease = auth->Acquire(bearer);
    EXPECT_TRUE(lease.ok()) << i << ": " << lease.status();
    if (lease.ok()) all.push_back(*std::move(lease));
  }
  EXPECT_EQ(auth->Acquire(bearer).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace swarm::coordinator
