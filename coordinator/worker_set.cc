#include "coordinator/worker_set.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "common/layer_set.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/status.h"

namespace swarm::coordinator {

namespace {

// A worker that does not answer holds nothing the coordinator can see: its last Info keeps what it
// is (layers, device, budgets, totals) but not what it was doing then, which `swarm status` would
// otherwise show as live (a drained worker's last sessions, forever).
void ForgetLiveCounters(v1::InfoResponse* info) {
  info->set_sessions(0);
  info->set_inflight_steps(0);
  info->set_kv_reserved_bytes(0);
  info->set_kv_used_bytes(0);
}

// RenewSessions ids per call at most (worker.proto), and stale ids kept per worker at most (the
// worker's lease frees the rest).
constexpr size_t kMaxRenewIds = 4096;
constexpr size_t kMaxStale = 4096;

// Why a worker cannot be called, in words: a failed TLS handshake (a worker whose certificate is
// not from --tls-ca, or that refuses the coordinator's) is named as such.
std::string UnreachableReason(const absl::Status& status) {
  const std::string text = absl::AsciiStrToLower(status.message());
  if (absl::StrContains(text, "handshake") || absl::StrContains(text, "ssl") ||
      absl::StrContains(text, "certificate")) {
    return absl::StrCat(
        "unreachable: the TLS handshake failed (is its certificate from the coordinator's "
        "--tls-ca, and does it trust the coordinator's?): ",
        status.ToString());
  }
  return absl::StrCat("unreachable: ", status.ToString());
}

}  // namespace

WorkerSet::WorkerSet(const std::vector<std::string>& addresses, std::string fingerprint,
                     int num_layers, std::shared_ptr<grpc::ChannelCredentials> credentials)
    : addresses_(addresses), fingerprint_(std::move(fingerprint)), num_layers_(num_layers) {
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  for (const std::string& address : addresses_) {
    auto channel = grpc::CreateCustomChannel(address, credentials, rpc::InternalChannelArguments());
    stubs_.push_back(v1::WorkerService::NewStub(channel));
    WorkerState state;
    state.address = address;
    state.error = "not contacted yet";
    states_.push_back(std::move(state));
  }
  leases_.resize(addresses_.size());
}

void WorkerSet::RefreshAsync(absl::Duration timeout, std::function<void()> done) {
  struct Call {
    grpc::ClientContext ctx;
    v1::InfoRequest request;
    v1::InfoResponse response;
  };
  struct Pending {
    std::atomic<int> left;
    std::function<void()> done;
  };
  if (stubs_.empty()) {
    if (done) done();
    return;
  }
  auto pending = std::make_shared<Pending>();
  pending->left = size();
  pending->done = std::move(done);
  for (int i = 0; i < size(); ++i) {
    auto call = std::make_shared<Call>();
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    stubs_[i]->async()->Info(&call->ctx, &call->request, &call->response,
                             [this, i, call, pending](grpc::Status status) {
                               Record(i, status, call->response);
                               if (pending->left.fetch_sub(1) == 1 && pending->done) {
                                 pending->done();
                               }
                             });
  }
}

void WorkerSet::Refresh(absl::Duration timeout) {
  absl::Notification done;
  RefreshAsync(timeout, [&done] { done.Notify(); });
  done.WaitForNotification();
}

void WorkerSet::Record(int index, const grpc::Status& status, const v1::InfoResponse& info) {
  absl::MutexLock lock(&mu_);
  WorkerState& s = states_[index];
  const bool was_usable = s.usable();
  s.reachable = status.ok();
  if (!status.ok()) {
    s.compatible = s.ready = false;
    s.error = UnreachableReason(rpc::FromGrpcStatus(status));
    ForgetLiveCounters(&s.info);
  } else {
    s.info = info;
    s.ready = info.ready();
    s.compatible = info.model_fingerprint() == fingerprint_;
    if (!s.compatible) {
      s.error = absl::StrCat("serves another model (fingerprint ", info.model_fingerprint(),
                             ", the coordinator's is ", fingerprint_, ")");
    } else if (!s.ready) {
      s.error = info.draining() ? "draining (shutting down): takes no new sessions"
                : info.load_error().empty()
                    ? "still loading its layers"
                    : absl::StrCat("failed to load its layers: ", info.load_error());
    } else {
      s.error.clear();
    }
  }
  if (was_usable != s.usable()) ++changes_;
}

std::vector<WorkerState> WorkerSet::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return states_;
}

