// The HTTP API (coordinator/http_api.h) in-process over a stories260K cluster on loopback,
// through cpp-httplib's client: greedy ids equal the golden ones, streamed and not; the stream's
// event framing; the authorize hook's 401 in OpenAI's error shape; /health and /v1/models. (The
// official `openai` client drives the full surface in tests/http.)
#include "coordinator/http_api.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
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
    cluster_ = testing::StartCluster("stories260K", {{0, 1, 2}, {3, 4}});
    ASSERT_NE(cluster_.coordinator, nullptr);
    HttpApiOptions options;
    options.authorize = [](absl::string_view authorization) {
      if (authorization == "Bearer secret") return absl::OkStatus();
      return absl::UnauthenticatedError("missing or wrong bearer token");
    };
    auto api = HttpApi::Start(cluster_.coordinator.get(), options);
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = *std::move(api);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", api_->port());
    client_->set_read_timeout(60, 0);
    client_->set_bearer_token_auth("secret");
  }

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

TEST_F(HttpApiTest, AuthorizeHookGives401) {
  httplib::Client anonymous("127.0.0.1", api_->port());
  auto res = anonymous.Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  const Json e = Json::parse(res->body)["error"];
  EXPECT_EQ(e["type"], "authentication_error");
  EXPECT_EQ(e["message"], "missing or wrong bearer token");
  EXPECT_TRUE(e.contains("param") && e.contains("code"));
  res = anonymous.Get("/v1/models");
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

}  // namespace
}  // namespace swarm::coordinator
