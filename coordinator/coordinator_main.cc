// swarm-coordinator: serves CoordinatorService for a model whose layers live on swarm-workers
// (see DESIGN.md's CLI contract), and with --http-listen the OpenAI-compatible HTTP API
// (coordinator/http_api.h). Prints "listening on HOST:PORT" on stdout once the port is bound
// (then "http api on http://HOST:PORT/v1"); reports SERVING once the workers cover every layer.
// SIGINT/SIGTERM stop it cleanly.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/fd_limit.h"
#include "common/flags.h"
#include "common/host_port.h"
#include "common/lock_checks.h"
#include "common/logging.h"
#include "common/signals.h"
#include "coordinator/auth.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/http_api.h"
#include "rpc/security.h"
#include "tokenizer/chat_template.h"

namespace {

constexpr char kLog[] = "swarm-coordinator";

// Every flag, its default (the options' own) and its meaning: parsing and --help.
swarm::FlagSet CoordinatorFlags() {
  const swarm::coordinator::CoordinatorOptions d;
  swarm::FlagSet f("swarm-coordinator",
                   "serves CoordinatorService for a model whose layers live on swarm-workers; "
                   "prints \"listening on HOST:PORT\" once bound");
  f.Required("model", "DIR", "the model directory (tokenizer, embeddings, head)")
      .Required("workers", "HOST:PORT,...", "the workers")
      .Value("listen", "HOST:PORT", "127.0.0.1:0", "the gRPC address; port 0 = a free one")
      .Value("metrics-listen", "HOST:PORT", "", "serve Prometheus /metrics here")
      .Value("metrics-auth-tokens", "FILE", "",
             "/metrics answers only 'Authorization: Bearer TOKEN' of a token in FILE (the "
             "--auth-tokens format; Prometheus: authorization.credentials_file)")
      .Value("device", "cpu|cuda:N", d.device, "where the embeddings and head run")
      .Value("max-concurrent-requests", "N", absl::StrCat(d.max_concurrent_requests),
             "requests generating at once")
      .Value("max-queued-requests", "N", absl::StrCat(d.max_queued_requests),
             "requests waiting for a slot before new ones are refused")
      .Value("request-timeout", "DURATION", absl::FormatDuration(d.max_request_time),
             "the longest a request may run")
      .Value("step-timeout", "DURATION", absl::FormatDuration(d.step_timeout),
             "deadline of one step on a worker")
      .Value("replay-budget", "BYTES", "1GiB",
             "replay history (hops' input hidden states) kept for fail-over, all requests "
             "together; past it a request's is dropped and recomputed from its ids; 0 = none")
      .Value("failover-wait", "DURATION", absl::FormatDuration(d.failover.failover_wait),
             "how long a fail-over waits for a worker hosting the layers (a replica, or the "
             "failed one back)")
      .Value("failover-attempts", "N", absl::StrCat(d.failover.failover_attempts),
             "fail-overs of a request without a step completing, then UNAVAILABLE")
      .Value("step-deadline-min", "DURATION", absl::FormatDuration(d.failover.step_deadline_min),
             "the shortest step deadline (a worker missing one is failed over)")
      .Value("step-deadline-factor", "X", absl::StrCat(d.failover.step_deadline_factor),
             "step deadline = max(X times the recent p99 step latency, --step-deadline-min), "
             "at most --step-timeout; 0 = always --step-timeout")
      .Value("router", "FILE", "", "the router file for sparse requests (swarm calibrate)")
      .Value("num-blocks", "N", "", "check the router was calibrated for N blocks")
      .Value("date", "YYYY-MM-DD", "",
             "the day chat templates' strftime_now() renders (else $SWARM_DATE, else today)")
      .Value("max-batch-tokens", "N", absl::StrCat(d.max_batch_tokens),
             "rows (decode tokens + prefill chunks) in one scheduler step")
      .Value("max-batch-sequences", "N", absl::StrCat(d.max_batch_sequences),
             "requests running in the batch at once")
      .Value("max-waiting-requests", "N", absl::StrCat(d.max_waiting_requests),
             "requests waiting for the batch before new ones are refused")
      .Value("max-micro-batches", "N", absl::StrCat(d.max_micro_batches),
             "micro-batches in flight (the pipeline's depth); 0 = one per worker machine")
      .Value("http-listen", "HOST:PORT", "", "serve the OpenAI-compatible HTTP API here")
      .Value("served-model-name", "NAME", "",
             "the model name the HTTP API reports and accepts (default: the model directory's "
             "name)")
      .Value("http-max-body-bytes", "BYTES", "1MiB", "largest HTTP request body (413 beyond)")
      .Value("auth-tokens", "FILE", "",
             "clients must send 'authorization: Bearer TOKEN' (lines 'name:token'; "
             "docs/security.md); reloaded when it changes")
      .Value("max-requests-per-token", "N", absl::StrCat(d.max_requests_per_token),
             "requests running or queued per token")
      .Value("max-prompt-bytes", "BYTES", "",
             "longer prompts are refused before tokenizing (default 32 per context position, at "
             "least 64KiB)")
      .Bool("balance",
            "balance worker load: route router-chosen sparse requests with load tolls from the "
            "workers' busy fractions and, per window, the congestion game (default: the router's "
            "toll-free choice)")
      .Value("balance-cap", "X", absl::StrCat(d.balance.toll_cap),
             "with --balance: largest load toll, in units of the router's damage scale")
      .Value("balance-congestion", "X", absl::StrCat(d.balance.congestion),
             "with --balance: cost per request sharing a block in one window, in damage-scale "
             "units, at full pressure")
      .Value("balance-gain", "X", absl::StrCat(d.balance.gain),
             "with --balance: a block's tolls reach the cap once its workers are 1/X of the "
             "mean's idle headroom busier than the mean (lower: a wider margin of imbalance "
             "left unbalanced, less KL paid)")
      .Value("balance-window", "DURATION", absl::FormatDuration(d.balance.window),
             "with --balance: sparse requests arriving within this of the first are routed "
             "together (0 = each alone)")
      .Bool("no-fuse-hops",
            "run each selected block as its own hop (default: consecutive ungated blocks on one "
            "worker go as one)");
  swarm::rpc::AddServerSecurityFlags(f);
  return f;
}

// --balance and its knobs; the knobs need --balance, --balance needs --router.
absl::Status ParseBalance(const swarm::Flags& flags,
                          swarm::coordinator::CoordinatorOptions& options) {
  swarm::coordinator::BalanceOptions& b = options.balance;
  b.enabled = flags.Bool("balance");
  for (const char* knob : {"balance-cap", "balance-congestion", "balance-gain", "balance-window"}) {
    if (flags.Has(knob) && !b.enabled) {
      return absl::InvalidArgumentError(absl::StrCat("--", knob, " needs --balance"));
    }
  }
  if (b.enabled && options.router_path.empty()) {
    return absl::InvalidArgumentError(
        "--balance needs --router FILE (it balances the router's sparse choices)");
  }
  auto cap = flags.Double("balance-cap", b.toll_cap);
  if (!cap.ok()) return cap.status();
  if (!(*cap >= 0) || !std::isfinite(*cap)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--balance-cap must be a finite number >= 0, got ", *cap));
  }
  auto congestion = flags.Double("balance-congestion", b.congestion);
  if (!congestion.ok()) return congestion.status();
  if (!(*congestion >= 0) || !std::isfinite(*congestion)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--balance-congestion must be a finite number >= 0, got ", *congestion));
  }
  auto gain = flags.Double("balance-gain", b.gain);
  if (!gain.ok()) return gain.status();
  if (!(*gain > 0) || !std::isfinite(*gain)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--balance-gain must be a finite number > 0, got ", *gain));
  }
  auto window = flags.Duration("balance-window", b.window);
  if (!window.ok()) return window.status();
  if (*window < absl::ZeroDuration() || *window > absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--balance-window must be in 0..1s, got ", absl::FormatDuration(*window)));
  }
  b.toll_cap = *cap;
  b.congestion = *congestion;
  b.gain = *gain;
  b.window = *window;
  return absl::OkStatus();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "swarm-coordinator: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
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
  const swarm::FlagSet flag_set = CoordinatorFlags();
  auto flags = flag_set.Parse(argc, argv);
  if (!flags.ok()) return Fail(flags.status());
  if (flags->help()) {
    std::fputs(flag_set.Help().c_str(), stdout);
    return 0;
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
  options.listen = flags->String("listen");
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
  options.device = flags->String("device");
  options.router_path = flags->String("router");
  {
    auto date = swarm::tokenizer::ResolveRenderDate(flags->String("date"));
    if (!date.ok()) return Fail(date.status());
    options.render_date = *date;
  }
  auto concurrent = flags->Int("max-concurrent-requests");
  auto queued = flags->Int("max-queued-requests");
  auto request_timeout = flags->Duration("request-timeout");
  auto step_timeout = flags->Duration("step-timeout");
  // --num-blocks N: the router file must have been calibrated for N blocks.
  auto num_blocks = flags->Int("num-blocks", 0);
  if (!num_blocks.ok()) return Fail(num_blocks.status());
  if (flags->Has("num-blocks") && (*num_blocks < 1 || options.router_path.empty())) {
    return Fail(absl::InvalidArgumentError(
        "--num-blocks: give N >= 1 together with --router FILE (the router's block count)"));
  }
  options.router_num_blocks = static_cast<int>(*num_blocks);
  if (auto s = ParseBalance(*flags, options); !s.ok()) return Fail(s);
  options.fuse_hops = !flags->Bool("no-fuse-hops");
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
  // The scheduler's limits: each at least 1 (--max-micro-batches 0 = one per worker).
  struct Limit {
    const char* name;
    int64_t fallback;
    int64_t min;
    int64_t max;
  };
  int64_t limits[4];
  // (One runner thread per micro-batch: --max-micro-batches stays small.)
  const Limit specs[4] = {{"max-batch-tokens", options.max_batch_tokens, 1, int64_t{1} << 30},
                          {"max-batch-sequences", options.max_batch_sequences, 1, 1 << 20},
                          {"max-waiting-requests", options.max_waiting_requests, 1, 1 << 20},
                          {"max-micro-batches", options.max_micro_batches, 0, 64}};
  for (int i = 0; i < 4; ++i) {
    auto v = flags->Int(specs[i].name, specs[i].fallback);
    if (!v.ok()) return Fail(v.status());
    if (*v < specs[i].min || *v > specs[i].max) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--", specs[i].name, " must be in ", specs[i].min, "..", specs[i].max, ", got ", *v)));
    }
    limits[i] = *v;
  }
  options.max_batch_tokens = limits[0];
  options.max_batch_sequences = static_cast<int>(limits[1]);
  options.max_waiting_requests = static_cast<int>(limits[2]);
  options.max_micro_batches = static_cast<int>(limits[3]);
  options.max_concurrent_requests = static_cast<int>(*concurrent);
  options.max_queued_requests = static_cast<int>(*queued);
  options.max_request_time = *request_timeout;
  options.step_timeout = *step_timeout;
  if (flags->Has("metrics-auth-tokens") && !flags->Has("metrics-listen")) {
    return Fail(absl::InvalidArgumentError("--metrics-auth-tokens needs --metrics-listen"));
  }
  {
    auto budget = flags->Bytes("replay-budget", options.failover.replay_budget_bytes);
    auto wait = flags->Duration("failover-wait", options.failover.failover_wait);
    auto attempts = flags->Int("failover-attempts", options.failover.failover_attempts);
    auto deadline_min = flags->Duration("step-deadline-min", options.failover.step_deadline_min);
    auto factor = flags->Double("step-deadline-factor", options.failover.step_deadline_factor);
    for (const absl::Status& s : {budget.status(), wait.status(), attempts.status(),
                                  deadline_min.status(), factor.status()}) {
      if (!s.ok()) return Fail(s);
    }
    if (*attempts < 0 || *attempts > 100) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--failover-attempts must be in 0..100, got ", *attempts)));
    }
    if (*factor < 0 || *factor > 1000) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--step-deadline-factor must be in 0..1000, got ", *factor)));
    }
    if (*wait < absl::ZeroDuration() || *deadline_min < absl::ZeroDuration() || *budget < 0) {
      return Fail(absl::InvalidArgumentError(
          "--failover-wait, --step-deadline-min and --replay-budget must not be negative"));
    }
    options.failover.replay_budget_bytes = *budget;
    options.failover.failover_wait = *wait;
    options.failover.failover_attempts = static_cast<int>(*attempts);
    options.failover.step_deadline_min = *deadline_min;
    options.failover.step_deadline_factor = *factor;
  }
  if (flags->Has("metrics-listen")) {
    if (auto s = swarm::ValidateHostPort(flags->String("metrics-listen"), "--metrics-listen");
        !s.ok()) {
      return Fail(s);
    }
  }
  if (flags->Has("http-listen")) {
    if (auto s = swarm::ValidateHostPort(flags->String("http-listen"), "--http-listen"); !s.ok()) {
      return Fail(s);
    }
  }
  auto http_max_body = flags->Bytes("http-max-body-bytes", 1 << 20);
  if (!http_max_body.ok()) return Fail(http_max_body.status());
  if (*http_max_body < 1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--http-max-body-bytes must be at least 1, got ", *http_max_body)));
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
  model_options.render_date = options.render_date;
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
    mo.auth_tokens_file = flags->String("metrics-auth-tokens");
    auto started = swarm::coordinator::CoordinatorMetricsObserver::Start(mo);
    if (!started.ok()) return Fail(started.status());
    metrics = *std::move(started);
    options.observer = metrics.get();
  }

  auto server = swarm::coordinator::CoordinatorServer::Start(options, *std::move(loaded));
  if (!server.ok()) return Fail(server.status());
  std::unique_ptr<swarm::coordinator::HttpApi> http;
  if (flags->Has("http-listen")) {
    swarm::coordinator::HttpApiOptions ho;
    ho.listen = flags->String("http-listen");
    ho.model_name = flags->String("served-model-name");
    ho.max_body_bytes = *http_max_body;
    auto started = swarm::coordinator::HttpApi::Start(server->get(), ho);
    if (!started.ok()) return Fail(started.status());
    http = *std::move(started);
  }
  std::printf("listening on %s\n", (*server)->address().c_str());
  if (metrics) std::printf("metrics on http://%s/metrics\n", metrics->address().c_str());
  if (http) std::printf("http api on http://%s/v1\n", http->address().c_str());
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
  if (http) http->Stop();  // First: its requests run on the server's pool.
  (*server)->Shutdown();
  return 0;
}
