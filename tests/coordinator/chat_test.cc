// Chat on the coordinator (CoordinatorModel::RenderChat) over a stories260K cluster whose model
// directory carries llama-2-chat's template (testing::ChatModelDir): HTTP /v1/chat/completions and
// gRPC Generate with messages (through the SDK) give the greedy ids of a plain prompt-ids request
// on the reference rendering (tokenizer::ChatTemplate, tokenized without special tokens); the
// template's raise_exception is HTTP 400 / INVALID_ARGUMENT with its message; a model without a
// template answers 400 naming messages.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "coordinator/http_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/coordinator/test_cluster.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace swarm::coordinator {
namespace {

using Json = nlohmann::json;

constexpr char kRaised[] = "Conversation roles must alternate user/assistant/user/assistant/...";
constexpr int kMaxTokens = 12;

class ChatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::ChatModelDir("chat-test", "llama-2-chat");
    remove_.path = dir_;
    ASSERT_FALSE(dir_.empty());
    for (const std::vector<int>& layers : std::vector<std::vector<int>>{{0, 1, 2}, {3, 4}}) {
      cluster_.workers.push_back(testing::StartWorker(dir_, layers));
      ASSERT_NE(cluster_.workers.back(), nullptr);
    }
    cluster_.coordinator = testing::StartCoordinator(dir_, cluster_.addresses());
    ASSERT_NE(cluster_.coordinator, nullptr);
    ASSERT_NE(cluster_.coordinator->model().chat_template(), nullptr);
    auto api = HttpApi::Start(cluster_.coordinator.get(), HttpApiOptions{});
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = *std::move(api);
    http_ = std::make_unique<httplib::Client>("127.0.0.1", api_->port());
    http_->set_read_timeout(60, 0);
    auto client = Client::Connect(cluster_.coordinator->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // The reference: the template rendered here, tokenized without special tokens, generated as
  // prompt ids.
  std::vector<int64_t> ReferencePromptIds(const std::vector<tokenizer::ChatMessage>& messages) {
    auto chat = tokenizer::ChatTemplate::FromModelDir(dir_);
    EXPECT_TRUE(chat.ok()) << chat.status();
    if (!chat.ok()) return {};
    tokenizer::RenderOptions options;
    options.add_generation_prompt = true;
    auto text = (*chat)->Render(messages, options);
    EXPECT_TRUE(text.ok()) << text.status();
    if (!text.ok()) return {};
    EXPECT_NE(text->find("[INST]"), std::string::npos) << *text;
    auto tok = tokenizer::Tokenizer::FromFile(dir_ + "/tokenizer.json");
    EXPECT_TRUE(tok.ok()) << tok.status();
    if (!tok.ok()) return {};
    auto ids = (*tok)->Encode(*text, /*add_special_tokens=*/false);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int64_t>{};
  }

  GenerateRequest Greedy() const {
    GenerateRequest r;
    r.max_new_tokens = kMaxTokens;
    r.stop_at_eos = false;
    return r;
  }

  std::string dir_;
  testing::RemoveOnExit remove_;
  testing::Cluster cluster_;
  std::unique_ptr<HttpApi> api_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<Client> client_;
};

const std::vector<tokenizer::ChatMessage> kConversation = {
    {"system", "You tell short stories."},
    {"user", "Tell me about a cat."},
    {"assistant", "Once upon a time there was a cat."},
    {"user", "What did the cat do?"}};

Json MessagesJson(const std::vector<tokenizer::ChatMessage>& messages) {
  Json out = Json::array();
  for (const auto& m : messages) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

TEST_F(ChatTest, HttpAndGrpcChatEqualThePromptOfTheRendering) {
  const std::vector<int64_t> prompt = ReferencePromptIds(kConversation);
  ASSERT_FALSE(prompt.empty());
  GenerateRequest plain = Greedy();
  plain.prompt_ids = prompt;
  auto want = client_->Generate(plain);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_EQ(want->ids.size(), static_cast<size_t>(kMaxTokens));

  const Json body = {{"messages", MessagesJson(kConversation)},
                     {"max_tokens", kMaxTokens},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"return_token_ids", true}};
  auto res = http_->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const Json j = Json::parse(res->body);
  EXPECT_EQ(j["prompt_token_ids"].get<std::vector<int64_t>>(), prompt);
  EXPECT_EQ(j["choices"][0]["token_ids"].get<std::vector<int64_t>>(), want->ids);
  EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>(), want->text);

  GenerateRequest chat = Greedy();
  for (const auto& m : kConversation) chat.messages.push_back({m.role, m.content});
  auto got = client_->Generate(chat);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->prompt_ids, prompt);
  EXPECT_EQ(got->ids, want->ids);
  EXPECT_EQ(got->text, want->text);
}

