// The OpenAI JSON mapping (coordinator/openai_api.h) without a server: request fields into the
// pipeline's request (defaults, both prompt forms, stop, logprobs in both endpoints' shapes,
// Swarm's extra fields), refusals naming the field, status codes into HTTP codes, and the
// response, chunk, logprobs and error shapes.
#include "coordinator/openai_api.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace swarm::coordinator {
namespace {

using Json = nlohmann::json;

OpenAiRequest Parse(OpenAiEndpoint e, const Json& body) {
  auto r = ParseOpenAiRequest(e, body.dump());
  EXPECT_TRUE(r.ok()) << r.status() << " for " << body.dump();
  return r.ok() ? *r : OpenAiRequest{};
}

OpenAiError Refused(OpenAiEndpoint e, const std::string& body) {
  auto r = ParseOpenAiRequest(e, body);
  EXPECT_FALSE(r.ok()) << body;
  return ErrorFromStatus(r.status());
}

constexpr auto kCompletions = OpenAiEndpoint::kCompletions;
constexpr auto kChat = OpenAiEndpoint::kChat;

TEST(OpenAiParse, CompletionFieldsAndDefaults) {
  OpenAiRequest r = Parse(kCompletions, {{"model", "m"}, {"prompt", "Once"}});
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.generation.prompt, "Once");
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FLOAT_EQ(r.generation.sampling.temperature, 1.0f);  // OpenAI's default.
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.generation.sampling.logprobs);

  r = Parse(kCompletions, {{"prompt", {1, 2, 3}},
                           {"max_tokens", 7},
                           {"temperature", 0},
                           {"top_p", 0.5},
                           {"seed", 42},
                           {"stop", "\n"},
                           {"logprobs", 3},
                           {"top_k", 5},
                           {"mode", "sparse"},
                           {"top_k_blocks", 2},
                           {"combine", "parallel"},
                           {"ignore_eos", true},
                           {"stream", true},
                           {"stream_options", {{"include_usage", true}}}});
  const GenerationRequest& g = r.generation;
  EXPECT_EQ(g.prompt_ids, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(g.sampling.max_new_tokens, 7);
  EXPECT_EQ(g.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(g.sampling.top_p, 0.5f);
  EXPECT_EQ(g.sampling.seed, 42u);
  EXPECT_EQ(g.sampling.stop, std::vector<std::string>{"\n"});
  EXPECT_TRUE(g.sampling.logprobs);
  EXPECT_EQ(g.sampling.top_logprobs, 3);
  EXPECT_EQ(g.sampling.top_k, 5);
  EXPECT_FALSE(g.sampling.stop_at_eos);
  EXPECT_EQ(g.mode, GenerationMode::kSparse);
  EXPECT_EQ(g.top_k_blocks, 2);
  EXPECT_EQ(g.combine, CombineMode::kParallel);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);

  // One prompt in a list; top_k -1 = off; stop as a list.
  r = Parse(kCompletions, {{"prompt", {"Hi"}}, {"top_k", -1}, {"stop", {"a", "b"}}});
  EXPECT_EQ(r.generation.prompt, "Hi");
  EXPECT_EQ(r.generation.sampling.top_k, 0);
  EXPECT_EQ(r.generation.sampling.stop, (std::vector<std::string>{"a", "b"}));
  r = Parse(kCompletions, {{"prompt", {{4, 5}}}, {"logprobs", 0}});
  EXPECT_EQ(r.generation.prompt_ids, (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(r.generation.sampling.logprobs);
  EXPECT_EQ(r.generation.sampling.top_logprobs, 0);
}

TEST(OpenAiParse, ChatFields) {
  OpenAiRequest r = Parse(kChat, {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                  {"max_completion_tokens", 9},
                                  {"logprobs", true},
                                  {"top_logprobs", 4}});
  EXPECT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.max_tokens, 9);
  EXPECT_TRUE(r.generation.sampling.logprobs);
  EXPECT_EQ(r.generation.sampling.top_logprobs, 4);
}

TEST(OpenAiParse, RefusalsNameTheField) {
  struct Case {
    OpenAiEndpoint endpoint;
    std::string body;
    std::string param;
  };
  const std::vector<Case> cases = {
      {kCompletions, R"({"prompt": "x", "n": 2})", "n"},
      {kCompletions, R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {kCompletions, R"({"prompt": "x", "temperature": 2.5})", "temperature"},
      {kCompletions, R"({"prompt": "x", "top_p": 0})", "top_p"},
      {kCompletions, R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {kCompletions, R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens"},
      {kCompletions, R"({"prompt": "x", "stop": [""]})", "stop"},
      {kCompletions, R"({"prompt": "x", "stop": [1]})", "stop"},
      {kCompletions, R"({"prompt": "x", "logprobs": 21})", "logprobs"},
      {kCompletions, R"({"prompt": "x", "mode": "fast"})", "mode"},
      {kCompletions, R"({"prompt": "x", "combine": "mix"})", "combine"},
      {kCompletions, R"({"prompt": "x", "best_of": 2})", "best_of"},
      {kCompletions, R"({"prompt": "x", "presence_penalty": 0.5})", "presence_penalty"},
      {kCompletions, R"({"prompt": "x", "echo": true})", "echo"},
      {kCompletions, R"({"prompt": "x", "stream_options": {"include_usage": true}})",
       "stream_options"},
      {kCompletions, R"({"prompt": ["a", "b"]})", "prompt"},
      {kCompletions, R"({"prompt": []})", "prompt"},
      {kCompletions, R"({"prompt": [1, "a"]})", "prompt"},
      {kCompletions, R"({})", "prompt"},
      {kChat, R"({"messages": []})", "messages"},
      {kChat, R"({"messages": [{"content": "x"}]})", "messages"},
      {kChat, R"({"messages": [{"role": "user"}], "top_logprobs": 2})", "top_logprobs"},
      {kChat, R"({"messages": [{"role": "user"}], "tools": {"type": "function"}})", "tools"},
      {kChat, R"({"messages": [{"role": "user"}], "functions": [{"name": "f"}]})", "functions"},
  };
  for (const Case& c : cases) {
    OpenAiError e = Refused(c.endpoint, c.body);
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_FALSE(e.message.empty());
  }
  for (const std::string body : {"{", "[1]", "", "null"}) {
    OpenAiError e = Refused(kCompletions, body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.param, "") << body;
  }
}

TEST(OpenAiErrors, StatusCodesAndShape) {
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("x")).http_status, 400);
  EXPECT_EQ(ErrorFromStatus(absl::FailedPreconditionError("x")).http_status, 400);
  OpenAiError ctx = ErrorFromStatus(absl::OutOfRangeError("x"));
  EXPECT_EQ(ctx.http_status, 400);
  EXPECT_EQ(ctx.code, "context_length_exceeded");
  EXPECT_EQ(ErrorFromStatus(absl::UnauthenticatedError("x")).http_status, 401);
  EXPECT_EQ(ErrorFromStatus(absl::NotFoundError("x")).http_status, 404);
  EXPECT_EQ(ErrorFromStatus(absl::ResourceExhaustedError("x")).http_status, 429);
  EXPECT_EQ(ErrorFromStatus(absl::UnavailableError("x")).http_status, 503);
  EXPECT_EQ(ErrorFromStatus(absl::DeadlineExceededError("x")).http_status, 504);
  EXPECT_EQ(ErrorFromStatus(absl::InternalError("x")).http_status, 500);
  const Json body = Json::parse(ErrorBody(ErrorFromStatus(InvalidParam("n", "only n = 1"))));
  EXPECT_EQ(body, Json::parse(R"({"error": {"message": "only n = 1", "type":
      "invalid_request_error", "param": "n", "code": null}})"));
}

std::vector<model::GeneratedToken> Tokens() {
  model::GeneratedToken a;
  a.id = 5;
  a.text = " Once";
  a.has_logprob = true;
  a.chosen = {5, -0.5f, " Once"};
  a.top_logprobs = {{5, -0.5f, " Once"}, {7, -1.5f, " The"}};
  model::GeneratedToken b;
  b.id = 6;
  b.text = " upon";
  b.has_logprob = true;
  b.chosen = {6, -0.25f, " upon"};
  b.top_logprobs = {{6, -0.25f, " upon"}};
  return {a, b};
}

TEST(OpenAiJson, CompletionWithLogprobs) {
  ResponseMeta meta{kCompletions,
                    "cmpl-req-1",
                    100,
                    "m",
                    /*logprobs=*/true,
                    /*return_token_ids=*/true};
  const Json j = CompletionJson(meta, " Once upon", Tokens(), "eos", {1, 2, 3}, 2);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], " Once upon");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["token_ids"], Json({5, 6}));
  EXPECT_EQ(j["prompt_token_ids"], Json({1, 2, 3}));
  EXPECT_EQ(j["usage"], Json::parse(R"({"prompt_tokens":3,"completion_tokens":2,
      "total_tokens":5})"));
  const Json& lp = j["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], Json({" Once", " upon"}));
  EXPECT_EQ(lp["token_logprobs"], Json({-0.5, -0.25}));
  EXPECT_EQ(lp["top_logprobs"][0], Json::parse(R"({" Once": -0.5, " The": -1.5})"));
  EXPECT_EQ(lp["text_offset"], Json({0, 5}));
}

