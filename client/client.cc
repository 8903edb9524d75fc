#include "client/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/host_port.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/status.h"
#include "swarm/v1/coordinator.grpc.pb.h"

namespace swarm {

struct Client::Impl {
  std::string address;
  ClientOptions options;
  std::string authorization;  // "Bearer TOKEN", or "" without a token.
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::CoordinatorService::Stub> stub;
  // The coordinators a stream may resume on (ClientOptions::resume_addresses), in turn.
  struct Fallback {
    std::string address;
    std::unique_ptr<v1::CoordinatorService::Stub> stub;
  };
  std::vector<Fallback> fallbacks;

  // One Generate call on `stub` until `deadline`: adds what it streams to `out` (prompt_ids and
  // the first message's fields only on the first attempt, out->resumes == 0) and to `on_chunk`;
  // `*stopped` when the callback stopped it. Returns the call's status.
  grpc::Status GenerateOnce(v1::CoordinatorService::Stub* stub, const v1::GenerateRequest& req,
                            absl::Time deadline, const ChunkCallback& on_chunk, GenerateResult* out,
                            bool* stopped) const;

  // Every call's context: its deadline and the token.
  void Prepare(grpc::ClientContext* ctx, absl::Duration timeout) const {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    if (!authorization.empty()) ctx->AddMetadata("authorization", authorization);
  }
};

namespace {

// The token ClientOptions say to send: `token`, else the first line of `token_file`, else
// SWARM_TOKEN; "" for none.
absl::StatusOr<std::string> ResolveToken(const ClientOptions& options) {
  std::string token = options.token;
  if (token.empty() && !options.token_file.empty()) {
    std::ifstream in(options.token_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file '", options.token_file, "': cannot be read"));
    }
    std::getline(in, token);
  } else if (token.empty()) {
    if (const char* env = std::getenv("SWARM_TOKEN")) token = env;
  }
  token = std::string(absl::StripAsciiWhitespace(token));
  for (char c : token) {
    if (!absl::ascii_isgraph(c)) {
      return absl::InvalidArgumentError(
          "the token holds a space or a control character (a token is printable ASCII)");
    }
  }
  return token;
}

absl::StatusOr<v1::Mode> ParseMode(const std::string& mode) {
  if (mode.empty() || mode == "exact") return v1::MODE_EXACT;
  if (mode == "sparse") return v1::MODE_SPARSE;
  return absl::InvalidArgumentError(absl::StrCat("mode '", mode, "': want exact or sparse"));
}

absl::StatusOr<v1::Combine> ParseCombine(const std::string& combine) {
  if (combine.empty() || combine == "sequential") return v1::COMBINE_SEQUENTIAL;
  if (combine == "parallel") return v1::COMBINE_PARALLEL;
  return absl::InvalidArgumentError(
      absl::StrCat("combine '", combine, "': want sequential or parallel"));
}

std::string DTypeString(int dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return "f32";
    case v1::DTYPE_F16:
      return "f16";
    case v1::DTYPE_BF16:
      return "bf16";
    default:
      return "";
  }
}

}  // namespace

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

