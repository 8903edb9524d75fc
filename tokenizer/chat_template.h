// Chat templates: a model's Jinja `chat_template` turned into the prompt text for a conversation,
// as transformers' tokenizer.apply_chat_template(messages, tools=..., add_generation_prompt=...,
// tokenize=False) does. The template comes from tokenizer_config.json (`chat_template`: a string,
// or a list of {"name", "template"} of which "default" is used, or "tool_use" when tools are
// given and it exists) or from a chat_template.jinja file beside it, which wins (as in
// transformers). The variables a template sees: `messages`, `add_generation_prompt`, `tools`
// (only when given), the special tokens named in tokenizer_config.json (bos_token, eos_token,
// unk_token, pad_token, ...: strings or {"content": ...}; null ones are left undefined),
// `strftime_now(fmt)` and any extra variables (which override the others).
//
// Callers: the `swarm chat-template` command, the coordinator's HTTP chat endpoint. A
// ChatTemplate is immutable and Render may be called from many threads at once.
#ifndef SWARM_TOKENIZER_CHAT_TEMPLATE_H_
#define SWARM_TOKENIZER_CHAT_TEMPLATE_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "tokenizer/jinja.h"

namespace swarm::tokenizer {

// A plain text message (for callers without tool calls or content parts).
struct ChatMessage {
  std::string role;
  std::string content;
};

struct RenderOptions {
  bool add_generation_prompt = false;
  // Tool schemas (a list, OpenAI's `tools`); undefined in the template when absent.
  std::optional<jinja::Value> tools;
  // More variables (e.g. enable_thinking, date_string); they override the ones above.
  std::map<std::string, jinja::Value> extra;
  // The day strftime_now() formats (at 00:00:00); nullopt reads the local clock.
  std::optional<absl::CivilDay> date;
  // Name of a template in a named list; empty: "tool_use" with tools if present, else "default".
  std::string template_name;
  jinja::Limits limits;
};

class ChatTemplate {
 public:
  // Loads tokenizer_config.json at `path` (its special tokens, and the template unless a
  // chat_template.jinja next to it holds one). NotFound when the file is missing or no template
  // is found (the message says so); InvalidArgument "tokenizer config 'PATH': ..." for malformed
  // JSON or a template that does not parse (with its line and column).
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromTokenizerConfig(const std::string& path);
  // The same for a model directory: DIR/tokenizer_config.json and DIR/chat_template.jinja.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromModelDir(const std::string& dir);
  // From template text and special tokens (e.g. {"bos_token": "<s>"}); `source` names it in
  // errors.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> FromSource(
      absl::string_view template_text, std::map<std::string, std::string> special_tokens,
      absl::string_view source = "chat template");

  // Renders `messages` (a list of dicts, as parsed from OpenAI-style JSON with
  // jinja::Value::FromJson; parse with nlohmann::ordered_json so that tojson keeps key order).
  // Errors: InvalidArgument when messages is not a list or the template fails; a template's
  // raise_exception(msg) gives exactly msg (jinja::IsRaisedException tells it apart), other
  // template errors read "chat template: line L column C: ...". RESOURCE_EXHAUSTED past a limit.
  absl::StatusOr<std::string> Render(const jinja::Value& messages,
                                     const RenderOptions& options) const;
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     const RenderOptions& options) const;

  // The special tokens given to the template (bos_token, eos_token, ...).
  const std::map<std::string, std::string>& special_tokens() const { return special_tokens_; }
  // Names of the templates (one empty name for a single template).
  std::vector<std::string> template_names() const;

 private:
  ChatTemplate() = default;
  std::vector<std::pair<std::string, std::unique_ptr<jinja::Template>>> templates_;
  std::map<std::string, std::string> special_tokens_;
};

// "YYYY-MM-DD" → a day; InvalidArgument naming the text otherwise.
absl::StatusOr<absl::CivilDay> ParseDate(absl::string_view text);
// The date renders use: `flag_value` when non-empty (--date), else $SWARM_DATE when set, else
// nullopt (the clock). InvalidArgument naming --date or SWARM_DATE when malformed.
absl::StatusOr<std::optional<absl::CivilDay>> ResolveRenderDate(absl::string_view flag_value);

}  // namespace swarm::tokenizer

#endif  // SWARM_TOKENIZER_CHAT_TEMPLATE_H_
