// swarm-coordinator: serves CoordinatorService for a model whose layers live on swarm-workers
// (see DESIGN.md's CLI contract). Prints "listening on HOST:PORT" on stdout once the port is
// bound; reports SERVING once the workers cover every layer. SIGINT/SIGTERM stop it cleanly.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/fd_limit.h"
#include "common/flags.h"
#include "common/host_port.h"
#include "common/logging.h"
#include "common/signals.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/coordinator_server.h"
#include "rpc/security.h"

namespace {

constexpr char kLog[] = "swarm-coordinator";
constexpr char kUsage[] =
    "usage: swarm-coordinator --model DIR --workers HOST:PORT,...\n"
    "                         [--listen HOST:PORT (default 127.0.0.1:0)]\n"
    "                         [--metrics-listen HOST:PORT] [--device cpu|cuda:N]\n"
    "                         [--max-concurrent-requests N] [--max-queued-requests N]\n"
    "                         [--request-timeout 10m] [--step-timeout 60s] [--router FILE]\n"
    "                         [--num-blocks N]\n"
    "                         [--tls-cert FILE --tls-key FILE --tls-ca FILE]  TLS; mutual TLS "
    "with\n"
    "                                       the workers, whose certificates must be from the CA\n"
    "                         [--insecure]  allow plaintext on a non-loopback --listen\n"
    "                         [--auth-tokens FILE]  clients must send 'authorization: Bearer "
    "TOKEN'\n"
    "                                       (lines 'name:token'; docs/security.md)\n"
    "                         [--max-requests-per-token N (default 8)]  running or queued, per "
    "token\n"
    "                         [--max-prompt-bytes BYTES]  longer prompts are refused before\n"
    "                                       tokenizing (default 32 per context position, >= "
    "64KiB)\n";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "swarm-coordinator: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::BlockShutdownSignals();
  // Before any thread: gRPC's listener does not survive running out of descriptors
  // (common/fd_limit.h).
  if (auto fds = swarm::RaiseOpenFileLimit(); !fds.ok()) {
    swarm::LogLine(kLog, fds.status().ToString());
  } else if (fds->after != fds->before) {
    swarm::LogLine(kLog,
                   absl::StrCat("open-file limit raised from ", fds->before, " to ", fds->after));
  }
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  auto flags = swarm::Flags::Parse(
      argc, argv,
      {"model", "workers", "listen", "metrics-listen", "device", "max-concurrent-requests",
       "max-queued-requests", "request-timeout", "step-timeout", "router", "num-blocks", "tls-cert",
       "tls-key", "tls-ca", "auth-tokens", "max-requests-per-token", "max-prompt-bytes"},
      {swarm::rpc::kInsecureFlag});
  if (!flags.ok()) {
    std::fputs(kUsage, stderr);
    return Fail(flags.status());
  }
  swarm::coordinator::CoordinatorOptions options;
  auto model = flags->Required("model");
  auto workers = flags->Required("workers");
  if (!model.ok()) return Fail(model.status());
  if (!workers.ok()) return Fail(workers.status());
  options.model_dir = *model;
  options.workers = absl::StrSplit(*workers, ',', absl::SkipWhitespace());
  if (options.workers.empty()) {
    return Fail(absl::InvalidArgumentError("--workers: give at least one HOST:PORT"));
  }
  options.listen = flags->String("listen", "127.0.0.1:0");
  {
    auto security = swarm::rpc::ServerSecurityFromFlags(*flags, kLog);
    if (!security.ok()) return Fail(security.status());
    options.security = *std::move(security);
  }
  options.auth_tokens_file = flags->String("auth-tokens");
  {
    auto per_token = flags->Int("max-requests-per-token", options.max_requests_per_token);
    if (!per_token.ok()) return Fail(per_token.status());
    if (*per_token < 1) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--max-requests-per-token must be at least 1, got ", *per_token)));
    }
    options.max_requests_per_token = static_cast<int>(*per_token);
    auto prompt_bytes = flags->Bytes("max-prompt-bytes", 0);
    if (!prompt_bytes.ok()) return Fail(prompt_bytes.status());
    if (flags->Has("max-prompt-bytes") && *prompt_bytes < 1) {
      return Fail(absl::InvalidArgumentError("--max-prompt-bytes must be positive"));
    }
    options.max_prompt_bytes = *prompt_bytes;
  }
  options.device = flags->String("device", "cpu");
  options.router_path = flags->String("router");
  auto concurrent = flags->Int("max-concurrent-requests", options.max_concurrent_requests);
  auto queued = flags->Int("max-queued-requests", options.max_queued_requests);
  auto request_timeout = flags->Duration("request-timeout", options.max_request_time);
  auto step_timeout = flags->Duration("step-timeout", options.step_timeout);
  // --num-blocks N: the router file must have been calibrated for N blocks.
  auto num_blocks = flags->Int("num-blocks", 0);
  if (!num_blocks.ok()) return Fail(num_blocks.status());
  if (flags->Has("num-blocks") && (*num_blocks < 1 || options.router_path.empty())) {
    return Fail(absl::InvalidArgumentError(
        "--num-blocks: give N >= 1 together with --router FILE (the router's block count)"));
  }
  options.router_num_blocks = static_cast<int>(*num_blocks);
  for (const absl::Status& s :
       {concurrent.status(), queued.status(), request_timeout.status(), step_timeout.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*concurrent < 1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-concurrent-requests must be at least 1, got ", *concurrent)));
  }
  if (*queued < 1) {
    // A queue of 0 would refuse every request, even on an idle coordinator.
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-queued-requests must be at least 1, got ", *queued)));
  }
  options.max_concurrent_requests = static_cast<int>(*concurrent);
  options.max_queued_requests = static_cast<int>(*queued);
  options.max_request_time = *request_timeout;
  options.step_timeout = *step_timeout;
  if (flags->Has("metrics-listen")) {
    if (auto s = swarm::ValidateHostPort(flags->String("metrics-listen"), "--metrics-listen");
        !s.ok()) {
      return Fail(s);
    }
  }
  // Every flag is checked before the model loads.
  for (const std::string& w : options.workers) {
    if (auto s = swarm::ValidateHostPort(w, "--workers"); !s.ok()) return Fail(s);
  }
  // The model's coordinator side and the router file, loaded once: the server runs on them and
  // the per-block metric series follow their block layout (the router's split, or one block per
  // layer without a router).
  swarm::coordinator::CoordinatorModelOptions model_options;
  model_options.model_dir = options.model_dir;
  model_options.device = options.device;
  model_options.router_path = options.router_path;
  model_options.router_num_blocks = options.router_num_blocks;
  auto loaded = swarm::coordinator::CoordinatorModel::Load(model_options);
  if (!loaded.ok()) return Fail(loaded.status());
  std::unique_ptr<swarm::coordinator::CoordinatorMetricsObserver> metrics;
  if (flags->Has("metrics-listen")) {
    swarm::coordinator::CoordinatorMetricsObserver::Options mo;
    mo.listen = flags->String("metrics-listen");
    mo.num_layers = static_cast<int>((*loaded)->config().num_layers);
    mo.num_blocks = (*loaded)->block_layout().num_blocks;
    mo.workers = options.workers;
    mo.model = options.model_dir;
    auto started = swarm::coordinator::CoordinatorMetricsObserver::Start(mo);
    if (!started.ok()) return Fail(started.status());
    metrics = *std::move(started);
    options.observer = metrics.get();
  }

  auto server = swarm::coordinator::CoordinatorServer::Start(options, *std::move(loaded));
  if (!server.ok()) return Fail(server.status());
  std::printf("listening on %s\n", (*server)->address().c_str());
  if (metrics) std::printf("metrics on http://%s/metrics\n", metrics->address().c_str());
  std::fflush(stdout);
  if (metrics) {
    swarm::LogLine(kLog, absl::StrCat("metrics on http://", metrics->address(), "/metrics (",
                                      metrics->num_blocks(), " blocks)"));
  }
  swarm::LogLine(
      kLog, absl::StrCat("listening on ", (*server)->address(), "; model ", options.model_dir, " (",
                         (*server)->config().architecture, ", ", (*server)->config().num_layers,
                         " layers), workers ", absl::StrJoin(options.workers, ",")));
  int sig = swarm::WaitForShutdownSignal();
  swarm::LogLine(kLog, absl::StrCat("signal ", sig, ": shutting down"));
  (*server)->Shutdown();
  return 0;
}
