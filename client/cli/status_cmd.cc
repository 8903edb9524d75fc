// `swarm status`: the coordinator's view of its workers (layers, sessions, load).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"
#include "client/cli/connect_flags.h"
#include "client/client.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"

namespace swarm::cli {
namespace {

std::string Ranges(const std::vector<std::pair<int, int>>& ranges) {
  std::vector<std::string> parts;
  for (auto [b, e] : ranges) {
    parts.push_back(e - b == 1 ? absl::StrCat(b) : absl::StrCat(b, "-", e - 1));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, ",");
}

std::string Mib(int64_t bytes) { return absl::StrFormat("%.1f", bytes / 1048576.0); }

nlohmann::json ToJson(const ClusterStatus& s) {
  nlohmann::json workers = nlohmann::json::array();
  for (const WorkerStatus& w : s.workers) {
    nlohmann::json layers = nlohmann::json::array();
    for (auto [b, e] : w.layers) layers.push_back({{"begin", b}, {"end", e}});
    workers.push_back({{"address", w.address},
                       {"reachable", w.reachable},
                       {"compatible", w.compatible},
                       {"ready", w.ready},
                       {"error", w.error},
                       {"layers", layers},
                       {"device", w.device},
                       {"dtype", w.dtype},
                       {"weight_format", w.weight_format},
                       {"sessions", w.sessions},
                       {"max_sessions", w.max_sessions},
                       {"kv_used_bytes", w.kv_used_bytes},
                       {"kv_reserved_bytes", w.kv_reserved_bytes},
                       {"kv_budget_bytes", w.kv_budget_bytes},
                       {"weight_bytes", w.weight_bytes},
                       {"inflight_steps", w.inflight_steps},
                       {"active_requests", w.active_requests},
                       {"steps_total", w.steps_total},
                       {"busy_fraction", w.busy_fraction}});
  }
  return {{"serving", s.serving},
          {"reason", s.reason},
          {"model_fingerprint", s.model_fingerprint},
          {"architecture", s.architecture},
          {"num_layers", s.num_layers},
          {"max_position_embeddings", s.max_position_embeddings},
          {"active_requests", s.active_requests},
          {"requests_total", s.requests_total},
          {"scheduler",
           {{"running_requests", s.scheduler.running_requests},
            {"waiting_requests", s.scheduler.waiting_requests},
            {"window_seconds", s.scheduler.window_seconds},
            {"steps", s.scheduler.steps},
            {"sequences_per_step", s.scheduler.sequences_per_step},
            {"tokens_per_step", s.scheduler.tokens_per_step},
            {"admitted", s.scheduler.admitted},
            {"queue_seconds_mean", s.scheduler.queue_seconds_mean}}},
          {"workers", workers}};
}

const FlagSet& StatusFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm status", "the coordinator's view of its workers: layers, sessions, load");
    f.Required("server", "HOST:PORT", "the coordinator")
        .Value("timeout", "SECONDS", "10", "deadline of the call")
        .Bool("json", "print one JSON object instead of the table");
    AddConnectFlags(f);
    return f;
  }();
  return flags;
}

int StatusCommand(const std::vector<std::string>& args) {
  auto flags = StatusFlags().Parse(args);
  if (!flags.ok()) return Fail("status", flags.status());
  auto server = flags->Required("server");
  if (!server.ok()) return Fail("status", server.status());
  auto timeout = flags->Double("timeout");
  if (!timeout.ok()) return Fail("status", timeout.status());
  auto client = Client::Connect(*server, ConnectOptions(*flags));
  if (!client.ok()) return Fail("status", client.status());
  auto status = (*client)->Status(absl::Seconds(*timeout));
  if (!status.ok()) return Fail("status", status.status());
  if (flags->Bool("json")) {
    std::cout << ToJson(*status).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  std::printf("coordinator %s: %s\n", (*client)->address().c_str(),
              status->serving ? "SERVING" : ("NOT SERVING (" + status->reason + ")").c_str());
  std::printf("model %s, %d layers, context %lld, fingerprint %s\n", status->architecture.c_str(),
              status->num_layers, static_cast<long long>(status->max_position_embeddings),
              status->model_fingerprint.c_str());
  std::printf("requests: %d active, %llu served\n", status->active_requests,
              static_cast<unsigned long long>(status->requests_total));
  const SchedulerStatus& sched = status->scheduler;
  std::printf(
      "scheduler: %d running, %d waiting; last %.0f s: %llu steps, %.1f sequences and %.1f "
      "tokens per step, %llu admitted after %.3f s in queue (mean)\n\n",
      sched.running_requests, sched.waiting_requests, sched.window_seconds,
      static_cast<unsigned long long>(sched.steps), sched.sequences_per_step, sched.tokens_per_step,
      static_cast<unsigned long long>(sched.admitted), sched.queue_seconds_mean);
  std::printf("%-24s %-12s %-10s %-8s %-5s %-10s %-8s %-5s %-18s %s\n", "WORKER", "STATE", "LAYERS",
              "DEVICE", "DTYPE", "SESSIONS", "REQUESTS", "BUSY", "KV MiB used/budget",
              "WEIGHTS MiB");
  for (const WorkerStatus& w : status->workers) {
    std::string state = !w.reachable    ? "unreachable"
                        : !w.compatible ? "wrong-model"
                        : !w.ready      ? "loading"
                                        : "ready";
    std::string budget = w.kv_budget_bytes > 0 ? Mib(w.kv_budget_bytes) : "unlimited";
    std::printf("%-24s %-12s %-10s %-8s %-5s %-10s %-8d %-5s %-18s %s\n", w.address.c_str(),
                state.c_str(), Ranges(w.layers).c_str(), w.device.c_str(),
                (w.weight_format.empty() ? w.dtype : w.weight_format).c_str(),
                absl::StrCat(w.sessions, "/", w.max_sessions).c_str(), w.active_requests,
                absl::StrFormat("%.0f%%", 100 * w.busy_fraction).c_str(),
                absl::StrCat(Mib(w.kv_used_bytes), "/", budget).c_str(),
                Mib(w.weight_bytes).c_str());
    if (!w.error.empty()) std::printf("  %s\n", w.error.c_str());
  }
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(status, "status", StatusCommand, StatusFlags);

}  // namespace swarm::cli
