#include "worker/worker.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "model/combine.h"

namespace swarm::worker {

namespace {

int64_t NowNs() { return absl::ToUnixNanos(absl::Now()); }

std::string NewSessionId() {
  static absl::Mutex gen_mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&gen_mu);
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(*gen),
                         absl::Uniform<uint64_t>(*gen));
}

}  // namespace

Worker::Worker(std::unique_ptr<model::LayerHost> host, SessionLimits limits)
    : host_(std::move(host)),
      limits_(limits),
      context_(host_->config().max_position_embeddings),
      kv_bytes_per_token_(host_->KvBytesPerToken()) {}

Worker::~Worker() = default;

absl::StatusOr<std::string> Worker::OpenSession(int64_t max_length, const std::string& client) {
  if (max_length < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_length ", max_length, " is negative"));
  }
  if (max_length == 0 || max_length > context_) max_length = context_;
  auto session = std::make_shared<Session>(NewSessionId());
  {
    absl::MutexLock lock(&session->mu);
    session->cache = host_->NewCache(max_length);
  }
  session->last_used_ns.store(NowNs());
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(sessions_.size()) >= limits_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat("session limit reached: ", sessions_.size(),
                                                     " of ", limits_.max_sessions, " open"));
  }
  if (limits_.max_sessions_per_client > 0 &&
      client_sessions_[client] >= limits_.max_sessions_per_client) {
    return absl::ResourceExhaustedError(
        absl::StrCat("session limit per client reached: ", QuoteInput(client, 64), " has ",
                     limits_.max_sessions_per_client, " open"));
  }
  const int64_t need = max_length * kv_bytes_per_token_;
  const int64_t reserved = reserved_tokens_ * kv_bytes_per_token_;
  if (limits_.kv_budget_bytes > 0 && reserved + need > limits_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV budget: a session of ", max_length, " positions needs ", need, " bytes; ", reserved,
        " of ", limits_.kv_budget_bytes, " bytes are reserved by ", sessions_.size(), " sessions"));
  }
  session->reserved_tokens = max_length;
  session->client = client;
  ++client_sessions_[client];
  reserved_tokens_ += max_length;
  sessions_.emplace(session->id, session);
  return session->id;
}

absl::Status Worker::CloseSession(const std::string& session_id) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown session '", session_id, "'"));
    }
    session = std::move(it->second);
    sessions_.erase(it);
    session->closed = true;
    reserved_tokens_ -= session->reserved_tokens;
    ReleaseClientLocked(*session);
  }
  // The cache is freed when the last step holding `session` returns (usually right here).
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Worker::Session>> Worker::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown session '", id, "'"));
  }
  return it->second;
}

absl::Status Worker::ValidateStep(const StepRequest& request, const HostTensor& hidden) const {
  if (request.layers.empty()) return absl::InvalidArgumentError("no layers to run");
  for (size_t i = 0; i < request.layers.size(); ++i) {
    const int l = request.layers[i];
    if (i > 0 && l <= request.layers[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("layers must be strictly increasing, got [",
                                                     ListInput(request.layers), "]"));
    }
    if (!host_->Hosts(l)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", l, " is not hosted here (hosted: ", absl::StrJoin(host_->layers(), ","), ")"));
    }
  }
  const int64_t d = host_->config().hidden_size;
  if (hidden.shape.size() != 2 || hidden.shape[1] != d) {
    return absl::InvalidArgumentError(absl::StrCat("hidden: shape [",
                                                   absl::StrJoin(hidden.shape, ","),
                                                   "] does not match [T, hidden_size=", d, "]"));
  }
  if (hidden.shape[0] < 1) return absl::InvalidArgumentError("hidden: holds no positions");
  if (!std::isfinite(request.gate)) {
    return absl::InvalidArgumentError(absl::StrCat("gate ", request.gate, " is not finite"));
  }
  const int64_t t = hidden.shape[0];
  // Written so that no sum can overflow: start_position may be anything up to INT64_MAX.
  if (request.start_position < 0 || t > context_ || request.start_position > context_ - t) {
    return absl::OutOfRangeError(absl::StrCat("positions ", request.start_position, " (", t,
                                              " of them) are outside the context of ", context_,
                                              " positions"));
  }
  // A NaN or infinity would run through every layer and come back as NaN.
  return hidden.CheckFinite("hidden");
}

absl::Status Worker::Reserve(Session* session, int64_t tokens) {
  absl::MutexLock lock(&mu_);
  if (session->closed) {
    return absl::NotFoundError(absl::StrCat("session '", session->id, "' was closed"));
  }
  if (tokens <= session->reserved_tokens) return absl::OkStatus();
  const int64_t extra = tokens - session->reserved_tokens;
  if (limits_.kv_budget_bytes > 0 &&
      (reserved_tokens_ + extra) * kv_bytes_per_token_ > limits_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV budget: growing session '", session->id, "' to ", tokens, " positions needs ",
        extra * kv_bytes_per_token_, " more bytes; ", reserved_tokens_ * kv_bytes_per_token_,
        " of ", limits_.kv_budget_bytes, " bytes are reserved"));
  }
  session->reserved_tokens = tokens;
  reserved_tokens_ += extra;
  return absl::OkStatus();
}

