// ChatTemplate (see chat_template.h): loading tokenizer_config.json / chat_template.jinja and the
// variables transformers gives a chat template.
#include "tokenizer/chat_template.h"

#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer_internal.h"

namespace swarm::tokenizer {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// The special tokens transformers passes to templates (its special_tokens_map).
constexpr const char* kSpecialTokenKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                             "pad_token", "cls_token", "mask_token"};

jinja::Value StrftimeNow(std::optional<absl::CivilDay> date) {
  return jinja::Value::Function(
      "strftime_now",
      [date](const std::vector<jinja::Value>& args,
             const jinja::Kwargs&) -> absl::StatusOr<jinja::Value> {
        if (args.size() != 1 || !args[0].is_string()) {
          return absl::InvalidArgumentError("expects one format string");
        }
        const std::string& format = args[0].str();
        if (format.size() > 256) return absl::InvalidArgumentError("format longer than 256 bytes");
        std::tm tm;
        if (date.has_value()) {
          tm = absl::ToTM(absl::FromCivil(absl::CivilSecond(*date), absl::UTCTimeZone()),
                          absl::UTCTimeZone());
        } else {
          tm = absl::ToTM(absl::Now(), absl::LocalTimeZone());
        }
        if (format.empty()) return jinja::Value("");
        char buf[4096];
        const size_t n = std::strftime(buf, sizeof(buf), format.c_str(), &tm);
        return jinja::Value(std::string(buf, n));
      });
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromSource(
    absl::string_view template_text, std::map<std::string, std::string> special_tokens,
    absl::string_view source) {
  auto tmpl = jinja::Template::Parse(template_text);
  if (!tmpl.ok()) return Annotate(tmpl.status(), source);
  std::unique_ptr<ChatTemplate> chat(new ChatTemplate());
  chat->templates_.emplace_back("", *std::move(tmpl));
  chat->special_tokens_ = std::move(special_tokens);
  return chat;
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromTokenizerConfig(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, internal::ReadWholeFile(path));
  const std::string where = absl::StrCat("tokenizer config '", path, "'");
  Json config = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  }
  std::unique_ptr<ChatTemplate> chat(new ChatTemplate());
  for (const char* key : kSpecialTokenKeys) {
    if (!config.contains(key)) continue;
    const Json& v = config.at(key);
    if (v.is_string()) {
      chat->special_tokens_[key] = v.get<std::string>();
    } else if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
      chat->special_tokens_[key] = v.at("content").get<std::string>();
    }
  }

  auto add = [&](std::string name, const std::string& source,
                 const std::string& origin) -> absl::Status {
    auto tmpl = jinja::Template::Parse(source);
    if (!tmpl.ok()) return Annotate(tmpl.status(), origin);
    chat->templates_.emplace_back(std::move(name), *std::move(tmpl));
    return absl::OkStatus();
  };
  std::error_code ec;
  const fs::path jinja_path = fs::path(path).parent_path() / "chat_template.jinja";
  if (fs::exists(jinja_path, ec)) {
    ASSIGN_OR_RETURN(std::string source, internal::ReadWholeFile(jinja_path.string()));
    RETURN_IF_ERROR(add("", source, absl::StrCat("'", jinja_path.string(), "'")));
    return chat;
  }
  if (!config.contains("chat_template") || config.at("chat_template").is_null()) {
    return absl::NotFoundError(
        absl::StrCat(where, " has no chat_template (and there is no ", jinja_path.string(), ")"));
  }
  const Json& t = config.at("chat_template");
  if (t.is_string()) {
    RETURN_IF_ERROR(add("", t.get<std::string>(), absl::StrCat(where, ": chat_template")));
    return chat;
  }
  if (t.is_array()) {
    for (const Json& entry : t) {
      if (!entry.is_object() || !entry.contains("name") || !entry.at("name").is_string() ||
          !entry.contains("template") || !entry.at("template").is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": chat_template list entries must be {\"name\": ..., \"template\": ...}"));
      }
      const std::string name = entry.at("name").get<std::string>();
      RETURN_IF_ERROR(add(name, entry.at("template").get<std::string>(),
                          absl::StrCat(where, ": chat_template '", name, "'")));
    }
    if (!chat->templates_.empty()) return chat;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": chat_template must be a string or a non-empty list of templates"));
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromModelDir(const std::string& dir) {
  return FromTokenizerConfig((fs::path(dir) / "tokenizer_config.json").string());
}

std::vector<std::string> ChatTemplate::template_names() const {
  std::vector<std::string> names;
  for (const auto& t : templates_) names.push_back(t.first);
  return names;
}

absl::StatusOr<std::string> ChatTemplate::Render(const jinja::Value& messages,
                                                 const RenderOptions& options) const {
  if (!messages.is_list()) {
    return absl::InvalidArgumentError("chat template: messages must be a list");
  }
  const jinja::Template* tmpl = nullptr;
  if (templates_.size() == 1 && templates_[0].first.empty() && options.template_name.empty()) {
    tmpl = templates_[0].second.get();
  } else {
    std::vector<std::string> wanted;
    if (!options.template_name.empty()) {
      wanted.push_back(options.template_name);
    } else {
      if (options.tools.has_value()) wanted.push_back("tool_use");
      wanted.push_back("default");
    }
    for (const std::string& name : wanted) {
      for (const auto& [n, t] : templates_) {
        if (n == name && tmpl == nullptr) tmpl = t.get();
      }
    }
    if (tmpl == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("chat template: no template named '", wanted.front(), "'"));
    }
  }

  std::map<std::string, jinja::Value> globals;
  for (const auto& [key, token] : special_tokens_) globals[key] = jinja::Value(token);
  globals["messages"] = messages;
  globals["add_generation_prompt"] = jinja::Value(options.add_generation_prompt);
  if (options.tools.has_value()) globals["tools"] = *options.tools;
  globals["strftime_now"] = StrftimeNow(options.date);
  for (const auto& [key, value] : options.extra) globals[key] = value;

  absl::StatusOr<std::string> out = tmpl->Render(globals, options.limits);
  if (!out.ok() && !jinja::IsRaisedException(out.status())) {
    return Annotate(out.status(), "chat template");
  }
  return out;
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 const RenderOptions& options) const {
  std::vector<jinja::Value> list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    list.push_back(jinja::Value::Dict({{jinja::Value("role"), jinja::Value(m.role)},
                                       {jinja::Value("content"), jinja::Value(m.content)}}));
  }
  return Render(jinja::Value::List(std::move(list)), options);
}

absl::StatusOr<absl::CivilDay> ParseDate(absl::string_view text) {
  absl::CivilDay day;
  if (text.size() != 10 || text[4] != '-' || text[7] != '-' || !absl::ParseCivilTime(text, &day) ||
      absl::FormatCivilTime(day) != text) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a date of the form YYYY-MM-DD"));
  }
  return day;
}

absl::StatusOr<std::optional<absl::CivilDay>> ResolveRenderDate(absl::string_view flag_value) {
  if (!flag_value.empty()) {
    absl::StatusOr<absl::CivilDay> day = ParseDate(flag_value);
    if (!day.ok()) return Annotate(day.status(), "--date");
    return std::optional<absl::CivilDay>(*day);
  }
  const char* env = std::getenv("SWARM_DATE");
  if (env != nullptr && *env != '\0') {
    absl::StatusOr<absl::CivilDay> day = ParseDate(env);
    if (!day.ok()) return Annotate(day.status(), "SWARM_DATE");
    return std::optional<absl::CivilDay>(*day);
  }
  return std::optional<absl::CivilDay>();
}

}  // namespace swarm::tokenizer
