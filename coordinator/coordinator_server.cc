#include "coordinator/coordinator_server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/host_port.h"
#include "common/layer_set.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "coordinator/coordinator_service.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "swarm/v1/coordinator.grpc.pb.h"

namespace swarm::coordinator {

namespace {

constexpr char kLog[] = "swarm-coordinator";

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorOptions& options) {
  for (const std::string& w : options.workers) RETURN_IF_ERROR(ValidateHostPort(w, "--workers"));
  CoordinatorModelOptions model_options;
  model_options.model_dir = options.model_dir;
  model_options.device = options.device;
  model_options.router_path = options.router_path;
  model_options.router_num_blocks = options.router_num_blocks;
  model_options.render_date = options.render_date;
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorModel> model, CoordinatorModel::Load(model_options));
  return Start(options, std::move(model));
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    const CoordinatorOptions& options, std::unique_ptr<CoordinatorModel> model) {
  for (const std::string& w : options.workers) RETURN_IF_ERROR(ValidateHostPort(w, "--workers"));
  auto server = std::unique_ptr<CoordinatorServer>(new CoordinatorServer());
  server->options_ = options;
  SchedulerStats::Options stats_options;
  stats_options.next = options.observer;
  stats_options.num_workers = static_cast<int>(options.workers.size());
  const absl::Duration busy_window = stats_options.window;
  server->stats_ = std::make_unique<SchedulerStats>(std::move(stats_options));
  server->observer_ = server->stats_.get();
  server->model_ = std::move(model);
  const model::ModelConfig& c = server->model_->config();
  if (!options.auth_tokens_file.empty()) {
    TokenAuthOptions auth_options;
    auth_options.path = options.auth_tokens_file;
    auth_options.max_requests_per_token = options.max_requests_per_token;
    ASSIGN_OR_RETURN(server->auth_, TokenAuth::Load(auth_options));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> worker_credentials,
                   rpc::MakeChannelCredentials(options.security.tls));
  server->workers_ =
      std::make_unique<WorkerSet>(options.workers, c.Fingerprint(), static_cast<int>(c.num_layers),
                                  std::move(worker_credentials));
  PipelineOptions pipeline_options;
  pipeline_options.max_request_time = options.max_request_time;
  pipeline_options.step_timeout = options.step_timeout;
  pipeline_options.control_timeout = options.control_timeout;
  pipeline_options.failover = options.failover;
  pipeline_options.observer = server->observer_;
  pipeline_options.max_prompt_bytes = options.max_prompt_bytes;
  // One hop thread per generating request: the rest of a wide parallel step runs on its caller.
  pipeline_options.hop_threads = options.max_concurrent_requests;
  pipeline_options.limits.max_batch_tokens = options.max_batch_tokens;
  pipeline_options.limits.max_batch_sequences = options.max_batch_sequences;
  pipeline_options.max_waiting_requests = options.max_waiting_requests;
  pipeline_options.max_micro_batches = options.max_micro_batches;
  pipeline_options.balance = options.balance;
  // The choices the busy fractions still show: those of the last busy window.
  pipeline_options.balance.gap_horizon = busy_window;
  pipeline_options.fuse_hops = options.fuse_hops;
  pipeline_options.worker_busy = [stats = server->stats_.get()] {
    return stats->Get().worker_busy_fraction;
  };
  server->pipeline_ = std::make_unique<GenerationPipeline>(
      server->model_.get(), server->workers_.get(), pipeline_options);
  server->pool_ =
      std::make_unique<ThreadPool>(options.max_concurrent_requests, options.max_queued_requests);
  server->service_ = NewCoordinatorService(server.get());
  server->health_names_ = {v1::CoordinatorService::service_full_name()};
  rpc::ServerSecurity security = options.security;
  // Clients with tokens need no certificate; without tokens a CA means client certificates.
  security.require_client_certs = server->auth_ == nullptr;
  ASSIGN_OR_RETURN(
      rpc::StartedServer started,
      rpc::StartServer(options.listen, {server->service_.get()}, server->health_names_, security));
  server->server_ = std::move(started.server);
  server->address_ = std::move(started.address);
  server->monitor_ = std::thread([s = server.get()] { s->MonitorLoop(); });
  server->leases_ = std::thread([s = server.get()] { s->LeaseLoop(); });
  return server;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

absl::Status CoordinatorServer::Schedule(std::function<void()> fn) {
  if (stopping()) return absl::UnavailableError("the coordinator is shutting down");
  if (!pool_->TrySchedule(std::move(fn))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("coordinator overloaded: ", pool_->pending(), " requests running or queued"));
  }
  return absl::OkStatus();
}

ServingReport CoordinatorServer::Report() {
  ServingReport report;
  report.serving = serving();
  {
    absl::MutexLock lock(&mu_);
    if (!report.serving) report.reason = not_serving_reason_;
  }
  report.active_requests = pipeline_->active_requests();
  report.requests_total = pipeline_->requests_total();
  report.router_path = options_.router_path;
  report.workers = workers_->Snapshot();
  report.scheduler = stats_->Get();
  return report;
}

