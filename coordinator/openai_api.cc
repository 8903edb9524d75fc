#include "coordinator/openai_api.h"

#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace swarm::coordinator {

namespace {

constexpr char kParamPayload[] = "swarm.openai.param";

using Json = nlohmann::json;

const char* TypeName(const Json& j) { return j.type_name(); }

// Optional typed fields: absent or null = nullopt; a wrong type is InvalidParam.
absl::StatusOr<std::optional<double>> Number(const Json& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) {
    return InvalidParam(name, absl::StrCat("'", name, "' must be a number, got ", TypeName(*it)));
  }
  const double v = it->get<double>();
  if (!std::isfinite(v)) return InvalidParam(name, absl::StrCat("'", name, "' must be finite"));
  return v;
}

absl::StatusOr<std::optional<int64_t>> Integer(const Json& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    const double v = it->get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15) {
      return static_cast<int64_t>(v);
    }
  }
  return InvalidParam(name, absl::StrCat("'", name, "' must be an integer, got ", it->dump()));
}

absl::StatusOr<std::optional<bool>> Boolean(const Json& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    return InvalidParam(name, absl::StrCat("'", name, "' must be a boolean, got ", TypeName(*it)));
  }
  return it->get<bool>();
}

absl::StatusOr<std::optional<std::string>> String(const Json& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    return InvalidParam(name, absl::StrCat("'", name, "' must be a string, got ", TypeName(*it)));
  }
  return it->get<std::string>();
}

// A token id list: every element an integer id.
absl::StatusOr<std::vector<int64_t>> Ids(const Json& list, const std::string& param) {
  std::vector<int64_t> ids;
  for (const Json& e : list) {
    if (!e.is_number_integer()) {
      return InvalidParam(param, absl::StrCat("'", param,
                                              "' must be a string or a list of token "
                                              "ids; found ",
                                              e.dump()));
    }
    ids.push_back(e.get<int64_t>());
  }
  return ids;
}

absl::Status ParsePrompt(const Json& body, GenerationRequest& g) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return InvalidParam("prompt", "'prompt' is required");
  const Json& p = *it;
  if (p.is_string()) {
    g.prompt = p.get<std::string>();
    return absl::OkStatus();
  }
  if (!p.is_array()) {
    return InvalidParam("prompt", absl::StrCat("'prompt' must be a string or a list of token ids, "
                                               "got ",
                                               TypeName(p)));
  }
  // A list of one prompt (one string, or one list of ids) is that prompt; more is a batch.
  if (p.size() == 1 && (p[0].is_string() || p[0].is_array())) {
    if (p[0].is_string()) {
      g.prompt = p[0].get<std::string>();
      return absl::OkStatus();
    }
    auto ids = Ids(p[0], "prompt");
    if (!ids.ok()) return ids.status();
    g.prompt_ids = *std::move(ids);
  } else if (!p.empty() && (p[0].is_string() || p[0].is_array())) {
    return InvalidParam("prompt", "one prompt per request: send the prompts as separate requests");
  } else {
    auto ids = Ids(p, "prompt");
    if (!ids.ok()) return ids.status();
    g.prompt_ids = *std::move(ids);
  }
  if (g.prompt_ids.empty()) return InvalidParam("prompt", "the prompt is empty");
  return absl::OkStatus();
}

absl::Status ParseStop(const Json& body, model::SamplingParams& s) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    s.stop.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const Json& e : *it) {
      if (!e.is_string())
        return InvalidParam("stop", "'stop' must be a string or a list of strings");
      s.stop.push_back(e.get<std::string>());
    }
  } else {
    return InvalidParam("stop", "'stop' must be a string or a list of strings");
  }
  return absl::OkStatus();
}

