#include "coordinator/http_api.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/host_port.h"
#include "common/metrics_server.h"
#include "common/status_macros.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/openai_api.h"
#include "coordinator/pipeline.h"
#include "httplib.h"

namespace swarm::coordinator {

namespace {

using Json = nlohmann::json;

constexpr int64_t kDefaultCompletionTokens = 16;  // OpenAI's default max_tokens (completions).
// How often a stream waiting for tokens checks that its client is still there.
constexpr absl::Duration kStreamPoll = absl::Milliseconds(100);

// One request under way: the pipeline (on the coordinator's request pool) fills it, the
// connection thread drains it.
struct HttpCall {
  CancellationHandle cancel;
  absl::Mutex mu;
  absl::CondVar changed;
  bool started ABSL_GUARDED_BY(mu) = false;
  bool done ABSL_GUARDED_BY(mu) = false;
  std::string request_id ABSL_GUARDED_BY(mu);
  std::deque<model::GeneratedToken> tokens ABSL_GUARDED_BY(mu);
  absl::StatusOr<GenerationResult> result ABSL_GUARDED_BY(mu) = absl::UnknownError("not run");
  // One of the client's token's request slots (--auth-tokens), held until the generation ends.
  TokenAuth::Lease lease ABSL_GUARDED_BY(mu);
};

void SendError(httplib::Response& res, const OpenAiError& e) {
  res.status = e.http_status;
  res.set_content(ErrorBody(e), "application/json");
}

void SendStatus(httplib::Response& res, const absl::Status& status) {
  SendError(res, ErrorFromStatus(status));
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The prompt of a chat request: the model's chat template over the body's messages (and tools,
// ParseChatInput), with the generation prompt (CoordinatorModel::RenderChat). Errors name
// `messages`: no template, or the template's raise_exception message.
absl::StatusOr<std::string> RenderChatPrompt(const CoordinatorServer& server,
                                             const std::string& body) {
  ASSIGN_OR_RETURN(ChatInput input, ParseChatInput(body));
  absl::StatusOr<std::string> prompt = server.model().RenderChat(input.messages, input.tools);
  if (!prompt.ok() &&
      (absl::IsInvalidArgument(prompt.status()) || absl::IsFailedPrecondition(prompt.status()))) {
    return InvalidParam("messages", std::string(prompt.status().message()));
  }
  return prompt;
}

}  // namespace

struct HttpApi::Calls {
  absl::Mutex mu;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  std::set<std::shared_ptr<HttpCall>> live ABSL_GUARDED_BY(mu);

  bool Add(const std::shared_ptr<HttpCall>& call) {
    absl::MutexLock lock(&mu);
    if (stopping) return false;
    live.insert(call);
    return true;
  }
  void Remove(const std::shared_ptr<HttpCall>& call) {
    absl::MutexLock lock(&mu);
    live.erase(call);
  }
  void CancelAll() {
    absl::MutexLock lock(&mu);
    stopping = true;
    for (const std::shared_ptr<HttpCall>& c : live) c->cancel.Cancel();
  }
};

namespace {

class Handlers {
 public:
  Handlers(CoordinatorServer* server, HttpApiOptions options, std::shared_ptr<HttpApi::Calls> calls)
      : server_(server), options_(std::move(options)), calls_(std::move(calls)) {}

  const std::string& model_name() const { return options_.model_name; }

  // The coordinator's --auth-tokens check (TokenAuth, as the gRPC service makes it) on the
  // Authorization header. With `lease`, also one of the token's request slots, so that HTTP and
  // gRPC requests count toward the same per-token limit. False: the error (401, 429) was sent.
  bool Authorized(const httplib::Request& req, httplib::Response& res,
                  TokenAuth::Lease* lease = nullptr) const {
    TokenAuth* auth = server_->auth();
    if (auth == nullptr) return true;
    const std::string authorization = req.get_header_value("Authorization");
    absl::Status s;
    if (lease != nullptr) {
      absl::StatusOr<TokenAuth::Lease> acquired = auth->Acquire(authorization);
      s = acquired.status();
      if (acquired.ok()) *lease = *std::move(acquired);
    } else {
      s = auth->Authenticate(authorization).status();
    }
    if (s.ok()) return true;
    SendStatus(res, s);
    return false;
  }

  void Models(const httplib::Request& req, httplib::Response& res) const {
    if (!Authorized(req, res)) return;
    res.set_content(Dump(Json{{"object", "list"}, {"data", Json::array({ModelJson()})}}),
                    "application/json");
  }

  void Model(const httplib::Request& req, httplib::Response& res) const {
    if (!Authorized(req, res)) return;
    const std::string id = req.matches.size() > 1 ? std::string(req.matches[1]) : "";
    if (id != options_.model_name) {
      SendStatus(res, absl::NotFoundError(absl::StrCat("the model '", id, "' does not exist")));
      return;
    }
    res.set_content(Dump(ModelJson()), "application/json");
  }

  void Health(const httplib::Request& /*req*/, httplib::Response& res) const {
    if (server_->serving()) {
      res.set_content("{\"status\":\"ok\"}", "application/json");
    } else {
      SendStatus(res, absl::UnavailableError("the coordinator is not serving yet"));
    }
  }

  void Generate(OpenAiEndpoint endpoint, const httplib::Request& req,
                httplib::Response& res) const {
    TokenAuth::Lease lease;
    if (!Authorized(req, res, &lease)) return;
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, req.body);
    if (!parsed.ok()) return SendStatus(res, parsed.status());
    if (!parsed->model.empty() && parsed->model != options_.model_name) {
      return SendError(res, OpenAiError{404, "invalid_request_error",
                                        absl::StrCat("the model '", parsed->model,
                                                     "' does not exist; this server serves '",
                                                     options_.model_name, "'"),
                                        "model", "model_not_found"});
    }
    GenerationRequest& g = parsed->generation;
    if (endpoint == OpenAiEndpoint::kChat) {
      absl::StatusOr<std::string> prompt = RenderChatPrompt(*server_, req.body);
      if (!prompt.ok()) return SendStatus(res, prompt.status());
      g.prompt = *std::move(prompt);
      g.add_special_tokens = false;  // The template writes BOS itself.
    }
    if (absl::Status s = DefaultMaxTokens(*parsed); !s.ok()) return SendStatus(res, s);
    g.arrival = absl::Now();

    auto call = std::make_shared<HttpCall>();
    {
      absl::MutexLock lock(&call->mu);
      call->lease = std::move(lease);
    }
    if (!calls_->Add(call)) {
      const absl::Status s = absl::UnavailableError("the coordinator is shutting down");
      server_->pipeline().Refuse(g.mode, s);
      return SendStatus(res, s);
    }
    absl::Status scheduled = server_->Schedule([server = server_, call, request = g] {
      GenerationSink sink;
      sink.on_start = [&call](const GenerationStart& start) {
        absl::MutexLock lock(&call->mu);
        call->started = true;
        call->request_id = start.request_id;
        call->changed.SignalAll();
      };
      sink.on_token = [&call](const model::GeneratedToken& token) {
        absl::MutexLock lock(&call->mu);
        call->tokens.push_back(token);
        call->changed.SignalAll();
        return true;  // Stopping is the cancellation handle's business.
      };
      absl::StatusOr<GenerationResult> result =
          server->pipeline().Generate(request, sink, &call->cancel);
      absl::MutexLock lock(&call->mu);
      call->result = std::move(result);
      call->lease = TokenAuth::Lease();  // The token's slot frees as the generation ends.
      call->done = true;
      call->changed.SignalAll();
    });
    if (!scheduled.ok()) {
      calls_->Remove(call);
      server_->pipeline().Refuse(g.mode, scheduled);
      return SendStatus(res, scheduled);
    }
    ResponseMeta meta;
    meta.endpoint = endpoint;
    meta.created = absl::ToUnixSeconds(absl::Now());
    meta.model = options_.model_name;
    meta.logprobs = g.sampling.logprobs;
    meta.return_token_ids = parsed->return_token_ids;
    if (!parsed->stream) return Complete(call, std::move(meta), res);
    Stream(call, std::move(meta), parsed->include_usage, res);
  }

 private:
  Json ModelJson() const {
    return Json{{"id", options_.model_name},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "swarm"},
                {"max_model_len", server_->config().max_position_embeddings}};
  }

  static std::string ResponseId(OpenAiEndpoint endpoint, const std::string& request_id) {
    return absl::StrCat(endpoint == OpenAiEndpoint::kChat ? "chatcmpl-" : "cmpl-", request_id);
  }

  // Without max_tokens: OpenAI's 16 for completions, the rest of the context for chat. Needs the
  // prompt's length, so a text prompt is tokenized here (the pipeline then takes the ids).
  absl::Status DefaultMaxTokens(OpenAiRequest& r) const {
    if (r.max_tokens.has_value()) return absl::OkStatus();
    GenerationRequest& g = r.generation;
    if (g.prompt_ids.empty()) {
      const tokenizer::Tokenizer* tok = server_->model().tokenizer();
      if (tok == nullptr) {
        return InvalidParam("prompt",
                            "this model has no tokenizer.json: send the prompt as a "
                            "list of token ids");
      }
      absl::StatusOr<std::vector<int64_t>> ids = tok->Encode(g.prompt, g.add_special_tokens);
      if (!ids.ok()) return ids.status();
      g.prompt_ids = *std::move(ids);
      g.prompt.clear();
    }
    const int64_t room =
        server_->config().max_position_embeddings - static_cast<int64_t>(g.prompt_ids.size());
    g.sampling.max_new_tokens =
        r.endpoint == OpenAiEndpoint::kChat
            ? std::max<int64_t>(room, 1)
            : std::min(kDefaultCompletionTokens, std::max<int64_t>(room, 1));
    return absl::OkStatus();
  }

  void Complete(const std::shared_ptr<HttpCall>& call, ResponseMeta meta,
                httplib::Response& res) const {
    std::vector<model::GeneratedToken> tokens;
    absl::StatusOr<GenerationResult> result = absl::UnknownError("not run");
    {
      absl::MutexLock lock(&call->mu);
      while (!call->done) call->changed.Wait(&call->mu);
      result = std::move(call->result);
      tokens.assign(call->tokens.begin(), call->tokens.end());
    }
    calls_->Remove(call);
    if (!result.ok()) return SendStatus(res, result.status());
    meta.id = ResponseId(meta.endpoint, result->request_id);
    res.set_content(Dump(CompletionJson(meta, result->text, tokens, result->finish_reason,
                                        result->prompt_ids, result->usage.generated_tokens)),
                    "application/json");
  }

  // Streams once the request has started (its errors before that are a plain error reply).
  void Stream(const std::shared_ptr<HttpCall>& call, ResponseMeta meta, bool include_usage,
              httplib::Response& res) const {
    absl::Status failed;
    {
      absl::MutexLock lock(&call->mu);
      while (!call->started && !call->done) call->changed.Wait(&call->mu);
      if (call->done && !call->result.ok()) failed = call->result.status();
      meta.id = ResponseId(meta.endpoint, call->request_id);
    }
    if (!failed.ok()) {
      calls_->Remove(call);
      return SendStatus(res, failed);
    }
    struct State {
      bool first = true;
      int writes = 0;
      absl::Time last_write = absl::InfinitePast();
      int64_t text_offset = 0;
    };
    const absl::Duration interval = server_->options().stream_interval;
    auto state = std::make_shared<State>();
    std::shared_ptr<HttpApi::Calls> calls = calls_;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [call, meta, include_usage, state, interval](size_t /*offset*/, httplib::DataSink& sink) {
          std::vector<model::GeneratedToken> batch;
          bool done = false;
          absl::StatusOr<GenerationResult> result = absl::UnknownError("not run");
          {
            absl::MutexLock lock(&call->mu);
            while (call->tokens.empty() && !call->done) {
              if (call->changed.WaitWithTimeout(&call->mu, kStreamPoll) && !sink.is_writable()) {
                call->cancel.Cancel();  // The client went away while nothing was written.
                return false;
              }
            }
            // Tokens decoded faster than one write per stream interval are written together, as
            // the gRPC stream coalesces its messages: every write costs both ends a wake-up. The
            // first two writes (the start, the first token) and the last go out at once.
            if (state->writes >= 2) {
              const absl::Time due = state->last_write + interval;
              while (!call->done && absl::Now() < due)
                call->changed.WaitWithDeadline(&call->mu, due);
            }
            batch.assign(std::make_move_iterator(call->tokens.begin()),
                         std::make_move_iterator(call->tokens.end()));
            call->tokens.clear();
            done = call->done;
            if (done) result = call->result;
          }
          std::string out;
          auto event = [&out](const Json& j) { absl::StrAppend(&out, "data: ", Dump(j), "\n\n"); };
          if (state->first && meta.endpoint == OpenAiEndpoint::kChat) {
            event(ChunkJson(meta, "", {}, 0, "", /*first=*/true, include_usage));
          }
          state->first = false;
          // One chunk per token that brings text, logprobs or (asked for) its id.
          for (model::GeneratedToken& t : batch) {
            if (t.text.empty() && !t.has_logprob && !(meta.return_token_ids && t.id >= 0)) {
              continue;
            }
            const std::string text = t.text;
            std::vector<model::GeneratedToken> one;
            one.push_back(std::move(t));
            event(ChunkJson(meta, text, one, state->text_offset, "", false, include_usage));
            state->text_offset += static_cast<int64_t>(text.size());
          }
          if (done) {
            if (result.ok()) {
              event(ChunkJson(meta, "", {}, state->text_offset, result->finish_reason, false,
                              include_usage));
              if (include_usage) {
                event(UsageChunkJson(meta, result->usage.prompt_tokens,
                                     result->usage.generated_tokens));
              }
            } else {
              absl::StrAppend(&out, "data: ", ErrorBody(ErrorFromStatus(result.status())), "\n\n");
            }
            out += "data: [DONE]\n\n";
          }
          if (!out.empty()) {
            if (!sink.write(out.data(), out.size())) {
              call->cancel.Cancel();  // The client went away.
              return false;
            }
            ++state->writes;
            state->last_write = absl::Now();
          }
          if (done) sink.done();
          return true;
        },
        [call, calls](bool /*success*/) {
          // Ends the generation if the stream ended first (a client that went away), and forgets
          // the call; the pool's task keeps it alive until the pipeline returns.
          call->cancel.Cancel();
          calls->Remove(call);
        });
  }