const std::string& Client::address() const { return impl_->address; }

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                        const ClientOptions& options) {
  if (auto s = ValidateHostPort(address, "server address"); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  impl->options = options;
  absl::StatusOr<std::string> token = ResolveToken(options);
  if (!token.ok()) return token.status();
  if (!token->empty()) impl->authorization = absl::StrCat("Bearer ", *token);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      rpc::MakeChannelCredentials(
          {options.tls_cert_file, options.tls_key_file, options.tls_ca_file});
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // Replies are small; never fail on size.
  impl->channel = grpc::CreateCustomChannel(address, *credentials, args);
  impl->stub = v1::CoordinatorService::NewStub(impl->channel);
  if (options.max_resumes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_resumes ", options.max_resumes, " is negative"));
  }
  for (const std::string& other : options.resume_addresses) {
    if (auto s = ValidateHostPort(other, "resume address"); !s.ok()) return s;
    if (other == address) continue;
    impl->fallbacks.push_back(Impl::Fallback{
        other,
        v1::CoordinatorService::NewStub(grpc::CreateCustomChannel(other, *credentials, args))});
  }
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

namespace {

TokenLogprob FromProto(const v1::TokenLogprob& t) {
  return TokenLogprob{t.id(), t.logprob(), t.text()};
}

}  // namespace

absl::StatusOr<GenerateResult> Client::Generate(const GenerateRequest& request,
                                                const ChunkCallback& on_chunk) {
  v1::GenerateRequest req;
  req.set_prompt(request.prompt);
  req.mutable_prompt_ids()->Assign(request.prompt_ids.begin(), request.prompt_ids.end());
  req.set_add_special_tokens(request.add_special_tokens);
  for (const ChatMessage& m : request.messages) {
    v1::ChatMessage* out = req.add_messages();
    out->set_role(m.role);
    out->set_content(m.content);
  }
  v1::SamplingParams* sp = req.mutable_sampling();
  sp->set_max_new_tokens(request.max_new_tokens);
  sp->set_temperature(request.temperature);
  sp->set_top_k(request.top_k);
  sp->set_top_p(request.top_p);
  sp->set_seed(request.seed);
  sp->set_stop_at_eos(request.stop_at_eos);
  for (const std::string& stop : request.stop) sp->add_stop(stop);
  sp->set_logprobs(request.logprobs);
  sp->set_top_logprobs(request.top_logprobs);
  absl::StatusOr<v1::Mode> mode = ParseMode(request.mode);
  if (!mode.ok()) return mode.status();
  absl::StatusOr<v1::Combine> combine = ParseCombine(request.combine);
  if (!combine.ok()) return combine.status();
  req.set_mode(*mode);
  req.set_combine(*combine);
  req.set_top_k_blocks(request.top_k_blocks);
  req.set_request_id(request.request_id);
  req.mutable_blocks()->Assign(request.blocks.begin(), request.blocks.end());
  req.mutable_block_weights()->Assign(request.block_weights.begin(), request.block_weights.end());
  req.set_num_blocks(request.num_blocks);

  const absl::Duration timeout = request.timeout > absl::ZeroDuration()
                                     ? request.timeout
                                     : impl_->options.default_generate_timeout;
  const absl::Time deadline = absl::Now() + timeout;
  GenerateResult result;
  // Attempt 0 goes to the first address; resume r to fallback (r - 1) mod n, then the first
  // address again, and so on.
  const int endpoints = 1 + static_cast<int>(impl_->fallbacks.size());
  const int max_resumes = endpoints > 1 ? impl_->options.max_resumes : 0;
  for (int attempt = 0;; ++attempt) {
    const int e = attempt % endpoints;
    const std::string& address = e == 0 ? impl_->address : impl_->fallbacks[e - 1].address;
    v1::CoordinatorService::Stub* stub =
        e == 0 ? impl_->stub.get() : impl_->fallbacks[e - 1].stub.get();
    bool stopped = false;
    grpc::Status status = impl_->GenerateOnce(stub, req, deadline, on_chunk, &result, &stopped);
    if (stopped) return absl::CancelledError("stopped by the caller");
    if (status.ok()) return result;
    const bool resumable = status.error_code() == grpc::StatusCode::UNAVAILABLE;
    if (!resumable || attempt >= max_resumes || absl::Now() >= deadline) {
      return rpc::FromGrpcStatus(status, address);
    }
    // Resume: the prompt as the first coordinator tokenized it, and what it streamed of the
    // generation. Before the first message nothing was streamed: the request is sent again.
    if (!result.prompt_ids.empty()) {
      req.clear_prompt();
      req.clear_messages();
      req.mutable_prompt_ids()->Assign(result.prompt_ids.begin(), result.prompt_ids.end());
      req.mutable_resume_ids()->Assign(result.ids.begin(), result.ids.end());
      if (req.request_id().empty()) req.set_request_id(result.request_id);
    }
    ++result.resumes;
    // A pause that grows with the attempts: the next coordinator may be the one coming back.
    absl::SleepFor(std::min(absl::Milliseconds(100) * attempt, deadline - absl::Now()));
  }
}

grpc::Status Client::Impl::GenerateOnce(v1::CoordinatorService::Stub* stub,
                                        const v1::GenerateRequest& req, absl::Time deadline,
                                        const ChunkCallback& on_chunk, GenerateResult* out,
                                        bool* stopped) const {
  grpc::ClientContext ctx;
  Prepare(&ctx, std::max(deadline - absl::Now(), absl::ZeroDuration()));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, req);
  GenerateResult& result = *out;
  const bool resumed = result.resumes > 0;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    // A resumed stream repeats what the first one said in its first message.
    if (msg.prompt_ids_size() > 0 && !resumed) {
      result.prompt_ids.assign(msg.prompt_ids().begin(), msg.prompt_ids().end());
    }
    if (!msg.request_id().empty()) result.request_id = msg.request_id();
    if (msg.num_blocks() > 0) {
      result.blocks.assign(msg.blocks().begin(), msg.blocks().end());
      result.block_weights.assign(msg.block_weights().begin(), msg.block_weights().end());
      result.num_blocks = msg.num_blocks();
    }
    if (!msg.finish_reason().empty()) result.finish_reason = msg.finish_reason();
    if (msg.has_usage()) {
      if (!resumed) result.time_to_first_token_seconds = msg.usage().time_to_first_token_seconds();
      result.total_seconds = msg.usage().total_seconds();
    }
    if (msg.ids_size() == 0 && msg.text().empty()) continue;
    GenerateChunk chunk;
    chunk.ids.assign(msg.ids().begin(), msg.ids().end());
    chunk.text = msg.text();
    for (const v1::TokenLogprobs& lp : msg.logprobs()) {
      TokenLogprobs t;
      t.chosen = FromProto(lp.chosen());
      for (const v1::TokenLogprob& alt : lp.top()) t.top.push_back(FromProto(alt));
      chunk.logprobs.push_back(std::move(t));
    }
    result.ids.insert(result.ids.end(), chunk.ids.begin(), chunk.ids.end());
    result.text += chunk.text;
    result.logprobs.insert(result.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
    if (on_chunk && !on_chunk(chunk)) {
      *stopped = true;
      ctx.TryCancel();
      break;
    }
  }
  return reader->Finish();
}

absl::StatusOr<ClusterStatus> Client::Status(absl::Duration timeout) {
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx, timeout);
  v1::StatusRequest req;
  v1::StatusResponse resp;
  grpc::Status status = impl_->stub->Status(&ctx, req, &resp);
  if (!status.ok()) return rpc::FromGrpcStatus(status, impl_->address);
  ClusterStatus out;
  out.serving = resp.serving();
  out.reason = resp.reason();
  out.router = resp.router();
  out.model_fingerprint = resp.model_fingerprint();
  out.architecture = resp.architecture();
  out.num_layers = resp.num_layers();
  out.max_position_embeddings = resp.max_position_embeddings();
  out.active_requests = resp.active_requests();
  out.requests_total = resp.requests_total();
  for (const v1::WorkerStatus& w : resp.workers()) {
    WorkerStatus ws;
    ws.address = w.address();
    ws.reachable = w.reachable();
    ws.compatible = w.compatible();
    ws.ready = w.ready();
    ws.error = w.error();
    for (const v1::LayerRange& r : w.layers()) ws.layers.emplace_back(r.begin(), r.end());
    ws.device = w.device();
    ws.dtype = DTypeString(w.dtype());
    ws.weight_format = w.weight_format();
    ws.sessions = w.sessions();
    ws.max_sessions = w.max_sessions();
    ws.kv_used_bytes = w.kv_used_bytes();
    ws.kv_reserved_bytes = w.kv_reserved_bytes();
    ws.kv_budget_bytes = w.kv_budget_bytes();
    ws.weight_bytes = w.weight_bytes();
    ws.inflight_steps = w.inflight_steps();
    ws.active_requests = w.active_requests();
    ws.steps_total = w.steps_total();
    ws.busy_fraction = w.busy_fraction();
    out.workers.push_back(std::move(ws));
  }
  const v1::SchedulerStatus& sched = resp.scheduler();
  out.scheduler.running_requests = sched.running_requests();
  out.scheduler.waiting_requests = sched.waiting_requests();
  out.scheduler.window_seconds = sched.window_seconds();
  out.scheduler.steps = sched.steps();
  out.scheduler.sequences_per_step = sched.sequences_per_step();
  out.scheduler.tokens_per_step = sched.tokens_per_step();
  out.scheduler.admitted = sched.admitted();
  out.scheduler.queue_seconds_mean = sched.queue_seconds_mean();
  return out;
}