void CoordinatorServer::ReportAsync(std::function<void(const ServingReport&)> done) {
  workers_->RefreshAsync(options_.control_timeout, [this, done = std::move(done)] {
    UpdateServing();
    done(Report());
  });
}

void CoordinatorServer::UpdateServing() {
  absl::Status coverage = workers_->Coverage();
  const bool now = coverage.ok();
  absl::MutexLock lock(&mu_);
  not_serving_reason_ = std::string(coverage.message());
  if (now == serving_.load()) return;
  serving_.store(now);
  if (server_) rpc::SetServing(server_.get(), health_names_, now);
  observer_->SetReady(now);
  if (now) {
    std::vector<std::string> hosts;
    for (const WorkerState& s : workers_->Snapshot()) {
      if (s.usable()) {
        hosts.push_back(absl::StrCat(
            s.address, "[",
            FormatLayers(std::vector<int>(s.info.layers().begin(), s.info.layers().end())), "]"));
      }
    }
    LogLine(kLog, absl::StrCat("serving: workers ", absl::StrJoin(hosts, ", "), " cover all ",
                               config().num_layers, " layers"));
  } else {
    LogLine(kLog, absl::StrCat("not serving: ", coverage.message()));
  }
}

void CoordinatorServer::MonitorLoop() {
  absl::Duration backoff = options_.min_backoff;
  absl::Time last_log = absl::InfinitePast();
  std::string last_reason;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    workers_->Refresh(options_.control_timeout);
    {
      const std::vector<WorkerState> snapshot = workers_->Snapshot();
      for (const WorkerState& s : snapshot) observer_->SetWorkerUp(s.address, s.usable());
      observer_->OnWorkers(snapshot);
    }
    UpdateServing();
    absl::Duration wait = options_.poll_interval;
    if (!serving_.load()) {
      wait = backoff;
      backoff = std::min(backoff * 2, options_.max_backoff);
      std::string reason;
      {
        absl::MutexLock lock(&mu_);
        reason = not_serving_reason_;
      }
      // One line when the reason changes, and a reminder every 30 s while it lasts.
      if (reason != last_reason || absl::Now() - last_log > absl::Seconds(30)) {
        LogLine(kLog, absl::StrCat("waiting for workers: ", reason, "; retrying in ",
                                   absl::FormatDuration(wait)));
        last_reason = reason;
        last_log = absl::Now();
      }
    } else {
      backoff = options_.min_backoff;
      last_reason.clear();
    }
    workers_->WaitForChange(wait);
  }
}

void CoordinatorServer::LeaseLoop() {
  absl::Time last_round = absl::Now();
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    // Without a lease on any worker only stale sessions need closing: at the poll interval. The
    // interval is looked at again every 100 ms (the leases are known once the workers answered
    // Info, and a session opened meanwhile must be renewed within the shortest one).
    const absl::Duration interval = workers_->RenewInterval(options_.poll_interval);
    const absl::Duration wait =
        std::min(std::max(last_round + interval - absl::Now(), absl::ZeroDuration()),
                 absl::Milliseconds(100));
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
    if (stopping_) break;
    if (absl::Now() < last_round + interval) continue;
    last_round = absl::Now();
    mu_.Unlock();
    // A worker that does not answer within the interval is late for the next round already.
    const WorkerSet::LeaseRound round =
        workers_->RenewLeases(std::max(interval, absl::Milliseconds(200)));
    if (round.lost > 0 || round.stale_closed > 0) {
      LogLine(kLog, absl::StrCat("leases: ", round.lost,
                                 " session(s) no longer held by their worker (restarted, or the "
                                 "lease ran out); closed ",
                                 round.stale_closed, " stale session(s) on returning workers"));
    }
    mu_.Lock();
  }
}

absl::Status CoordinatorServer::WaitUntilServing(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (!serving_.load()) {
    if (absl::Now() > end) {
      absl::MutexLock lock(&mu_);
      return absl::DeadlineExceededError(absl::StrCat("coordinator not serving after ",
                                                      absl::FormatDuration(timeout), ": ",
                                                      not_serving_reason_));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

void CoordinatorServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
  }
  if (workers_) workers_->Notify();  // Wakes the monitor.
  if (server_) {
    rpc::SetServing(server_.get(), health_names_, false);
    // Drain: new requests are refused (UNAVAILABLE) while running ones get `grace` to finish.
    // Then shut down with an immediate deadline: grpc::Server would otherwise also wait for idle
    // client connections to close, which a client that is not polling never does.
    const absl::Time end = absl::Now() + grace;
    while (pool_->pending() > 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(10));
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }
  if (monitor_.joinable()) monitor_.join();
  if (leases_.joinable()) leases_.join();
  pool_.reset();
}

}  // namespace swarm::coordinator