  CoordinatorServer* const server_;
  const HttpApiOptions options_;
  const std::shared_ptr<HttpApi::Calls> calls_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(CoordinatorServer* server,
                                                        const HttpApiOptions& options_in) {
  ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(options_in.listen, "--http-listen"));
  HttpApiOptions options = options_in;
  if (options.model_name.empty()) options.model_name = BaseName(server->options().model_dir);
  if (options.max_body_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HttpApiOptions::max_body_bytes must be >= 1, got ", options.max_body_bytes));
  }
  const int threads = options.threads > 0 ? options.threads
                                          : server->options().max_concurrent_requests +
                                                server->options().max_queued_requests + 8;
  auto calls = std::make_shared<Calls>();
  auto handlers = std::make_shared<Handlers>(server, options, calls);

  auto http = std::make_unique<httplib::Server>();
  http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http->set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  http->set_keep_alive_timeout(5);
  // A generation may run for minutes; writes wait for a slow reader at most this long.
  http->set_read_timeout(30, 0);
  http->set_write_timeout(30, 0);
  http->Post("/v1/completions", [handlers](const httplib::Request& req, httplib::Response& res) {
    handlers->Generate(OpenAiEndpoint::kCompletions, req, res);
  });
  http->Post("/v1/chat/completions",
             [handlers](const httplib::Request& req, httplib::Response& res) {
               handlers->Generate(OpenAiEndpoint::kChat, req, res);
             });
  http->Get("/v1/models", [handlers](const httplib::Request& req, httplib::Response& res) {
    handlers->Models(req, res);
  });
  http->Get(R"(/v1/models/(.+))", [handlers](const httplib::Request& req, httplib::Response& res) {
    handlers->Model(req, res);
  });
  http->Get("/health", [handlers](const httplib::Request& req, httplib::Response& res) {
    handlers->Health(req, res);
  });
  // Unknown paths, wrong methods, bodies over the cap (413): OpenAI's error shape too.
  http->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    OpenAiError e;
    e.http_status = res.status;
    e.type = "invalid_request_error";
    if (res.status == 413) {
      e.message = "the request body is too large";
      e.code = "request_too_large";
    } else if (res.status == 404) {
      e.message = absl::StrCat("no such endpoint: ", req.method, " ", req.path);
      e.code = "not_found";
    } else {
      e.message = absl::StrCat("HTTP ", res.status);
    }
    SendError(res, e);
  });
  http->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        SendError(res, OpenAiError{500, "internal_error", "internal error", "", ""});
      });

  std::thread thread;
  ASSIGN_OR_RETURN(int port,
                   common::BindAndServe(http.get(), hp.host, hp.port, "HTTP API", &thread));
  std::unique_ptr<HttpApi> api(new HttpApi(std::move(http), calls, hp.host, port));
  absl::MutexLock lock(&api->mu_);
  api->thread_ = std::move(thread);
  return api;
}

HttpApi::HttpApi(std::unique_ptr<httplib::Server> server, std::shared_ptr<Calls> calls,
                 std::string host, int port)
    : host_(std::move(host)), port_(port), calls_(std::move(calls)), server_(std::move(server)) {}

HttpApi::~HttpApi() { Stop(); }

std::string HttpApi::address() const {
  if (host_.find(':') != std::string::npos) return absl::StrCat("[", host_, "]:", port_);
  return absl::StrCat(host_, ":", port_);
}

void HttpApi::Stop() {
  calls_->CancelAll();
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace swarm::coordinator