absl::StatusOr<Prediction> Client::Predict(const std::string& prompt,
                                           const std::vector<int64_t>& prompt_ids, int top_k_blocks,
                                           absl::Duration timeout) {
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx, timeout);
  v1::PredictRequest req;
  req.set_prompt(prompt);
  req.mutable_prompt_ids()->Assign(prompt_ids.begin(), prompt_ids.end());
  req.set_top_k_blocks(top_k_blocks);
  v1::PredictResponse resp;
  grpc::Status status = impl_->stub->Predict(&ctx, req, &resp);
  if (!status.ok()) return rpc::FromGrpcStatus(status, impl_->address);
  Prediction out;
  for (const v1::BlockWeight& b : resp.blocks()) {
    out.blocks.push_back(BlockChoice{b.block(), b.layers().begin(), b.layers().end(), b.weight()});
  }
  out.num_blocks = resp.num_blocks();
  out.prompt_ids.assign(resp.prompt_ids().begin(), resp.prompt_ids().end());
  out.expected_kl = resp.expected_kl();
  out.balance = resp.balance();
  out.toll_free_blocks.assign(resp.toll_free_blocks().begin(), resp.toll_free_blocks().end());
  out.toll_free_expected_kl = resp.toll_free_expected_kl();
  return out;
}

