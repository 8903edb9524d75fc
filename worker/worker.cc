#include "worker/worker.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/quote.h"
#include "common/status_macros.h"
#include "common/tensor_rows.h"
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

Worker::Worker(std::unique_ptr<model::LayerHost> host, SessionLimits limits,
               WorkerListener listener)
    : host_(std::move(host)),
      limits_(limits),
      listener_(std::move(listener)),
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
  const int64_t now_ns = NowNs();
  session->last_used_ns.store(now_ns);
  session->renewed_ns.store(now_ns);
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

absl::Status Worker::ValidateCall(const BatchRequest& request, const HostTensor& hidden) const {
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
  const std::vector<BatchStepRequest>& steps = request.steps;
  if (steps.empty()) return absl::InvalidArgumentError("a batch with no steps");
  // Every step needs a session of its own, and no more sessions can be open: this also bounds
  // the work (and the reply) a call can ask for.
  const size_t max_steps = static_cast<size_t>(std::max(1, limits_.max_sessions));
  if (steps.size() > max_steps) {
    return absl::InvalidArgumentError(absl::StrCat("a batch of ", steps.size(), " steps; at most ",
                                                   max_steps, " sessions can be open here"));
  }
  int64_t rows = 0;
  absl::flat_hash_set<absl::string_view> ids;
  for (size_t i = 0; i < steps.size(); ++i) {
    const BatchStepRequest& step = steps[i];
    if (step.positions < 1 || step.positions > hidden.shape[0] - rows) {
      return absl::InvalidArgumentError(absl::StrCat("step ", i, " brings ", step.positions,
                                                     " positions; hidden holds ", hidden.shape[0],
                                                     " rows and the steps before it take ", rows));
    }
    rows += step.positions;
    if (!ids.insert(step.session_id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "session '", step.session_id, "' has more than one step in the batch (step ", i, ")"));
    }
  }
  if (rows != hidden.shape[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat("the steps bring ", rows, " positions; hidden holds ", hidden.shape[0]));
  }
  return absl::OkStatus();  // Non-finite rows fail their own step (ForwardBatch).
}