std::vector<WorkerCandidate> WorkerSet::CandidatesLocked() const {
  std::vector<WorkerCandidate> candidates;
  for (const WorkerState& s : states_) {
    WorkerCandidate c;
    c.layers.assign(s.info.layers().begin(), s.info.layers().end());
    c.load = s.active_requests;
    c.usable = s.usable();
    c.address = s.address;
    candidates.push_back(std::move(c));
  }
  return candidates;
}

absl::Status WorkerSet::Coverage() const {
  absl::MutexLock lock(&mu_);
  absl::Status s = CheckCoverage(num_layers_, CandidatesLocked());
  if (s.ok()) return s;
  std::vector<std::string> why;
  for (const WorkerState& w : states_) {
    if (!w.usable()) why.push_back(absl::StrCat(w.address, " ", w.error));
  }
  if (states_.empty()) why.push_back("no workers configured");
  return absl::UnavailableError(absl::StrCat(s.message(), " (", absl::StrJoin(why, "; "), ")"));
}

absl::StatusOr<std::vector<std::vector<Hop>>> WorkerSet::AcquirePlans(
    const std::vector<std::vector<int>>& layer_sets) {
  absl::MutexLock lock(&mu_);
  const std::vector<WorkerCandidate> candidates = CandidatesLocked();
  std::vector<std::vector<Hop>> plans;
  for (const std::vector<int>& layers : layer_sets) {
    absl::StatusOr<std::vector<Hop>> hops = PlanHops(layers, candidates);
    if (!hops.ok()) return hops.status();
    plans.push_back(*std::move(hops));
  }
  CountLocked(plans, +1);
  return plans;
}

void WorkerSet::Release(const std::vector<std::vector<Hop>>& plans) {
  absl::MutexLock lock(&mu_);
  CountLocked(plans, -1);
}

void WorkerSet::MovePlans(const std::vector<std::vector<Hop>>& from,
                          const std::vector<std::vector<Hop>>& to) {
  absl::MutexLock lock(&mu_);
  CountLocked(from, -1);
  CountLocked(to, +1);
}

// A request counts once against each worker its plans use.
void WorkerSet::CountLocked(const std::vector<std::vector<Hop>>& plans, int delta) {
  std::vector<bool> counted(states_.size(), false);
  for (const auto& plan : plans) {
    for (const Hop& hop : plan) {
      if (hop.worker < 0 || hop.worker >= static_cast<int>(states_.size())) continue;
      if (!counted[hop.worker]) states_[hop.worker].active_requests += delta;
      counted[hop.worker] = true;
    }
  }
}

bool WorkerSet::usable(int index) const {
  absl::MutexLock lock(&mu_);
  return states_[index].usable();
}

bool WorkerSet::draining(int index) const {
  absl::MutexLock lock(&mu_);
  return states_[index].reachable && states_[index].info.draining();
}

int WorkerSet::PickReplica(const std::vector<int>& layers) const {
  absl::MutexLock lock(&mu_);
  return coordinator::PickReplica(layers, CandidatesLocked());
}

int64_t WorkerSet::invariant_rows(int index) const {
  absl::MutexLock lock(&mu_);
  const WorkerState& s = states_[index];
  return s.reachable ? s.info.invariant_rows() : 0;
}

void WorkerSet::Probe(int index, absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::InfoRequest request;
  v1::InfoResponse response;
  grpc::Status status = stubs_[index]->Info(&ctx, request, &response);
  Record(index, status, response);
}

int WorkerSet::ProbeHosts(const std::vector<int>& layers, absl::Duration timeout) {
  std::vector<int> ask;
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < static_cast<int>(states_.size()); ++i) {
      const WorkerState& s = states_[i];
      if (s.usable()) continue;
      const bool hosts = std::all_of(layers.begin(), layers.end(), [&](int l) {
        return std::find(s.info.layers().begin(), s.info.layers().end(), l) !=
               s.info.layers().end();
      });
      if (hosts || s.info.layers().empty()) ask.push_back(i);
    }
  }
  if (ask.empty()) return 0;
  struct Call {
    grpc::ClientContext ctx;
    v1::InfoRequest request;
    v1::InfoResponse response;
  };
  // Each call keeps what it uses alive until gRPC is done with it.
  auto left = std::make_shared<absl::BlockingCounter>(static_cast<int>(ask.size()));
  for (int i : ask) {
    auto call = std::make_shared<Call>();
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    stubs_[i]->async()->Info(&call->ctx, &call->request, &call->response,
                             [this, i, call, left](grpc::Status status) {
                               Record(i, status, call->response);
                               left->DecrementCount();
                             });
  }
  left->Wait();
  return static_cast<int>(ask.size());
}

