// The OpenAI-compatible JSON of swarm-coordinator's HTTP API (http_api.h), free of any server:
// request bodies of POST /v1/completions and /v1/chat/completions parsed into the pipeline's
// GenerationRequest, and the pipeline's tokens and results written as OpenAI's response, stream
// chunk, logprobs, usage and error objects. Field names, defaults and shapes follow OpenAI's API
// (and vLLM's server where OpenAI is silent); Swarm's own options come as extra body fields
// (top_k, mode, top_k_blocks, combine).
//
// Pure functions over values; thread-safe.
#ifndef SWARM_COORDINATOR_OPENAI_API_H_
#define SWARM_COORDINATOR_OPENAI_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/pipeline.h"
#include "model/generate.h"
#include "nlohmann/json.hpp"
#include "tokenizer/jinja.h"

namespace swarm::coordinator {

enum class OpenAiEndpoint { kCompletions, kChat };

// An error as OpenAI sends it: {"error": {"message", "type", "param", "code"}} with its HTTP
// status.
struct OpenAiError {
  int http_status = 500;
  std::string type;  // "invalid_request_error", "authentication_error", ...
  std::string message;
  std::string param;  // "" = null.
  std::string code;   // "" = null.
};

// InvalidArgument whose OpenAI error names `param` (the body field at fault).
absl::Status InvalidParam(const std::string& param, const std::string& message);

// The HTTP status and error object for a failed request: INVALID_ARGUMENT, OUT_OF_RANGE (code
// "context_length_exceeded") and FAILED_PRECONDITION → 400, UNAUTHENTICATED → 401,
// PERMISSION_DENIED → 403, NOT_FOUND → 404, RESOURCE_EXHAUSTED → 429, UNAVAILABLE → 503,
// DEADLINE_EXCEEDED → 504, CANCELLED → 499, anything else → 500.
OpenAiError ErrorFromStatus(const absl::Status& status);
std::string ErrorBody(const OpenAiError& error);

// A parsed request body. `generation` has everything but the prompt of a chat request (the
// messages, rendered by the chat template) and, when max_tokens is absent, max_new_tokens
// (`max_tokens` unset: the caller fills it in from the prompt's length).
struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  GenerationRequest generation;
  std::string model;                  // "" = not given.
  nlohmann::json messages;            // Chat only: the messages array, as sent (checked).
  std::optional<int64_t> max_tokens;  // max_tokens (or chat's max_completion_tokens).
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage.
  bool echo = false;           // Completions: the prompt before the completion.
  // vLLM's extra field: the response carries "prompt_token_ids" and each choice (and chunk)
  // "token_ids".
  bool return_token_ids = false;
};

// Parses `body` (the raw request body). InvalidArgument (with the param named: InvalidParam)
// for malformed JSON, a field of the wrong type or out of range, n != 1, unsupported options
// (best_of != 1, penalties, logit_bias, suffix, functions; tools that are not a list); unknown
// fields are ignored. A random seed when none is given.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, const std::string& body);

// A chat body's `messages` and `tools` (absent or null: nullopt) as chat-template values
// (tokenizer/chat_template.h), read again as ordered_json so that the template's tojson keeps the
// client's key order. InvalidParam naming the field when either is malformed.
struct ChatInput {
  tokenizer::jinja::Value messages;
  std::optional<tokenizer::jinja::Value> tools;
};
absl::StatusOr<ChatInput> ParseChatInput(const std::string& body);

// OpenAI's finish_reason for ours: "eos" and "stop" → "stop", "length" and "context" →
// "length".
std::string OpenAiFinishReason(const std::string& finish_reason);

// What every response object of one request repeats.
struct ResponseMeta {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string id;       // "cmpl-…" or "chatcmpl-…".
  int64_t created = 0;  // Unix seconds.
  std::string model;
  bool logprobs = false;
  bool return_token_ids = false;
};

// {"prompt_tokens", "completion_tokens", "total_tokens"}.
nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens);

// The logprobs object of `tokens` (those with has_logprob): completions' {"tokens",
// "token_logprobs", "top_logprobs", "text_offset"} (offsets from `text_offset`), chat's
// {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}.
nlohmann::json LogprobsJson(OpenAiEndpoint endpoint,
                            const std::vector<model::GeneratedToken>& tokens, int64_t text_offset);

// The whole (non-streamed) response.
// The whole (non-streamed) response; `prompt_ids` and the tokens' ids are shown with
// meta.return_token_ids.
nlohmann::json CompletionJson(const ResponseMeta& meta, const std::string& text,
                              const std::vector<model::GeneratedToken>& tokens,
                              const std::string& finish_reason,
                              const std::vector<int64_t>& prompt_ids, int64_t completion_tokens);

// One streamed chunk: text (a chat delta, with "role" when `first`), the tokens' logprobs (and
// ids with meta.return_token_ids), and the finish reason ("" = null). `with_usage_null`: "usage":
// null, as OpenAI sends when the client asked for usage.
nlohmann::json ChunkJson(const ResponseMeta& meta, const std::string& text,
                         const std::vector<model::GeneratedToken>& tokens, int64_t text_offset,
                         const std::string& finish_reason, bool first, bool with_usage_null);

// The last chunk before [DONE] with stream_options.include_usage: no choices, the usage.
nlohmann::json UsageChunkJson(const ResponseMeta& meta, int64_t prompt_tokens,
                              int64_t completion_tokens);

// JSON text; invalid UTF-8 (a token that is part of a character) replaced by U+FFFD.
std::string Dump(const nlohmann::json& j);

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_OPENAI_API_H_