absl::StatusOr<StepResult> Worker::Forward(const StepRequest& request, HostTensor hidden) {
  ASSIGN_OR_RETURN(std::shared_ptr<Session> session, Find(request.session_id));
  if (request.step_id == 0) return absl::InvalidArgumentError("step_id must be at least 1");
  absl::MutexLock lock(&session->mu);
  if (request.step_id <= session->last_step_id) {
    const bool same = request.step_id == session->last_step_id &&
                      request.start_position == session->last_start &&
                      request.layers == session->last_layers;
    if (same && session->has_cached_reply) {
      session->last_used_ns.store(NowNs());
      StepResult copy;
      copy.hidden = session->cached_reply.hidden;
      copy.length = session->cached_reply.length;
      copy.replayed = true;
      return copy;
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "step ", request.step_id, " of session '", session->id, "' was already applied (last step ",
        session->last_step_id, same ? "; its reply is too large to keep" : "", ")"));
  }
  RETURN_IF_ERROR(ValidateStep(request, hidden));
  const int64_t t = hidden.shape[0];
  for (int l : request.layers) {
    const int64_t have = session->cache->Length(l);
    if (have != request.start_position) {
      return absl::FailedPreconditionError(absl::StrCat(
          "step ", request.step_id, " starts at position ", request.start_position, " but layer ",
          l, " of session '", session->id, "' holds ", have, " positions"));
    }
  }
  RETURN_IF_ERROR(Reserve(session.get(), request.start_position + t));

  inflight_.fetch_add(1);
  absl::StatusOr<HostTensor> out =
      host_->Forward(hidden, request.start_position, request.layers, session->cache.get());
  // The layers ran ungated; ForwardRequest.gate (wire contract) is applied by the one rule.
  if (out.ok()) out = model::GateResidual(hidden, *std::move(out), request.gate);
  inflight_.fetch_sub(1);
  session->last_used_ns.store(NowNs());
  session->kv_used_bytes.store(session->cache->Bytes());
  if (!out.ok()) return out.status();

  steps_total_.fetch_add(1);
  tokens_total_.fetch_add(t);
  session->last_step_id = request.step_id;
  session->last_start = request.start_position;
  session->last_layers = request.layers;
  StepResult result;
  result.length = request.start_position + t;
  result.hidden = *std::move(out);
  // Keeping the reply costs one copy of it; only small replies (every decode step) are kept.
  session->has_cached_reply =
      static_cast<int64_t>(result.hidden.data.size()) <= limits_.max_cached_reply_bytes;
  if (session->has_cached_reply) {
    session->cached_reply.hidden = result.hidden;
    session->cached_reply.length = result.length;
  } else {
    session->cached_reply = StepResult();
  }
  return result;
}

void Worker::ReleaseClientLocked(const Session& session) {
  auto it = client_sessions_.find(session.client);
  if (it != client_sessions_.end() && --it->second <= 0) client_sessions_.erase(it);
}

int Worker::ReapIdle(absl::Time now) {
  const int64_t cutoff = absl::ToUnixNanos(now - limits_.idle_ttl);
  std::vector<std::shared_ptr<Session>> reaped;  // Destroyed outside the lock.
  absl::MutexLock lock(&mu_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session* s = it->second.get();
    // A session running a step holds its mutex: not idle. (TryLock keeps the lock order.)
    if (s->last_used_ns.load() < cutoff && s->mu.TryLock()) {
      s->mu.Unlock();
      s->closed = true;
      reserved_tokens_ -= s->reserved_tokens;
      ReleaseClientLocked(*s);
      reaped.push_back(std::move(it->second));
      sessions_.erase(it++);
    } else {
      ++it;
    }
  }
  reaped_total_ += reaped.size();
  return static_cast<int>(reaped.size());
}

WorkerStats Worker::Stats() const {
  WorkerStats stats;
  {
    absl::MutexLock lock(&mu_);
    stats.sessions = static_cast<int>(sessions_.size());
    stats.kv_reserved_bytes = reserved_tokens_ * kv_bytes_per_token_;
    int64_t last_used_ns = 0;
    for (const auto& [id, s] : sessions_) {
      stats.kv_used_bytes += s->kv_used_bytes.load();
      last_used_ns = std::max(last_used_ns, s->last_used_ns.load());
    }
    if (!sessions_.empty()) stats.last_session_use = absl::FromUnixNanos(last_used_ns);
    stats.sessions_reaped_total = reaped_total_;
  }
  stats.inflight_steps = inflight_.load();
  stats.steps_total = steps_total_.load();
  stats.tokens_total = tokens_total_.load();
  return stats;
}

}  // namespace swarm::worker
