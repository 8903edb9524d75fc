// Chat templates: every case of ../shared/fixtures/chat_templates/golden_visible.json (real
// Hugging Face templates rendered by @huggingface/jinja and checked against Python Jinja2) renders
// byte-identical, or raises where the reference raised; loading from tokenizer_config.json and
// chat_template.jinja; the date sources; and `swarm chat-template` end to end.
#include "tokenizer/chat_template.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/files.h"
#include "tests/util/skip.h"

namespace swarm::tokenizer {
namespace {

using ::testing::HasSubstr;
using OrderedJson = nlohmann::ordered_json;

const std::string kFixtures = std::string(SWARM_SHARED_DIR) + "/fixtures/chat_templates";

using test_util::ReadFile;
using test_util::WriteFile;

std::string TempDir(const std::string& name) {
  return test_util::MakeTempDir("swarm_chat_template_test", name);
}

jinja::Value ToValue(const OrderedJson& j) {
  absl::StatusOr<jinja::Value> v = jinja::Value::FromJson(j);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : jinja::Value();
}

// ---------------------------------------------------------------------------------------------
// The golden cases.

struct GoldenCase {
  std::string name;  // gtest-safe: template_case_gen|nogen
  OrderedJson json;
};

std::vector<GoldenCase> LoadGoldenCases() {
  std::vector<GoldenCase> cases;
  const std::string text = ReadFile(kFixtures + "/golden_visible.json");
  OrderedJson all = OrderedJson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (all.is_discarded() || !all.is_array()) {
    cases.push_back({"fixture_missing", OrderedJson()});
    return cases;
  }
  for (const OrderedJson& c : all) {
    std::string name = absl::StrCat(c.value("template", "?"), "_", c.value("case", "?"), "_",
                                    c.value("add_generation_prompt", false) ? "gen" : "nogen");
    for (char& ch : name) {
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    cases.push_back({name, c});
  }
  return cases;
}

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, RendersLikeTheReference) {
  const OrderedJson& c = GetParam().json;
  if (c.is_null()) {
    SWARM_SKIP_OR_FAIL(absl::StrCat(kFixtures, "/golden_visible.json not readable"));
  }
  // The template files have tokenizer_config.json's shape (chat_template, bos_token, eos_token).
  const std::string path =
      absl::StrCat(kFixtures, "/templates/", c.at("template").get<std::string>(), ".json");
  absl::StatusOr<std::unique_ptr<ChatTemplate>> tmpl = ChatTemplate::FromTokenizerConfig(path);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  RenderOptions options;
  options.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
  options.date = absl::CivilDay(2024, 7, 26);  // The goldens' clock.
  if (c.contains("tools")) options.tools = ToValue(c.at("tools"));
  absl::StatusOr<std::string> out = (*tmpl)->Render(ToValue(c.at("messages")), options);
  if (c.value("error", false)) {
    ASSERT_FALSE(out.ok()) << "rendered, but the reference raised:\n" << *out;
    EXPECT_TRUE(jinja::IsRaisedException(out.status())) << out.status();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, c.at("rendered").get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(LoadGoldenCases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           return info.param.name;
                         });

TEST(GoldenFixtures, CoverEveryTemplate) {
  const std::vector<GoldenCase> cases = LoadGoldenCases();
  if (cases.size() == 1 && cases[0].json.is_null()) SWARM_SKIP_OR_FAIL("fixture missing");
  std::set<std::string> templates;
  int raising = 0;
  for (const GoldenCase& c : cases) {
    templates.insert(c.json.at("template").get<std::string>());
    raising += c.json.value("error", false);
  }
  EXPECT_EQ(templates.size(), 14u);
  EXPECT_GT(raising, 0);
  EXPECT_GE(cases.size(), 300u);
}

// ---------------------------------------------------------------------------------------------
// Loading.

TEST(ChatTemplateLoad, StringListAndJinjaFile) {
  const std::string dir = TempDir("load");
  WriteFile(dir + "/tokenizer_config.json", R"({
    "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "pad_token": null,
    "chat_template": [
      {"name": "default", "template": "D{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
      {"name": "tool_use", "template": "T{{ tools | length }}{{ pad_token is defined }}"}
    ]})");
  auto tmpl = ChatTemplate::FromModelDir(dir);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  RenderOptions options;
  EXPECT_EQ(*(*tmpl)->Render(std::vector<ChatMessage>{{"user", "hi"}}, options), "D<s>hi</s>");
  options.tools = jinja::Value::List({jinja::Value("a"), jinja::Value("b")});
  EXPECT_EQ(*(*tmpl)->Render(std::vector<ChatMessage>{{"user", "hi"}}, options), "T2False");
  options.template_name = "default";
  EXPECT_EQ(*(*tmpl)->Render(std::vector<ChatMessage>{{"user", "hi"}}, options), "D<s>hi</s>");
  options.template_name = "nope";
  EXPECT_EQ((*tmpl)->Render(std::vector<ChatMessage>{}, options).status().code(),
            absl::StatusCode::kNotFound);

  // chat_template.jinja beside the config wins (as in transformers).
  WriteFile(dir + "/chat_template.jinja", "J{{ messages | length }}{{ bos_token }}\n");
  tmpl = ChatTemplate::FromTokenizerConfig(dir + "/tokenizer_config.json");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_EQ(*(*tmpl)->Render(std::vector<ChatMessage>{{"user", "a"}, {"assistant", "b"}}, {}),
            "J2<s>");
}

TEST(ChatTemplateLoad, Errors) {
  const std::string dir = TempDir("errors");
  EXPECT_EQ(ChatTemplate::FromModelDir(dir + "/missing").status().code(),
            absl::StatusCode::kNotFound);
  WriteFile(dir + "/tokenizer_config.json", R"({"bos_token": "<s>"})");
  auto none = ChatTemplate::FromModelDir(dir);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("has no chat_template"));
  WriteFile(dir + "/tokenizer_config.json",
            R"({"chat_template": "{% for m in messages %}\n{{ m"})");
  auto bad = ChatTemplate::FromModelDir(dir);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("chat_template: line 2 column 1"));
  WriteFile(dir + "/tokenizer_config.json", "{not json");
  EXPECT_THAT(ChatTemplate::FromModelDir(dir).status().message(), HasSubstr("not a JSON object"));
  WriteFile(dir + "/tokenizer_config.json", R"({"chat_template": 5})");
  EXPECT_EQ(ChatTemplate::FromModelDir(dir).status().code(), absl::StatusCode::kInvalidArgument);

  auto ok = ChatTemplate::FromSource("{{ messages }}", {});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->Render(jinja::Value("not a list"), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateRender, RaiseExceptionKeepsTheMessage) {
  auto tmpl = ChatTemplate::FromSource(
      "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
      "{{ messages[0].content }}{{ undefined_thing.attr }}",
      {});
  ASSERT_TRUE(tmpl.ok());
  auto raised = (*tmpl)->Render(std::vector<ChatMessage>{{"system", "x"}}, {});
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(raised.status().message(), "first must be user");
  EXPECT_TRUE(jinja::IsRaisedException(raised.status()));
  auto other = (*tmpl)->Render(std::vector<ChatMessage>{{"user", "x"}}, {});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(jinja::IsRaisedException(other.status()));
  EXPECT_EQ(other.status().message(),
            "chat template: line 1 column 133: 'undefined_thing' is undefined");
}

TEST(ChatTemplateRender, StrftimeNowAndExtraVariables) {
  auto tmpl = ChatTemplate::FromSource(
      "{{ strftime_now('%d %b %Y %H:%M %A') }}|{{ enable_thinking }}|{{ add_generation_prompt }}",
      {});
  ASSERT_TRUE(tmpl.ok());
  RenderOptions options;
  options.date = absl::CivilDay(2025, 1, 3);
  options.extra["enable_thinking"] = jinja::Value(false);
  options.add_generation_prompt = true;
  EXPECT_EQ(*(*tmpl)->Render(std::vector<ChatMessage>{}, options),
            "03 Jan 2025 00:00 Friday|False|True");
  // Without a date the clock is read: the year is this year's.
  options.date.reset();
  auto now = (*tmpl)->Render(std::vector<ChatMessage>{}, options);
  ASSERT_TRUE(now.ok());
  EXPECT_THAT(
      *now, HasSubstr(absl::StrCat(absl::ToCivilYear(absl::Now(), absl::LocalTimeZone()).year())));
}

TEST(ChatTemplateDate, FlagThenEnvironment) {
  EXPECT_EQ(*ParseDate("2024-07-26"), absl::CivilDay(2024, 7, 26));
  for (const char* bad : {"2024-7-26", "2024-02-30", "26/07/2024", "", "2024-07-26x"}) {
    EXPECT_EQ(ParseDate(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  ::unsetenv("SWARM_DATE");
  EXPECT_FALSE(ResolveRenderDate("")->has_value());
  ::setenv("SWARM_DATE", "2023-12-31", 1);
  EXPECT_EQ(**ResolveRenderDate(""), absl::CivilDay(2023, 12, 31));
  EXPECT_EQ(**ResolveRenderDate("2020-01-02"), absl::CivilDay(2020, 1, 2));
  ::setenv("SWARM_DATE", "yesterday", 1);
  EXPECT_THAT(ResolveRenderDate("").status().message(), HasSubstr("SWARM_DATE"));
  EXPECT_THAT(ResolveRenderDate("bad").status().message(), HasSubstr("--date"));
  ::unsetenv("SWARM_DATE");
}

// ---------------------------------------------------------------------------------------------
// `swarm chat-template`.

struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
};

CliResult Swarm(const std::string& args, const std::string& env = "") {
  const std::string dir = TempDir("cli_out");
  const std::string out = dir + "/stdout";
  const std::string err = dir + "/stderr";
  const std::string cmd =
      absl::StrCat(env, " '", SWARM_BINARY_DIR, "/swarm' ", args, " > '", out, "' 2> '", err, "'");
  CliResult r;
  const int status = std::system(cmd.c_str());
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

class ChatTemplateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(SWARM_BINARY_DIR) + "/swarm")) {
      SWARM_SKIP_OR_FAIL("swarm binary not built");
    }
  }
};

TEST_F(ChatTemplateCli, PrintsTheRenderingAsOneJsonString) {
  const std::string text = ReadFile(kFixtures + "/golden_visible.json");
  OrderedJson all = OrderedJson::parse(text, nullptr, false);
  ASSERT_TRUE(all.is_array());
  const std::string dir = TempDir("cli");
  // A tool case through llama-3.2 (tools, tojson(indent=4), strftime_now) with and without
  // --add-generation-prompt.
  int checked = 0;
  for (const OrderedJson& c : all) {
    if (c.at("template") != "llama-3.2" || !c.contains("tools")) continue;
    WriteFile(dir + "/messages.json", c.at("messages").dump());
    WriteFile(dir + "/tools.json", c.at("tools").dump());
    const bool gen = c.at("add_generation_prompt").get<bool>();
    CliResult r = Swarm(
        absl::StrCat("chat-template --tokenizer-config '", kFixtures,
                     "/templates/llama-3.2.json' --messages '", dir, "/messages.json' --tools '",
                     dir, "/tools.json' --date 2024-07-26", gen ? " --add-generation-prompt" : ""));
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_FALSE(r.out.empty());
    EXPECT_EQ(r.out.back(), '\n');
    OrderedJson printed = OrderedJson::parse(r.out, nullptr, false);
    ASSERT_TRUE(printed.is_string()) << r.out;
    EXPECT_EQ(printed.get<std::string>(), c.at("rendered").get<std::string>());
    // The same as one OpenAI-style request object holding messages and tools.
    OrderedJson request = {{"messages", c.at("messages")}, {"tools", c.at("tools")}};
    WriteFile(dir + "/request.json", request.dump());
    CliResult r2 = Swarm(absl::StrCat(
        "chat-template --tokenizer-config '", kFixtures, "/templates/llama-3.2.json' --messages '",
        dir, "/request.json' --date 2024-07-26", gen ? " --add-generation-prompt" : ""));
    ASSERT_EQ(r2.code, 0) << r2.err;
    EXPECT_EQ(r2.out, r.out);
    ++checked;
  }
  EXPECT_EQ(checked, 2);

  // SWARM_DATE fixes strftime_now when --date is absent.
  WriteFile(dir + "/one.json", R"([{"role": "user", "content": "hi"}])");
  CliResult dated =
      Swarm(absl::StrCat("chat-template --tokenizer-config '", kFixtures,
                         "/templates/llama-3.2.json' --messages '", dir, "/one.json'"),
            "SWARM_DATE=2025-03-04");
  ASSERT_EQ(dated.code, 0) << dated.err;
  EXPECT_THAT(dated.out, HasSubstr("Today Date: 04 Mar 2025"));
}

TEST_F(ChatTemplateCli, Errors) {
  const std::string dir = TempDir("cli_errors");
  WriteFile(dir + "/system.json",
            R"([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}])");
  CliResult raised =
      Swarm(absl::StrCat("chat-template --tokenizer-config '", kFixtures,
                         "/templates/gemma-2.json' --messages '", dir, "/system.json'"));
  EXPECT_EQ(raised.code, 2);
  EXPECT_TRUE(raised.out.empty());
  EXPECT_THAT(raised.err, HasSubstr("System role not supported"));

  CliResult missing = Swarm("chat-template --messages x.json");
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.err, HasSubstr("--tokenizer-config"));

  WriteFile(dir + "/bad.json", "[{");
  CliResult bad = Swarm(absl::StrCat("chat-template --tokenizer-config '", kFixtures,
                                     "/templates/gemma-2.json' --messages '", dir, "/bad.json'"));
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("bad.json"));

  CliResult date = Swarm(absl::StrCat("chat-template --tokenizer-config '", kFixtures,
                                      "/templates/gemma-2.json' --messages '", dir,
                                      "/system.json' --date 2024-13-01"));
  EXPECT_EQ(date.code, 2);
  EXPECT_THAT(date.err, HasSubstr("--date"));
}

}  // namespace
}  // namespace swarm::tokenizer
