// swarm-worker: hosts some layers of a model and serves WorkerService (see DESIGN.md's CLI
// contract). Prints "listening on HOST:PORT" on stdout once the port is bound (so --listen
// HOST:0 works for scripts), loads its layers, then reports SERVING. SIGINT/SIGTERM drain it: no
// new sessions (health NOT_SERVING, OpenSession UNAVAILABLE), the open ones are served until
// none is left or --drain-grace passes, then it exits; a second SIGINT/SIGTERM exits at once.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/block_layout.h"
#include "common/byte_size.h"
#include "common/fd_limit.h"
#include "common/flags.h"
#include "common/host_port.h"
#include "common/layer_set.h"
#include "common/lock_checks.h"
#include "common/logging.h"
#include "common/progress.h"
#include "common/signals.h"
#include "common/weight_format.h"
#include "model/config.h"
#include "rpc/security.h"
#include "rpc/server.h"
#include "worker/worker_metrics.h"
#include "worker/worker_server.h"

namespace {

constexpr char kLog[] = "swarm-worker";

// On SIGTERM/SIGINT the worker drains until it holds no session, at most this long: inside the
// 60 s terminationGracePeriodSeconds of deploy/k8s (with Shutdown's own 5 s grace after it).
constexpr absl::Duration kDefaultDrainGrace = absl::Seconds(30);

// Every flag, its default (the options' own) and its meaning: parsing and --help.
swarm::FlagSet WorkerFlags() {
  const swarm::worker::WorkerServerOptions d;
  swarm::FlagSet f("swarm-worker",
                   "hosts some layers of a model and serves WorkerService; prints \"listening on "
                   "HOST:PORT\" once bound");
  f.Required("model", "DIR", "the model directory")
      .Value("layers", "A-B[,C-D]", "", "the layers to host")
      .Value("blocks", "i,j", "", "or the blocks to host, of --num-blocks")
      .Value("num-blocks", "N", "", "the block count --blocks refers to")
      .Value("listen", "HOST:PORT", "127.0.0.1:0", "the gRPC address; port 0 = a free one")
      .Value("device", "cpu|cuda:N", d.load.device, "where the layers run")
      .Value("dtype", "f32|bf16|f16|q8|q4", swarm::DTypeName(d.load.dtype),
             "weight and compute dtype; q8/q4: the linear weights quantized (compute in f32)")
      .Value("max-sessions", "N", absl::StrCat(d.limits.max_sessions),
             "sessions (KV caches) held at once")
      .Value("session-ttl", "DURATION", absl::FormatDuration(d.limits.idle_ttl),
             "an idle session is dropped after this")
      .Value("session-lease", "DURATION", absl::FormatDuration(d.limits.lease),
             "a session its coordinator stops renewing is dropped after this; 0 = no lease")
      .Value("drain-grace", "DURATION", absl::FormatDuration(kDefaultDrainGrace),
             "on SIGTERM, how long the open sessions may still run before the worker exits")
      .Value("kv-budget", "BYTES", "",
             "KV-cache memory budget; 0 = unlimited (default on cpu: half the memory left once "
             "the layers are loaded; required on cuda)")
      .Value("threads", "N", absl::StrCat(d.compute_threads), "compute threads")
      .Value("max-queued-steps", "N", absl::StrCat(d.max_queued_steps),
             "steps waiting for a compute thread before new ones are refused")
      .Value("metrics-listen", "HOST:PORT", "", "serve Prometheus /metrics here")
      .Value("metrics-auth-tokens", "FILE", "",
             "/metrics answers only 'Authorization: Bearer TOKEN' of a token in FILE (the "
             "--auth-tokens format; Prometheus: authorization.credentials_file)")
      .Value("memory-budget", "BYTES", "",
             "keep at most this many bytes of layer weights resident, loading the others on demand")
      .Value("block-layers", "N", absl::StrCat(d.block_layers),
             "layers loaded and evicted together (with --memory-budget)")
      .Value("max-sessions-per-client", "N", "0",
             "open sessions per caller (0 = no limit below --max-sessions)")
      .Value("stream-arrival-timeout", "DURATION", absl::FormatDuration(d.max_arrival_time),
             "a ForwardStream/ForwardBatchStream request not fully arrived this long after its "
             "first piece is ended with DEADLINE_EXCEEDED and its buffer freed")
      .Value("emulate-layer-time", "DURATION", "0",
             "benchmarks and tests: hold each pass this long per layer and row it computed, one "
             "pass at a time (a device of that speed; the outputs are unchanged); 0 = off")
      .Note("Give either --layers or --blocks with --num-blocks.");
  swarm::rpc::AddServerSecurityFlags(f);
  return f;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "swarm-worker: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// The default KV budget on cpu: this fraction of the memory the process may still take once its
// layers are loaded (WorkerServerOptions::kv_budget_memory_fraction).
constexpr double kDefaultKvBudgetFraction = 0.5;

absl::StatusOr<std::vector<int>> HostedLayers(const swarm::Flags& flags, int64_t num_layers) {
  if (flags.Has("layers") == flags.Has("blocks")) {
    return absl::InvalidArgumentError("give either --layers A-B or --blocks i,j --num-blocks N");
  }
  if (flags.Has("layers")) return swarm::ParseLayers(flags.String("layers"), num_layers);
  auto num_blocks = flags.Int("num-blocks", 0);
  if (!num_blocks.ok()) return num_blocks.status();
  if (*num_blocks <= 0) return absl::InvalidArgumentError("--blocks needs --num-blocks N");
  auto layout = swarm::BlockLayout::Create(num_layers, *num_blocks);
  if (!layout.ok()) return layout.status();
  std::vector<int> blocks;
  for (absl::string_view b : absl::StrSplit(flags.String("blocks"), ',')) {
    int block = 0;
    if (!absl::SimpleAtoi(b, &block) || block < 0 || block >= *num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("--blocks: '", b, "' is not a block in 0..", *num_blocks - 1));
    }
    for (int l : layout->Layers(block)) blocks.push_back(l);
  }
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  return blocks;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  swarm::BlockShutdownSignals();
  // Before any thread: gRPC's listener does not survive running out of descriptors
  // (common/fd_limit.h).
  if (auto fds = swarm::RaiseOpenFileLimit(); !fds.ok()) {
    swarm::LogLine(kLog, fds.status().ToString());
  } else if (fds->after != fds->before) {
    swarm::LogLine(kLog,
                   absl::StrCat("open-file limit raised from ", fds->before, " to ", fds->after));
  }
  const swarm::FlagSet flag_set = WorkerFlags();
  auto flags = flag_set.Parse(argc, argv);
  if (!flags.ok()) return Fail(flags.status());
  if (flags->help()) {
    std::fputs(flag_set.Help().c_str(), stdout);
    return 0;
  }
  swarm::worker::WorkerServerOptions options;
  {
    auto model = flags->Required("model");
    if (!model.ok()) return Fail(model.status());
    options.model_dir = *model;
    auto config = swarm::model::LoadModelConfig(options.model_dir);
    if (!config.ok()) return Fail(config.status());
    auto layers = HostedLayers(*flags, config->num_layers);
    if (!layers.ok()) return Fail(layers.status());
    options.layers = *layers;
  }
  options.listen = flags->String("listen");
  {
    auto security = swarm::rpc::ServerSecurityFromFlags(*flags, kLog);
    if (!security.ok()) return Fail(security.status());
    options.security = *std::move(security);
  }
  options.load.device = flags->String("device");
  auto format = swarm::ParseWeightFormat(flags->String("dtype"));
  if (!format.ok()) return Fail(format.status());
  options.load.dtype = format->dtype;
  options.load.quant = format->quant;
  auto max_sessions = flags->Int("max-sessions");
  auto per_client = flags->Int("max-sessions-per-client");
  if (!per_client.ok()) return Fail(per_client.status());
  if (*per_client < 0) {
    return Fail(absl::InvalidArgumentError("--max-sessions-per-client must not be negative"));
  }
  options.limits.max_sessions_per_client = static_cast<int>(*per_client);
  auto ttl = flags->Duration("session-ttl");
  auto lease = flags->Duration("session-lease");
  auto drain_grace = flags->Duration("drain-grace");
  auto budget = flags->Bytes("kv-budget", 0);
  auto threads = flags->Int("threads");
  auto queued = flags->Int("max-queued-steps");
  auto memory_budget = flags->Bytes("memory-budget", 0);
  auto block_layers = flags->Int("block-layers");
  auto arrival = flags->Duration("stream-arrival-timeout");
  auto emulate = flags->Duration("emulate-layer-time");
  for (const absl::Status& s :
       {max_sessions.status(), ttl.status(), lease.status(), drain_grace.status(), budget.status(),
        threads.status(), queued.status(), memory_budget.status(), block_layers.status(),
        arrival.status(), emulate.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*emulate < absl::ZeroDuration() || *emulate > absl::Seconds(1)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--emulate-layer-time must be in 0..1s, got ", absl::FormatDuration(*emulate))));
  }
  options.emulated_layer_time = *emulate;
  if (*arrival <= absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--stream-arrival-timeout must be positive"));
  }
  options.max_arrival_time = *arrival;
  if (flags->Has("memory-budget") && *memory_budget <= 0) {
    return Fail(absl::InvalidArgumentError("--memory-budget must be positive"));
  }
  if (*block_layers < 1)
    return Fail(absl::InvalidArgumentError("--block-layers must be at least 1"));
  if (flags->Has("block-layers") && !flags->Has("memory-budget")) {
    return Fail(absl::InvalidArgumentError("--block-layers needs --memory-budget"));
  }
  options.memory_budget_bytes = *memory_budget;
  options.block_layers = static_cast<int>(*block_layers);
  if (*max_sessions < 1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-sessions must be at least 1, got ", *max_sessions)));
  }
  if (*threads < 1) {
    return Fail(
        absl::InvalidArgumentError(absl::StrCat("--threads must be at least 1, got ", *threads)));
  }
  if (*queued < 1) {
    // A queue of 0 would refuse every step that goes to the compute pool, even on an idle worker.
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-queued-steps must be at least 1, got ", *queued)));
  }
  if (*ttl <= absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--session-ttl must be positive"));
  }
  if (*lease < absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--session-lease must not be negative"));
  }
  if (*drain_grace < absl::ZeroDuration()) {
    return Fail(absl::InvalidArgumentError("--drain-grace must not be negative"));
  }
  if (!flags->Has("kv-budget")) {
    if (options.load.device != "cpu") {
      // No device-memory query in a CPU-only LibTorch build: an operator must size it.
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--device ", options.load.device,
          " needs an explicit --kv-budget BYTES (KV caches live in device memory, which the "
          "worker cannot measure; --kv-budget 0 means unlimited)")));
    }
    options.kv_budget_memory_fraction = kDefaultKvBudgetFraction;
  }
  options.limits.max_sessions = static_cast<int>(*max_sessions);
  options.limits.idle_ttl = *ttl;
  options.limits.lease = *lease;
  options.limits.kv_budget_bytes = *budget;
  options.compute_threads = static_cast<int>(*threads);
  options.max_queued_steps = static_cast<int>(*queued);

  // Loading every hosted layer up front (no --memory-budget) takes a while on a large model:
  // report it (a bar on a terminal, log lines otherwise).
  std::unique_ptr<swarm::Progress> progress;
  if (options.memory_budget_bytes == 0) {
    swarm::Progress::Options po;
    po.label = "loading layers";
    po.total = static_cast<int64_t>(options.layers.size());
    po.unit = "layers";
    if (!isatty(STDERR_FILENO)) {
      po.write = [](absl::string_view line) {
        swarm::LogLine(kLog, absl::StripTrailingAsciiWhitespace(line));
      };
    }
    progress = std::make_unique<swarm::Progress>(std::move(po));
    swarm::Progress* p = progress.get();
    options.load.on_layer_loaded = [p] { p->Add(1); };
  }
  std::unique_ptr<swarm::worker::WorkerMetricsObserver> metrics;
  if (flags->Has("metrics-auth-tokens") && !flags->Has("metrics-listen")) {
    return Fail(absl::InvalidArgumentError("--metrics-auth-tokens needs --metrics-listen"));
  }
  if (flags->Has("metrics-listen")) {
    if (auto s = swarm::ValidateHostPort(flags->String("metrics-listen"), "--metrics-listen");
        !s.ok()) {
      return Fail(s);
    }
    swarm::worker::WorkerMetricsObserver::Options mo;
    mo.listen = flags->String("metrics-listen");
    mo.layers = options.layers;
    mo.model = options.model_dir;
    mo.device = options.load.device;
    mo.dtype = swarm::WeightFormatName({options.load.dtype, options.load.quant});
    mo.kv_budget_bytes = options.limits.kv_budget_bytes;
    mo.auth_tokens_file = flags->String("metrics-auth-tokens");
    auto started = swarm::worker::WorkerMetricsObserver::Start(mo);
    if (!started.ok()) return Fail(started.status());
    metrics = *std::move(started);
    options.observer = metrics.get();
  }
  auto server = swarm::worker::WorkerServer::Start(options);
  if (!server.ok()) return Fail(server.status());
  std::printf("listening on %s\n", (*server)->address().c_str());
  if (metrics) std::printf("metrics on http://%s/metrics\n", metrics->address().c_str());
  std::fflush(stdout);
  if (metrics) {
    swarm::LogLine(kLog, absl::StrCat("metrics on http://", metrics->address(), "/metrics"));
  }
  const char* dtype_name = swarm::WeightFormatName({options.load.dtype, options.load.quant});
  swarm::LogLine(
      kLog, absl::StrCat("listening on ", (*server)->address(), "; model ", options.model_dir, " (",
                         (*server)->checkpoint().config().architecture, ", fingerprint ",
                         (*server)->checkpoint().config().Fingerprint(), "), layers ",
                         swarm::FormatLayers(options.layers), ", device ", options.load.device,
                         ", dtype ", dtype_name, ", KV budget ",
                         options.kv_budget_memory_fraction > 0
                             ? std::string("sized once the layers are loaded")
                         : options.limits.kv_budget_bytes > 0
                             ? swarm::FormatBytes(options.limits.kv_budget_bytes)
                             : std::string("unlimited")));

  bool load_failed = false;
  std::thread loader([&] {
    absl::Status s = (*server)->Load();
    if (progress != nullptr && s.ok()) progress->Finish();
    if (!s.ok()) {
      swarm::LogLine(kLog, s.ToString());
      load_failed = true;
      kill(getpid(), SIGTERM);  // Wakes the main thread's WaitForShutdownSignal.
    }
  });
  int sig = swarm::WaitForShutdownSignal();
  if (!load_failed) swarm::LogLine(kLog, absl::StrCat("signal ", sig, ": draining"));
  // Before the join: a worker still loading refuses sessions from now on.
  (*server)->StartDraining();
  // A load in progress cannot be interrupted; joining it first keeps shutdown orderly.
  loader.join();
  absl::Duration shutdown_grace = absl::Seconds(5);
  if (!load_failed) {
    // Coordinators stop routing new requests here (Info: draining, health NOT_SERVING) and move
    // or finish the ones under way; the worker exits once it holds no session, after the grace
    // at most, or at once on a second signal.
    const absl::Time start = absl::Now();
    const int held = (*server)->worker() != nullptr ? (*server)->worker()->Stats().sessions : 0;
    if (held > 0) {
      swarm::LogLine(kLog,
                     absl::StrCat("draining: waiting up to ", absl::FormatDuration(*drain_grace),
                                  " for ", held, " open session(s) to end"));
    }
    int second = 0;
    const auto end = (*server)->WaitForSessionsToEnd(*drain_grace, [&second](absl::Duration d) {
      second = swarm::WaitForShutdownSignalFor(d);
      return second != 0;
    });
    const std::string took =
        absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)));
    using DrainEnd = swarm::worker::WorkerServer::DrainEnd;
    if (end == DrainEnd::kNoSessions) {
      swarm::LogLine(kLog, absl::StrCat("drained in ", took, ": no session left; exiting"));
    } else {
      const int left = (*server)->worker()->Stats().sessions;
      swarm::LogLine(kLog, end == DrainEnd::kInterrupted
                               ? absl::StrCat("signal ", second, ": exiting now with ", left,
                                              " open session(s)")
                               : absl::StrCat("drain grace of ", absl::FormatDuration(*drain_grace),
                                              " over: exiting with ", left, " open session(s)"));
      if (end == DrainEnd::kInterrupted) shutdown_grace = absl::ZeroDuration();
    }
  }
  (*server)->Shutdown(shutdown_grace);
  return load_failed ? 1 : 0;
}