// Options we do not implement: refused rather than silently ignored when they would change the
// output.
absl::Status RefuseUnsupported(const Json& body, OpenAiEndpoint endpoint) {
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    ASSIGN_OR_RETURN(auto v, Number(body, name));
    if (v.has_value() && *v != 0.0) {
      return InvalidParam(name, absl::StrCat("'", name, "' is not supported (only 0)"));
    }
  }
  ASSIGN_OR_RETURN(auto best_of, Integer(body, "best_of"));
  if (best_of.has_value() && *best_of != 1) {
    return InvalidParam("best_of", "'best_of' must be 1");
  }
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null() && !it->empty()) {
    return InvalidParam("logit_bias", "'logit_bias' is not supported");
  }
  if (endpoint == OpenAiEndpoint::kCompletions) {
    ASSIGN_OR_RETURN(auto suffix, String(body, "suffix"));
    if (suffix.has_value() && !suffix->empty()) {
      return InvalidParam("suffix", "'suffix' is not supported");
    }
  } else {
    if (auto it = body.find("functions"); it != body.end() && !it->is_null() && !it->empty()) {
      return InvalidParam("functions", "'functions' is not supported: use 'tools'");
    }
    if (auto it = body.find("tools"); it != body.end() && !it->is_null() && !it->is_array()) {
      return InvalidParam("tools", "'tools' must be a list of tool schemas");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InvalidParam(const std::string& param, const std::string& message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kParamPayload, absl::Cord(param));
  return s;
}

OpenAiError ErrorFromStatus(const absl::Status& status) {
  OpenAiError e;
  e.message = std::string(status.message());
  if (auto param = status.GetPayload(kParamPayload); param.has_value()) {
    e.param = std::string(*param);
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
      e.http_status = 400;
      e.type = "invalid_request_error";
      break;
    case absl::StatusCode::kOutOfRange:
      e.http_status = 400;
      e.type = "invalid_request_error";
      e.code = "context_length_exceeded";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403;
      e.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "invalid_request_error";
      e.code = "not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable_error";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      e.type = "timeout_error";
      break;
    case absl::StatusCode::kCancelled:
      e.http_status = 499;
      e.type = "cancelled";
      break;
    default:
      e.http_status = 500;
      e.type = "internal_error";
      break;
  }
  return e;
}

std::string ErrorBody(const OpenAiError& error) {
  Json e = {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? Json(nullptr) : Json(error.param)},
            {"code", error.code.empty() ? Json(nullptr) : Json(error.code)}};
  return Dump(Json{{"error", std::move(e)}});
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint,
                                                 const std::string& body_text) {
  Json body = Json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return absl::InvalidArgumentError("the request body is not valid JSON");
  }
  if (!body.is_object())
    return absl::InvalidArgumentError("the request body must be a JSON object");
  OpenAiRequest out;
  out.endpoint = endpoint;
  GenerationRequest& g = out.generation;
  model::SamplingParams& s = g.sampling;
  const bool chat = endpoint == OpenAiEndpoint::kChat;

  ASSIGN_OR_RETURN(auto model_name, String(body, "model"));
  out.model = model_name.value_or("");
  if (chat) {
    auto it = body.find("messages");
    if (it == body.end() || !it->is_array() || it->empty()) {
      return InvalidParam("messages", "'messages' must be a non-empty list of messages");
    }
    for (const Json& m : *it) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        return InvalidParam("messages", "each message must be an object with a string 'role'");
      }
    }
    out.messages = *it;
  } else {
    RETURN_IF_ERROR(ParsePrompt(body, g));
  }
  RETURN_IF_ERROR(RefuseUnsupported(body, endpoint));

  ASSIGN_OR_RETURN(auto n, Integer(body, "n"));
  if (n.has_value() && *n != 1) return InvalidParam("n", "only n = 1 is supported");
  ASSIGN_OR_RETURN(auto max_tokens, Integer(body, "max_tokens"));
  if (chat) {
    ASSIGN_OR_RETURN(auto max_completion, Integer(body, "max_completion_tokens"));
    if (max_completion.has_value()) max_tokens = max_completion;
  }
  if (max_tokens.has_value()) {
    if (*max_tokens < 1) {
      return InvalidParam(
          chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
          absl::StrCat("max_tokens must be at least 1, got ", *max_tokens));
    }
    out.max_tokens = *max_tokens;
    s.max_new_tokens = *max_tokens;
  }
  ASSIGN_OR_RETURN(auto temperature, Number(body, "temperature"));
  s.temperature = static_cast<float>(temperature.value_or(1.0));
  if (s.temperature < 0 || s.temperature > 2.0f) {
    return InvalidParam("temperature", absl::StrCat("temperature must be in [0, 2], got ",
                                                    temperature.value_or(1.0)));
  }
  ASSIGN_OR_RETURN(auto top_p, Number(body, "top_p"));
  s.top_p = static_cast<float>(top_p.value_or(1.0));
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) {
    return InvalidParam("top_p", absl::StrCat("top_p must be in (0, 1], got ", *top_p));
  }
  ASSIGN_OR_RETURN(auto top_k, Integer(body, "top_k"));
  // vLLM's convention: -1 (or 0) = off.
  if (top_k.has_value() && *top_k < -1) {
    return InvalidParam("top_k", absl::StrCat("top_k must be >= -1, got ", *top_k));
  }
  s.top_k = top_k.has_value() && *top_k > 0 ? *top_k : 0;
  ASSIGN_OR_RETURN(auto seed, Integer(body, "seed"));
  if (seed.has_value()) {
    s.seed = static_cast<uint64_t>(*seed);
  } else {
    std::random_device rd;
    s.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  ASSIGN_OR_RETURN(auto ignore_eos, Boolean(body, "ignore_eos"));
  s.stop_at_eos = !ignore_eos.value_or(false);
  RETURN_IF_ERROR(ParseStop(body, s));
  if (s.stop.size() > static_cast<size_t>(model::SamplingParams::kMaxStopStrings)) {
    return InvalidParam(
        "stop", absl::StrCat("at most ", model::SamplingParams::kMaxStopStrings, " stop strings"));
  }
  for (const std::string& stop : s.stop) {
    if (stop.empty()) return InvalidParam("stop", "a stop string is empty");
    if (stop.size() > static_cast<size_t>(model::SamplingParams::kMaxStopBytes)) {
      return InvalidParam("stop", absl::StrCat("a stop string is longer than ",
                                               model::SamplingParams::kMaxStopBytes, " bytes"));
    }
  }

  // Logprobs: completions' `logprobs: N`; chat's `logprobs: bool` + `top_logprobs: N`.
  const int max_top = model::SamplingParams::kMaxTopLogprobs;
  if (chat) {
    ASSIGN_OR_RETURN(auto logprobs, Boolean(body, "logprobs"));
    ASSIGN_OR_RETURN(auto top, Integer(body, "top_logprobs"));
    s.logprobs = logprobs.value_or(false);
    if (top.has_value()) {
      if (*top < 0 || *top > max_top) {
        return InvalidParam("top_logprobs",
                            absl::StrCat("top_logprobs must be in 0..", max_top, ", got ", *top));
      }
      if (!s.logprobs && *top > 0) {
        return InvalidParam("top_logprobs", "top_logprobs needs logprobs: true");
      }
      s.top_logprobs = static_cast<int>(*top);
    }
  } else {
    ASSIGN_OR_RETURN(auto logprobs, Integer(body, "logprobs"));
    if (logprobs.has_value()) {
      if (*logprobs < 0 || *logprobs > max_top) {
        return InvalidParam("logprobs",
                            absl::StrCat("logprobs must be in 0..", max_top, ", got ", *logprobs));
      }
      s.logprobs = true;
      s.top_logprobs = static_cast<int>(*logprobs);
    }
    ASSIGN_OR_RETURN(auto echo, Boolean(body, "echo"));
    out.echo = echo.value_or(false);
    if (out.echo) return InvalidParam("echo", "'echo' is not supported");
  }

  ASSIGN_OR_RETURN(auto stream, Boolean(body, "stream"));
  out.stream = stream.value_or(false);
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object())
      return InvalidParam("stream_options", "'stream_options' must be an object");
    if (!out.stream) {
      return InvalidParam("stream_options", "'stream_options' is only allowed with stream: true");
    }
    ASSIGN_OR_RETURN(auto include_usage, Boolean(*it, "include_usage"));
    out.include_usage = include_usage.value_or(false);
  }

  // Swarm's own options.
  ASSIGN_OR_RETURN(auto mode, String(body, "mode"));
  if (mode.has_value()) {
    if (*mode == "exact") {
      g.mode = GenerationMode::kExact;
    } else if (*mode == "sparse") {
      g.mode = GenerationMode::kSparse;
    } else {
      return InvalidParam("mode",
                          absl::StrCat("mode must be 'exact' or 'sparse', got '", *mode, "'"));
    }
  }
  ASSIGN_OR_RETURN(auto combine, String(body, "combine"));
  if (combine.has_value()) {
    if (*combine == "sequential") {
      g.combine = CombineMode::kSequential;
    } else if (*combine == "parallel") {
      g.combine = CombineMode::kParallel;
    } else {
      return InvalidParam("combine", absl::StrCat("combine must be 'sequential' or 'parallel', "
                                                  "got '",
                                                  *combine, "'"));
    }
  }
  ASSIGN_OR_RETURN(auto top_k_blocks, Integer(body, "top_k_blocks"));
  if (top_k_blocks.has_value()) {
    if (*top_k_blocks < 0 || *top_k_blocks > 1 << 20) {
      return InvalidParam("top_k_blocks",
                          absl::StrCat("top_k_blocks must be >= 0, got ", *top_k_blocks));
    }
    g.top_k_blocks = static_cast<int>(*top_k_blocks);
  }
  ASSIGN_OR_RETURN(auto return_token_ids, Boolean(body, "return_token_ids"));
  out.return_token_ids = return_token_ids.value_or(false);
  ASSIGN_OR_RETURN(auto user, String(body, "user"));  // Type-checked only.
  (void)user;
  RETURN_IF_ERROR(s.Validate());
  return out;
}