TEST(OpenAiJson, ChatAndChunks) {
  ResponseMeta meta{kChat, "chatcmpl-req-2", 100, "m", true, false};
  const Json j = CompletionJson(meta, "Hi", Tokens(), "length", {1}, 2);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"], Json::parse(R"({"role":"assistant","content":"Hi"})"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(j["choices"][0].contains("token_ids"));
  const Json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], " Once");
  EXPECT_EQ(content[0]["bytes"], Json({32, 79, 110, 99, 101}));
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], " The");

  const Json first = ChunkJson(meta, "", {}, 0, "", /*first=*/true, /*with_usage_null=*/true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], Json::parse(R"({"role":"assistant","content":""})"));
  EXPECT_TRUE(first["usage"].is_null());
  const Json last = ChunkJson(meta, "", {}, 0, "stop", false, false);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["choices"][0]["delta"], Json::object());
  EXPECT_FALSE(last.contains("usage"));
  const Json usage = UsageChunkJson(meta, 3, 4);
  EXPECT_EQ(usage["choices"], Json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

TEST(OpenAiJson, FinishReasons) {
  EXPECT_EQ(OpenAiFinishReason("eos"), "stop");
  EXPECT_EQ(OpenAiFinishReason("stop"), "stop");
  EXPECT_EQ(OpenAiFinishReason("length"), "length");
  EXPECT_EQ(OpenAiFinishReason("context"), "length");
}

}  // namespace
}  // namespace swarm::coordinator