TEST_F(ChatTest, RaisingTemplateIs400AndInvalidArgumentWithItsMessage) {
  const std::vector<tokenizer::ChatMessage> twice = {{"user", "a"}, {"user", "b"}};
  const Json body = {{"messages", MessagesJson(twice)}, {"max_tokens", 2}};
  auto res = http_->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  const Json e = Json::parse(res->body)["error"];
  EXPECT_EQ(e["message"], kRaised);
  EXPECT_EQ(e["type"], "invalid_request_error");
  EXPECT_EQ(e["param"], "messages");

  GenerateRequest chat = Greedy();
  for (const auto& m : twice) chat.messages.push_back({m.role, m.content});
  auto got = client_->Generate(chat);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
  // The SDK adds the address: the template's message is in it whole.
  EXPECT_THAT(std::string(got.status().message()), ::testing::HasSubstr(kRaised));

  // Messages and a prompt together: refused, naming both.
  chat.messages = {{"user", "a"}};
  chat.prompt = "x";
  got = client_->Generate(chat);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
}

// Tools reach the template (qwen2.5 lists them with tojson) in the client's key order: "type"
// before "function", as sent, not sorted.
TEST(ChatToolsTest, ToolsAreRenderedInTheirKeyOrder) {
  const std::string dir = testing::ChatModelDir("chat-tools", "qwen2.5");
  const testing::RemoveOnExit remove{dir};
  ASSERT_FALSE(dir.empty());
  testing::Cluster cluster;
  cluster.workers.push_back(testing::StartWorker(dir, testing::Range(0, 5)));
  ASSERT_NE(cluster.workers.back(), nullptr);
  cluster.coordinator = testing::StartCoordinator(dir, cluster.addresses());
  ASSERT_NE(cluster.coordinator, nullptr);
  auto api = HttpApi::Start(cluster.coordinator.get(), HttpApiOptions{});
  ASSERT_TRUE(api.ok()) << api.status();

  const std::string messages = R"([{"role": "user", "content": "Weather in Paris?"}])";
  const std::string tools =
      R"([{"type": "function", "function": {"name": "get_weather", "parameters": )"
      R"({"type": "object", "properties": {"city": {"type": "string"}}}}}])";
  auto chat = tokenizer::ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto messages_value = tokenizer::jinja::Value::FromJson(nlohmann::ordered_json::parse(messages));
  auto tools_value = tokenizer::jinja::Value::FromJson(nlohmann::ordered_json::parse(tools));
  ASSERT_TRUE(messages_value.ok() && tools_value.ok());
  tokenizer::RenderOptions options;
  options.add_generation_prompt = true;
  options.tools = *tools_value;
  auto text = (*chat)->Render(*messages_value, options);
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_NE(text->find(R"({"type": "function", "function": {"name": "get_weather")"),
            std::string::npos)
      << *text;
  auto tok = tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto want = (*tok)->Encode(*text, /*add_special_tokens=*/false);
  ASSERT_TRUE(want.ok()) << want.status();

  httplib::Client http("127.0.0.1", (*api)->port());
  http.set_read_timeout(60, 0);
  const std::string body = absl::StrCat(R"({"messages": )", messages, R"(, "tools": )", tools,
                                        R"(, "max_tokens": 1, "return_token_ids": true})");
  auto res = http.Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(Json::parse(res->body)["prompt_token_ids"].get<std::vector<int64_t>>(), *want);
}

TEST(ChatWithoutTemplateTest, Http400AndGrpcFailedPrecondition) {
  testing::Cluster cluster = testing::StartCluster("stories260K", {{0, 1, 2, 3, 4}});
  ASSERT_NE(cluster.coordinator, nullptr);
  EXPECT_EQ(cluster.coordinator->model().chat_template(), nullptr);
  auto api = HttpApi::Start(cluster.coordinator.get(), HttpApiOptions{});
  ASSERT_TRUE(api.ok()) << api.status();
  httplib::Client http("127.0.0.1", (*api)->port());
  http.set_read_timeout(60, 0);
  auto res = http.Post("/v1/chat/completions",
                       R"({"messages": [{"role": "user", "content": "a"}]})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  const Json e = Json::parse(res->body)["error"];
  EXPECT_NE(e["message"].get<std::string>().find("no chat template"), std::string::npos);
  EXPECT_EQ(e["param"], "messages");

  auto client = Client::Connect(cluster.coordinator->address());
  ASSERT_TRUE(client.ok()) << client.status();
  GenerateRequest chat;
  chat.messages = {{"user", "a"}};
  auto got = (*client)->Generate(chat);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition) << got.status();
}

}  // namespace
}  // namespace swarm::coordinator