absl::StatusOr<MemoryEstimate> Client::EstimateMemory(const MemoryRequest& request,
                                                      absl::Duration timeout) {
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx, timeout);
  v1::EstimateMemoryRequest req;
  req.set_num_blocks(request.num_blocks);
  req.set_top_k_blocks(request.top_k_blocks);
  req.set_num_workers(request.num_workers);
  req.set_dtype(request.dtype);
  req.set_keep_blocks_set(!request.keep_default);
  req.mutable_keep_blocks()->Assign(request.keep_blocks.begin(), request.keep_blocks.end());
  v1::EstimateMemoryResponse resp;
  grpc::Status status = impl_->stub->EstimateMemory(&ctx, req, &resp);
  if (!status.ok()) return rpc::FromGrpcStatus(status, impl_->address);
  MemoryEstimate m;
  m.num_blocks = resp.num_blocks();
  m.top_k_blocks = resp.top_k_blocks();
  m.dtype = resp.dtype();
  m.embedding_bytes = resp.embedding_bytes();
  m.head_bytes = resp.head_bytes();
  m.layer_bytes.assign(resp.layer_bytes().begin(), resp.layer_bytes().end());
  m.block_bytes.assign(resp.block_bytes().begin(), resp.block_bytes().end());
  m.blocks_bytes = resp.blocks_bytes();
  m.total_bytes = resp.total_bytes();
  m.active_block_bytes = resp.active_block_bytes();
  m.active_bytes = resp.active_bytes();
  m.savings_ratio = resp.savings_ratio();
  m.block_savings_ratio = resp.block_savings_ratio();
  m.worker_bytes.assign(resp.worker_bytes().begin(), resp.worker_bytes().end());
  for (const v1::LayerRange& r : resp.worker_blocks())
    m.worker_blocks.emplace_back(r.begin(), r.end());
  m.kv_bytes_per_token = resp.kv_bytes_per_token();
  return m;
}

absl::Status Client::WaitUntilServing(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  absl::Status last = absl::UnavailableError("no answer yet");
  while (absl::Now() < end) {
    absl::StatusOr<ClusterStatus> s = Status(std::min(absl::Seconds(5), end - absl::Now()));
    if (s.ok() && s->serving) return absl::OkStatus();
    last = s.ok() ? absl::UnavailableError(s->reason) : s.status();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      impl_->address, " not serving after ", absl::FormatDuration(timeout), ": ", last.message()));
}

}  // namespace swarm
