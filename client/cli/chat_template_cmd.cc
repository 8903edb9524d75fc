// `swarm chat-template --tokenizer-config FILE --messages FILE [--tools FILE]
// [--add-generation-prompt] [--date YYYY-MM-DD]`: renders a conversation through the model's chat
// template (tokenizer/chat_template.h) and prints the text as one JSON string on stdout. The
// messages file holds a JSON list of messages (or an object with "messages" and optionally
// "tools", as in an OpenAI chat request); --tools a JSON list of tool schemas. strftime_now()
// in the template formats --date, else $SWARM_DATE, else today. A template's
// raise_exception(msg) exits 2 with msg on stderr.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "tokenizer/chat_template.h"

namespace swarm::cli {
namespace {

constexpr char kName[] = "chat-template";

// Parses a JSON file keeping object key order (tojson in templates writes keys in that order).
absl::StatusOr<nlohmann::ordered_json> ReadJson(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot open '", path, "'"));
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", path, "' is not valid JSON"));
  }
  return j;
}

absl::StatusOr<tokenizer::jinja::Value> ToValue(const std::string& flag,
                                                const nlohmann::ordered_json& j) {
  absl::StatusOr<tokenizer::jinja::Value> v = tokenizer::jinja::Value::FromJson(j);
  if (!v.ok())
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", v.status().message()));
  return v;
}

absl::Status Run(const Flags& flags) {
  absl::StatusOr<std::string> config = flags.Required("tokenizer-config");
  if (!config.ok()) return config.status();
  absl::StatusOr<std::string> messages_path = flags.Required("messages");
  if (!messages_path.ok()) return messages_path.status();

  tokenizer::RenderOptions options;
  options.add_generation_prompt = flags.Bool("add-generation-prompt");
  absl::StatusOr<std::optional<absl::CivilDay>> date =
      tokenizer::ResolveRenderDate(flags.String("date"));
  if (!date.ok()) return date.status();
  options.date = *date;

  absl::StatusOr<nlohmann::ordered_json> messages_json = ReadJson("messages", *messages_path);
  if (!messages_json.ok()) return messages_json.status();
  nlohmann::ordered_json messages = *messages_json;
  if (messages.is_object()) {
    if (messages.contains("tools") && !messages.at("tools").is_null()) {
      absl::StatusOr<tokenizer::jinja::Value> tools = ToValue("messages", messages.at("tools"));
      if (!tools.ok()) return tools.status();
      options.tools = *tools;
    }
    nlohmann::ordered_json inner =
        messages.contains("messages") ? messages.at("messages") : nlohmann::ordered_json();
    messages = std::move(inner);
  }
  if (!messages.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--messages: '", *messages_path,
                     "' must hold a JSON list of messages or an object with a \"messages\" list"));
  }
  if (flags.Has("tools")) {
    absl::StatusOr<nlohmann::ordered_json> tools_json = ReadJson("tools", flags.String("tools"));
    if (!tools_json.ok()) return tools_json.status();
    if (!tools_json->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tools: '", flags.String("tools"), "' must hold a JSON list"));
    }
    absl::StatusOr<tokenizer::jinja::Value> tools = ToValue("tools", *tools_json);
    if (!tools.ok()) return tools.status();
    options.tools = *tools;
  }
  absl::StatusOr<tokenizer::jinja::Value> messages_value = ToValue("messages", messages);
  if (!messages_value.ok()) return messages_value.status();

  absl::StatusOr<std::unique_ptr<tokenizer::ChatTemplate>> tmpl =
      tokenizer::ChatTemplate::FromTokenizerConfig(*config);
  if (!tmpl.ok()) return tmpl.status();
  absl::StatusOr<std::string> rendered = (*tmpl)->Render(*messages_value, options);
  if (!rendered.ok()) return rendered.status();

  const std::string out =
      nlohmann::json(*rendered).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
      "\n";
  if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
    return absl::UnavailableError("cannot write to stdout");
  }
  return absl::OkStatus();
}

const FlagSet& ChatTemplateFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm chat-template",
              "renders a model's chat template for a conversation; prints it as one JSON string");
    f.Required("tokenizer-config", "FILE",
               "tokenizer_config.json holding chat_template (a chat_template.jinja beside it "
               "wins)")
        .Required("messages", "FILE",
                  "a JSON list of messages, or an object {messages, tools} as OpenAI's API takes")
        .Value("tools", "FILE", "", "a JSON list of tool definitions")
        .Bool("add-generation-prompt", "end with the assistant turn's opening")
        .Value("date", "YYYY-MM-DD", "",
               "the date strftime_now gives (default: $SWARM_DATE, else today)");
    return f;
  }();
  return flags;
}

int ChatTemplateCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = ChatTemplateFlags().Parse(args);
  if (!flags.ok()) return Fail(kName, flags.status());
  absl::Status status = Run(*flags);
  if (!status.ok()) return Fail(kName, status);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(chat_template, "chat-template", ChatTemplateCommand,
                             ChatTemplateFlags);

}  // namespace swarm::cli