absl::Status Worker::ValidateStep(const BatchStepRequest& step) const {
  if (step.step_id == 0) return absl::InvalidArgumentError("step_id must be at least 1");
  if (!std::isfinite(step.gate)) {
    return absl::InvalidArgumentError(absl::StrCat("gate ", step.gate, " is not finite"));
  }
  const int64_t t = step.positions;
  // Written so that no sum can overflow: start_position may be anything up to INT64_MAX.
  if (step.start_position < 0 || t > context_ || step.start_position > context_ - t) {
    return absl::OutOfRangeError(absl::StrCat("positions ", step.start_position, " (", t,
                                              " of them) are outside the context of ", context_,
                                              " positions"));
  }
  return absl::OkStatus();
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

Worker::StepPlan Worker::PlanStep(Session* session, const BatchStepRequest& step,
                                  const std::vector<int>& layers, absl::Status* status) {
  if (step.step_id != 0 && step.step_id <= session->last_step_id) {
    const bool same = step.step_id == session->last_step_id &&
                      step.start_position == session->last_start &&
                      step.positions == session->last_positions && layers == session->last_layers;
    if (same && session->has_cached_reply) {
      Touch(session);
      return StepPlan::kReplay;
    }
    *status = absl::AlreadyExistsError(absl::StrCat(
        "step ", step.step_id, " of session '", session->id, "' was already applied (last step ",
        session->last_step_id, same ? "; its reply is too large to keep" : "", ")"));
    return StepPlan::kFailed;
  }
  if (absl::Status s = ValidateStep(step); !s.ok()) {
    *status = std::move(s);
    return StepPlan::kFailed;
  }
  for (int l : layers) {
    const int64_t have = session->cache->Length(l);
    if (have != step.start_position) {
      *status = absl::FailedPreconditionError(absl::StrCat(
          "step ", step.step_id, " starts at position ", step.start_position, " but layer ", l,
          " of session '", session->id, "' holds ", have, " positions"));
      return StepPlan::kFailed;
    }
  }
  if (absl::Status s = Reserve(session, step.start_position + step.positions); !s.ok()) {
    *status = std::move(s);
    return StepPlan::kFailed;
  }
  return StepPlan::kCompute;
}

void Worker::CommitStep(Session* session, const BatchStepRequest& step,
                        const std::vector<int>& layers, const HostTensor& reply_rows,
                        int64_t first_row) {
  steps_total_.fetch_add(1);
  tokens_total_.fetch_add(step.positions);
  session->last_step_id = step.step_id;
  session->last_start = step.start_position;
  session->last_positions = step.positions;
  session->last_layers = layers;
  // Keeping the reply costs one copy of it; only small replies (every decode step) are kept.
  const int64_t row_bytes = reply_rows.shape[1] * DTypeSize(reply_rows.dtype);
  session->has_cached_reply = step.positions * row_bytes <= limits_.max_cached_reply_bytes;
  session->cached_reply = StepResult();
  if (session->has_cached_reply) {
    absl::StatusOr<HostTensor> rows = SliceRows(reply_rows, first_row, step.positions);
    session->has_cached_reply = rows.ok();
    if (rows.ok()) session->cached_reply.hidden = *std::move(rows);
    session->cached_reply.length = step.start_position + step.positions;
  }
}

void Worker::BeginCompute() {
  absl::MutexLock lock(&busy_mu_);
  const absl::Time now = absl::Now();
  if (computing_++ == 0) {
    busy_mark_ = now;
  }
}

absl::Duration Worker::EndCompute() {
  absl::MutexLock lock(&busy_mu_);
  const absl::Time now = absl::Now();
  const absl::Duration busy = now - busy_mark_;
  busy_total_ += busy;
  busy_mark_ = now;
  --computing_;
  return busy;
}

absl::StatusOr<StepResult> Worker::Forward(const StepRequest& request, HostTensor hidden) {
  BatchRequest batch;
  batch.layers = request.layers;
  BatchStepRequest& step = batch.steps.emplace_back();
  step.session_id = request.session_id;
  step.step_id = request.step_id;
  step.start_position = request.start_position;
  step.positions = hidden.shape.size() == 2 ? hidden.shape[0] : 0;
  step.gate = request.gate;
  ASSIGN_OR_RETURN(BatchResult r, ForwardBatch(batch, std::move(hidden)));
  RETURN_IF_ERROR(r.steps[0].status);
  StepResult result;
  result.hidden = std::move(r.hidden);
  result.length = r.steps[0].length;
  result.replayed = r.steps[0].replayed;
  return result;
}

namespace {

// Mutexes locked one by one in the caller's order, all released (in reverse) at the end of scope.
// Outside the lock analysis, which cannot follow a set chosen at run time; callers AssertHeld().
class MutexSet {
 public:
  MutexSet() = default;
  MutexSet(const MutexSet&) = delete;
  MutexSet& operator=(const MutexSet&) = delete;
  ~MutexSet() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) (*it)->Unlock();
  }
  void Lock(absl::Mutex* mu) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    mu->Lock();
    held_.push_back(mu);
  }

 private:
  std::vector<absl::Mutex*> held_;
};

}  // namespace