void WorkerSet::MarkUnreachable(int index, const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  WorkerState& s = states_[index];
  if (s.usable()) ++changes_;
  s.reachable = false;
  s.error = UnreachableReason(status);
  ForgetLiveCounters(&s.info);
}

void WorkerSet::AddSession(int index, const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  leases_[index].held.insert(session_id);
}

void WorkerSet::RemoveSession(int index, const std::string& session_id, bool closed) {
  absl::MutexLock lock(&mu_);
  Leases& l = leases_[index];
  l.held.erase(session_id);
  if (!closed) {
    if (l.stale.size() >= kMaxStale) l.stale.erase(l.stale.begin());
    l.stale.push_back(session_id);
  }
}

int WorkerSet::SessionCount(int index) const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(leases_[index].held.size());
}

absl::Duration WorkerSet::RenewInterval(absl::Duration fallback) const {
  absl::MutexLock lock(&mu_);
  absl::Duration shortest = absl::InfiniteDuration();
  for (const WorkerState& s : states_) {
    const double lease = s.info.session_lease_seconds();
    if (s.reachable && lease > 0) shortest = std::min(shortest, absl::Seconds(lease));
  }
  if (shortest == absl::InfiniteDuration()) return fallback;
  return std::max(absl::Milliseconds(10), shortest / 3);
}

WorkerSet::LeaseRound WorkerSet::RenewLeases(absl::Duration timeout) {
  struct Call {
    int worker = 0;
    grpc::ClientContext ctx;
    v1::RenewSessionsRequest request;
    v1::RenewSessionsResponse response;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < size(); ++i) {
      const Leases& l = leases_[i];
      if (l.held.empty() && l.stale.empty()) continue;
      // A worker with only stale sessions gets an empty renewal: whether it answers says whether
      // to close them now.
      Call* call = nullptr;
      for (const std::string& id : l.held) {
        if (call == nullptr || call->request.session_ids_size() >= static_cast<int>(kMaxRenewIds)) {
          call = calls.emplace_back(std::make_unique<Call>()).get();
          call->worker = i;
        }
        call->request.add_session_ids(id);
      }
      if (call == nullptr) {
        calls.emplace_back(std::make_unique<Call>())->worker = i;
      }
    }
  }
  LeaseRound round;
  if (calls.empty()) return round;
  absl::BlockingCounter done(static_cast<int>(calls.size()));
  for (const std::unique_ptr<Call>& call : calls) {
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    Call* c = call.get();
    stubs_[c->worker]->async()->RenewSessions(&c->ctx, &c->request, &c->response,
                                              [c, &done](grpc::Status status) {
                                                c->status = std::move(status);
                                                done.DecrementCount();
                                              });
  }
  done.Wait();
  // Stale sessions to close: those of the workers that answered.
  std::vector<std::pair<int, std::string>> to_close;
  std::vector<bool> answered(size(), false);
  std::vector<bool> failed(size(), false);
  {
    absl::MutexLock lock(&mu_);
    for (const std::unique_ptr<Call>& call : calls) {
      Leases& l = leases_[call->worker];
      if (!call->status.ok()) {
        failed[call->worker] = true;
        continue;
      }
      answered[call->worker] = true;
      round.renewed += call->request.session_ids_size() - call->response.unknown_session_ids_size();
      for (const std::string& id : call->response.unknown_session_ids()) {
        round.lost += static_cast<int>(l.held.erase(id));
      }
    }
    for (int i = 0; i < size(); ++i) {
      if (failed[i]) ++round.failed_workers;
      if (!answered[i] || failed[i]) continue;
      for (std::string& id : leases_[i].stale) to_close.emplace_back(i, std::move(id));
      leases_[i].stale.clear();
    }
  }
  for (const auto& [worker, id] : to_close) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::CloseSessionRequest req;
    req.set_session_id(id);
    v1::CloseSessionResponse resp;
    grpc::Status s = stubs_[worker]->CloseSession(&ctx, req, &resp);
    if (s.ok()) ++round.stale_closed;
  }
  return round;
}

void WorkerSet::Notify() {
  absl::MutexLock lock(&mu_);
  ++changes_;
}

void WorkerSet::WaitForChange(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t seen = changes_;
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return changes_ != seen; };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
}

}  // namespace swarm::coordinator