std::string OpenAiFinishReason(const std::string& finish_reason) {
  if (finish_reason == "eos" || finish_reason == "stop") return "stop";
  if (finish_reason == "length" || finish_reason == "context") return "length";
  return finish_reason;
}

Json UsageJson(int64_t prompt_tokens, int64_t completion_tokens) {
  return Json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens}};
}

namespace {

Json Bytes(const std::string& text) {
  Json out = Json::array();
  for (unsigned char c : text) out.push_back(static_cast<int>(c));
  return out;
}

}  // namespace

Json LogprobsJson(OpenAiEndpoint endpoint, const std::vector<model::GeneratedToken>& tokens,
                  int64_t text_offset) {
  if (endpoint == OpenAiEndpoint::kChat) {
    Json content = Json::array();
    for (const model::GeneratedToken& t : tokens) {
      if (!t.has_logprob) continue;
      Json top = Json::array();
      for (const model::TokenLogprob& a : t.top_logprobs) {
        top.push_back(Json{{"token", a.text}, {"logprob", a.logprob}, {"bytes", Bytes(a.text)}});
      }
      content.push_back(Json{{"token", t.chosen.text},
                             {"logprob", t.chosen.logprob},
                             {"bytes", Bytes(t.chosen.text)},
                             {"top_logprobs", std::move(top)}});
    }
    return Json{{"content", std::move(content)}};
  }
  Json toks = Json::array(), lps = Json::array(), tops = Json::array(), offsets = Json::array();
  int64_t offset = text_offset;
  for (const model::GeneratedToken& t : tokens) {
    if (!t.has_logprob) continue;
    toks.push_back(t.chosen.text);
    lps.push_back(t.chosen.logprob);
    Json top = Json::object();
    for (const model::TokenLogprob& a : t.top_logprobs) {
      if (!top.contains(a.text)) top[a.text] = a.logprob;
    }
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += static_cast<int64_t>(t.chosen.text.size());
  }
  return Json{{"tokens", std::move(toks)},
              {"token_logprobs", std::move(lps)},
              {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
}

namespace {

Json TokenIds(const std::vector<model::GeneratedToken>& tokens) {
  Json ids = Json::array();
  for (const model::GeneratedToken& t : tokens) {
    if (t.id >= 0) ids.push_back(t.id);
  }
  return ids;
}

}  // namespace

Json CompletionJson(const ResponseMeta& meta, const std::string& text,
                    const std::vector<model::GeneratedToken>& tokens,
                    const std::string& finish_reason, const std::vector<int64_t>& prompt_ids,
                    int64_t completion_tokens) {
  const int64_t prompt_tokens = static_cast<int64_t>(prompt_ids.size());
  const bool chat = meta.endpoint == OpenAiEndpoint::kChat;
  Json choice = {{"index", 0},
                 {"logprobs", meta.logprobs ? LogprobsJson(meta.endpoint, tokens, 0) : Json()},
                 {"finish_reason", OpenAiFinishReason(finish_reason)}};
  if (chat) {
    choice["message"] = Json{{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  if (meta.return_token_ids) choice["token_ids"] = TokenIds(tokens);
  Json out = {{"id", meta.id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", Json::array({std::move(choice)})},
              {"usage", UsageJson(prompt_tokens, completion_tokens)}};
  if (meta.return_token_ids) out["prompt_token_ids"] = prompt_ids;
  return out;
}

Json ChunkJson(const ResponseMeta& meta, const std::string& text,
               const std::vector<model::GeneratedToken>& tokens, int64_t text_offset,
               const std::string& finish_reason, bool first, bool with_usage_null) {
  const bool chat = meta.endpoint == OpenAiEndpoint::kChat;
  Json choice = {
      {"index", 0},
      {"logprobs", meta.logprobs && !tokens.empty()
                       ? LogprobsJson(meta.endpoint, tokens, text_offset)
                       : Json()},
      {"finish_reason", finish_reason.empty() ? Json() : Json(OpenAiFinishReason(finish_reason))}};
  if (chat) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (!first && finish_reason.empty())) delta["content"] = text;
    if (first && text.empty()) delta["content"] = "";
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  if (meta.return_token_ids) choice["token_ids"] = TokenIds(tokens);
  Json out = {{"id", meta.id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", Json::array({std::move(choice)})}};
  if (with_usage_null) out["usage"] = nullptr;
  return out;
}

Json UsageChunkJson(const ResponseMeta& meta, int64_t prompt_tokens, int64_t completion_tokens) {
  const bool chat = meta.endpoint == OpenAiEndpoint::kChat;
  return Json{{"id", meta.id},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", Json::array()},
              {"usage", UsageJson(prompt_tokens, completion_tokens)}};
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

absl::StatusOr<ChatInput> ParseChatInput(const std::string& body) {
  const nlohmann::ordered_json parsed =
      nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object() || !parsed.contains("messages")) {
    return InvalidParam("messages", "'messages' must be a non-empty list of messages");
  }
  absl::StatusOr<tokenizer::jinja::Value> messages =
      tokenizer::jinja::Value::FromJson(parsed["messages"]);
  if (!messages.ok()) return InvalidParam("messages", std::string(messages.status().message()));
  ChatInput input{*std::move(messages), std::nullopt};
  if (auto it = parsed.find("tools"); it != parsed.end() && !it->is_null()) {
    absl::StatusOr<tokenizer::jinja::Value> t = tokenizer::jinja::Value::FromJson(*it);
    if (!t.ok()) return InvalidParam("tools", std::string(t.status().message()));
    input.tools = *std::move(t);
  }
  return input;
}

}  // namespace swarm::coordinator