absl::StatusOr<BatchResult> Worker::ForwardBatch(const BatchRequest& request, HostTensor hidden) {
  RETURN_IF_ERROR(ValidateCall(request, hidden));
  const std::vector<BatchStepRequest>& steps = request.steps;
  const size_t n = steps.size();
  const int64_t d = hidden.shape[1];
  BatchResult result;
  result.steps.resize(n);
  std::vector<int64_t> first_row(n);
  std::vector<std::shared_ptr<Session>> sessions(n);
  std::vector<size_t> order;  // Steps whose session exists, in lock order.
  int64_t row = 0;
  for (size_t i = 0; i < n; ++i) {
    first_row[i] = row;
    row += steps[i].positions;
    // A NaN or infinity would run through every layer and come back as NaN: that step fails
    // alone, before its session is touched.
    if (absl::Status s = hidden.CheckFiniteRows("hidden", first_row[i], steps[i].positions);
        !s.ok()) {
      result.steps[i].status = std::move(s);
      continue;
    }
    absl::StatusOr<std::shared_ptr<Session>> session = Find(steps[i].session_id);
    if (!session.ok()) {
      result.steps[i].status = session.status();
      continue;
    }
    sessions[i] = *std::move(session);
    order.push_back(i);
  }
  // The lock order of worker.h: session ids, increasing (ValidateCall made them unique).
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return sessions[a]->id < sessions[b]->id; });
  MutexSet locks;
  for (size_t i : order) locks.Lock(&sessions[i]->mu);

  std::vector<StepPlan> plans(n, StepPlan::kFailed);
  std::vector<model::BatchSequence> sequences;
  std::vector<size_t> computed;  // Request indices of `sequences`.
  for (size_t i = 0; i < n; ++i) {
    Session* session = sessions[i].get();
    if (session == nullptr) continue;
    session->mu.AssertHeld();
    plans[i] = PlanStep(session, steps[i], request.layers, &result.steps[i].status);
    if (plans[i] != StepPlan::kCompute) continue;
    sequences.push_back({steps[i].start_position, steps[i].positions, session->cache.get()});
    computed.push_back(i);
    result.rows_computed += steps[i].positions;
  }
  result.sequences_computed = static_cast<int>(computed.size());

  // The common case (every step computes) hands `hidden` to the host and its output back as the
  // reply, without copying rows; otherwise the computed steps' rows are gathered and scattered.
  const bool all = computed.size() == n;
  absl::StatusOr<model::BatchOutput> out = absl::InternalError("nothing computed");
  if (!computed.empty()) {
    HostTensor gathered;
    if (!all) {
      gathered = ZeroRows(hidden.dtype, result.rows_computed, d);
      int64_t at = 0;
      for (size_t i : computed) {
        RETURN_IF_ERROR(CopyRows(hidden, first_row[i], steps[i].positions, &gathered, at));
        at += steps[i].positions;
      }
    }
    inflight_.fetch_add(static_cast<int>(computed.size()));
    BeginCompute();
    out = host_->ForwardBatch(all ? hidden : gathered, sequences, request.layers);
    const absl::Duration busy = EndCompute();
    inflight_.fetch_sub(static_cast<int>(computed.size()));
    batches_total_.fetch_add(1);
    batch_rows_total_.fetch_add(result.rows_computed);
    batch_sequences_total_.fetch_add(computed.size());
    if (listener_.on_batch) listener_.on_batch(result.sequences_computed, result.rows_computed);
    if (listener_.on_busy) listener_.on_busy(absl::ToDoubleSeconds(busy));
    if (out.ok() && (out->status.size() != computed.size() ||
                     out->hidden.shape != std::vector<int64_t>{result.rows_computed, d} ||
                     out->hidden.dtype != hidden.dtype)) {
      out = absl::InternalError(
          absl::StrCat("the layers answered ", out->status.size(), " statuses and shape [",
                       absl::StrJoin(out->hidden.shape, ","), "] for ", computed.size(),
                       " steps of ", result.rows_computed, " rows"));
    }
  }
  const bool moved = all && out.ok();
  result.hidden = moved ? std::move(out->hidden) : ZeroRows(hidden.dtype, hidden.shape[0], d);

  int64_t out_row = 0;
  for (size_t k = 0; k < computed.size(); ++k) {
    const size_t i = computed[k];
    const BatchStepRequest& step = steps[i];
    Session* session = sessions[i].get();
    session->mu.AssertHeld();
    Touch(session);
    session->kv_used_bytes.store(session->cache->Bytes());
    const int64_t at = out_row;
    out_row += step.positions;
    absl::Status status = out.ok() ? out->status[k] : out.status();
    if (status.ok() && !moved) {
      status = CopyRows(out->hidden, at, step.positions, &result.hidden, first_row[i]);
    }
    // The layers ran ungated; a gate (StepRequest::gate) is applied by the one rule.
    if (status.ok() && step.gate != 1.0f) {
      absl::StatusOr<HostTensor> in = SliceRows(hidden, first_row[i], step.positions);
      absl::StatusOr<HostTensor> ungated = SliceRows(result.hidden, first_row[i], step.positions);
      absl::StatusOr<HostTensor> gated =
          !in.ok()        ? in.status()
          : !ungated.ok() ? ungated.status()
                          : model::GateResidual(*in, *std::move(ungated), step.gate);
      status = gated.ok() ? CopyRows(*gated, 0, step.positions, &result.hidden, first_row[i])
                          : gated.status();
    }
    if (!status.ok()) {
      result.steps[i].status = std::move(status);
      if (moved) {
        // The host's rows for a step it failed are zeros already; a failed gate's are not.
        const HostTensor zeros = ZeroRows(hidden.dtype, step.positions, d);
        CopyRows(zeros, 0, step.positions, &result.hidden, first_row[i]).IgnoreError();
      }
      continue;
    }
    CommitStep(session, step, request.layers, result.hidden, first_row[i]);
    result.steps[i].length = step.start_position + step.positions;
  }
  for (size_t i = 0; i < n; ++i) {
    if (plans[i] != StepPlan::kReplay) continue;
    Session* session = sessions[i].get();
    session->mu.AssertHeld();
    BatchStepOutcome& outcome = result.steps[i];
    outcome.status =
        CopyRows(session->cached_reply.hidden, 0, steps[i].positions, &result.hidden, first_row[i]);
    outcome.length = session->cached_reply.length;
    outcome.replayed = outcome.status.ok();
  }
  return result;
}

void Worker::ReleaseClientLocked(const Session& session) {
  auto it = client_sessions_.find(session.client);
  if (it != client_sessions_.end() && --it->second <= 0) client_sessions_.erase(it);
}

void Worker::Touch(Session* session) {
  const int64_t now_ns = NowNs();
  session->last_used_ns.store(now_ns);
  session->renewed_ns.store(now_ns);
}

std::vector<std::string> Worker::RenewSessions(const std::vector<std::string>& session_ids) {
  std::vector<std::string> unknown;
  const int64_t now_ns = NowNs();
  absl::MutexLock lock(&mu_);
  for (const std::string& id : session_ids) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) {
      unknown.push_back(id);
    } else {
      it->second->renewed_ns.store(now_ns);
    }
  }
  return unknown;
}

Worker::Reaped Worker::ReapIdle(absl::Time now) {
  const int64_t idle_cutoff = absl::ToUnixNanos(now - limits_.idle_ttl);
  const bool leased = limits_.lease > absl::ZeroDuration();
  const int64_t lease_cutoff = leased ? absl::ToUnixNanos(now - limits_.lease) : 0;
  std::vector<std::shared_ptr<Session>> reaped;  // Destroyed outside the lock.
  Reaped counts;
  absl::MutexLock lock(&mu_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session* s = it->second.get();
    const bool idle = s->last_used_ns.load() < idle_cutoff;
    const bool expired = leased && s->renewed_ns.load() < lease_cutoff;
    // A session running a step holds its mutex: neither idle nor expired. (TryLock keeps the
    // lock order.)
    if ((idle || expired) && s->mu.TryLock()) {
      s->mu.Unlock();
      s->closed = true;
      reserved_tokens_ -= s->reserved_tokens;
      ReleaseClientLocked(*s);
      ++(idle ? counts.idle : counts.lease);
      reaped.push_back(std::move(it->second));
      sessions_.erase(it++);
    } else {
      ++it;
    }
  }
  reaped_total_ += reaped.size();
  leases_expired_total_ += counts.lease;
  return counts;
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
    stats.leases_expired_total = leases_expired_total_;
  }
  stats.inflight_steps = inflight_.load();
  stats.steps_total = steps_total_.load();
  stats.tokens_total = tokens_total_.load();
  stats.batches_total = batches_total_.load();
  stats.batch_rows_total = batch_rows_total_.load();
  stats.batch_sequences_total = batch_sequences_total_.load();
  {
    absl::MutexLock lock(&busy_mu_);
    absl::Duration busy = busy_total_;
    if (computing_ > 0) busy += absl::Now() - busy_mark_;
    stats.busy_seconds = absl::ToDoubleSeconds(busy);
  }
  return stats;
}

}  // namespace swarm::worker
