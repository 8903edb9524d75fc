// Load balancing on a real cluster (`swarm-coordinator --balance`,
// coordinator/admission_balance.h): W worker processes hosting R layer ranges × P replicas and a
// coordinator over them, on loopback, driven by this process's client threads with eval's skewed
// stream of sparse requests (the router file's calibration prompts, those whose toll-free choice is
// the most common one --skew times likelier). For each shape of load and each mode (toll-free: no
// --balance; --balance) a fresh cluster serves --requests requests while a sampler reads the
// coordinator's /metrics every
// --sample-every: the balance curve (Jain's index of the workers' busy seconds in each interval and
// since the start, the busy-Jain gauge, the equilibrium and toll-free gaps, the windows routed).
// Then one summary row per run: Jain's index of the workers' total busy time
// (swarm_coordinator_worker_busy_seconds_total), max/mean, and the KL cost of the served choices:
// the calibration's *measured* damage of each served block subset on its prompt over that of the
// router's toll-free choice for the same prompt (in-sample: what the stream costs is measured).
//
//   balance_bench --router FILE [--model DIR] [--ranges 0-2,3-4] [--replicas 2]
//                 [--top-k-blocks 3] [--streams 8] [--requests 256] [--decode-tokens 16]
//                 [--layer-time 1ms] [--slow 2] [--shapes equal,slow] [--modes toll-free,balance]
//                 [--skew 4] [--seed 11] [--sample-every 1s] [--coordinator-args "..."]
//                 [--balance-args "--balance-cap 1 ..."]
//
// --layer-time is each worker's --emulate-layer-time (worker/emulated_time.h): a small model's own
// layers cost less than a hop, so busy time would not follow the layers a request runs; 0 = the
// model's own compute only. Shape "slow" multiplies it by --slow on the workers of the first range.
// --coordinator-args go to every coordinator, --balance-args (the --balance knobs) only to those
// with --balance. Requests: greedy, --decode-tokens each without stopping at EOS, --streams at a
// time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "common/block_layout.h"
#include "common/flags.h"
#include "common/layer_set.h"
#include "common/lock_checks.h"
#include "httplib.h"
#include "model/checkpoint.h"
#include "router/balance.h"
#include "router/router.h"
#include "router/router_file.h"

namespace {

using swarm::bench::AddFlagUnlessGiven;
using swarm::bench::Child;
using swarm::bench::SelfDir;
using swarm::bench::SpawnAndWait;
using Clock = std::chrono::steady_clock;

int Fail(const std::string& message) {
  std::fprintf(stderr, "balance_bench: %s\n", message.c_str());
  return 1;
}

// `name{labels}` → value of every sample of a /metrics page.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double v = 0;
    if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &v)) continue;
    out[std::string(line.substr(0, space))] = v;
  }
  return out;
}

// A client of the /metrics server at "HOST:PORT/metrics" (what follows "metrics on http://").
std::unique_ptr<httplib::Client> Http(const std::string& address) {
  const std::string hostport = address.substr(0, address.find('/'));
  const size_t colon = hostport.rfind(':');
  auto c = std::make_unique<httplib::Client>(hostport.substr(0, colon),
                                             std::stoi(hostport.substr(colon + 1)));
  c->set_read_timeout(5, 0);
  return c;
}

double Get(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0 : it->second;
}

// One sample of the coordinator's balance metrics.
struct Sample {
  double t = 0;                     // Seconds since the stream started.
  std::vector<double> busy;         // swarm_coordinator_worker_busy_seconds_total per worker.
  std::vector<double> device_busy;  // Each worker's own swarm_worker_busy_seconds_total.
  double busy_jain_gauge = 0;       // swarm_coordinator_worker_busy_jain_ratio.
  double gap = 0, gap_toll_free = 0;
  double windows_one = 0, windows_many = 0;
  int done = 0;  // Requests finished.
};

struct RunResult {
  std::string shape, mode;
  std::vector<Sample> curve;
  std::vector<double> busy;  // Total busy seconds per worker over the stream.
  std::vector<double> device_busy;
  double served_kl = 0, free_kl = 0;
  int requests = 0, failed = 0, unmeasured = 0, moved = 0;
  double seconds = 0;
  double max_gap_toll_free = 0, max_gap = 0;
  std::string first_error;
};

struct Setup {
  std::string model_dir;
  std::string router_path;
  std::vector<std::vector<int>> ranges;  // Layers of each range.
  std::vector<std::string> range_flags;  // "A-B" of each.
  int replicas = 2;
  int top_k = 3;
  int streams = 8;
  int requests = 256;
  int decode_tokens = 16;
  absl::Duration layer_time = absl::Milliseconds(1);
  double slow = 2;
  absl::Duration sample_every = absl::Seconds(1);
  std::vector<std::string> coordinator_args;
  std::vector<std::string> balance_args;  // Only with --balance.
  // The stream and what its choices cost.
  const swarm::router::Router* router = nullptr;
  std::vector<std::vector<int64_t>> prompts;  // Calibration prompts.
  std::vector<int> order;                     // The skewed stream: indices into prompts.
  std::vector<swarm::BlockMask> toll_free;    // Per prompt.
};

// Measured damage of calibration prompt p running `mask`; < 0 when not measured.
double Damage(const swarm::router::RouterData& d, int p, swarm::BlockMask mask) {
  for (int s = 0; s < d.num_subsets(); ++s) {
    if (d.subsets[s] == mask) return d.subset_damage[static_cast<int64_t>(p) * d.num_subsets() + s];
  }
  return -1;
}

std::vector<double> Deltas(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> out(b.size());
  for (size_t i = 0; i < b.size(); ++i) out[i] = b[i] - (i < a.size() ? a[i] : 0);
  return out;
}

absl::StatusOr<RunResult> RunOne(const Setup& s, const std::string& shape, bool balance) {
  RunResult result;
  result.shape = shape;
  result.mode = balance ? "balance" : "toll-free";
  // Workers: range r, replica j.
  std::vector<Child> workers(s.ranges.size() * s.replicas);
  std::vector<std::string> addresses;
  std::vector<std::unique_ptr<httplib::Client>> worker_metrics;
  for (size_t r = 0; r < s.ranges.size(); ++r) {
    absl::Duration t = s.layer_time;
    if (shape == "slow" && r == 0) t = t * s.slow;
    for (int j = 0; j < s.replicas; ++j) {
      std::vector<std::string> argv = {SelfDir() + "/swarm-worker",
                                       "--model",
                                       s.model_dir,
                                       "--layers",
                                       s.range_flags[r],
                                       "--listen",
                                       "127.0.0.1:0",
                                       "--emulate-layer-time",
                                       absl::FormatDuration(t),
                                       "--metrics-listen",
                                       "127.0.0.1:0"};
      Child* child = &workers[r * s.replicas + j];
      const std::string address = SpawnAndWait(child, argv, "listening on ");
      const std::string m = swarm::bench::WaitForLine(child, "metrics on http://");
      if (address.empty() || m.empty()) return absl::InternalError("a worker did not start");
      addresses.push_back(address);
      worker_metrics.push_back(Http(m));
    }
  }
  Child coordinator;
  std::vector<std::string> argv = {SelfDir() + "/swarm-coordinator",
                                   "--model",
                                   s.model_dir,
                                   "--workers",
                                   absl::StrJoin(addresses, ","),
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--metrics-listen",
                                   "127.0.0.1:0",
                                   "--router",
                                   s.router_path};
  // Emulated workers are devices of their own (they hold their time, not the shared cores): one
  // micro-batch each, as on machines of their own (the coordinator's default counts hosts, and
  // these share one), unless the args say.
  if (s.layer_time > absl::ZeroDuration()) {
    AddFlagUnlessGiven(&argv, s.coordinator_args, "--max-micro-batches",
                       absl::StrCat(addresses.size()));
  }
  argv.insert(argv.end(), s.coordinator_args.begin(), s.coordinator_args.end());
  if (balance) {
    argv.push_back("--balance");
    argv.insert(argv.end(), s.balance_args.begin(), s.balance_args.end());
  }
  // The metrics line comes right after the listening one.
  const std::string address = SpawnAndWait(&coordinator, argv, "listening on ");
  if (address.empty()) return absl::InternalError("the coordinator did not start");
  std::string metrics = swarm::bench::WaitForLine(&coordinator, "metrics on http://");
  if (metrics.empty()) return absl::InternalError("the coordinator printed no metrics address");
  std::unique_ptr<httplib::Client> http = Http(metrics);
  auto scrape = [](httplib::Client& c) -> std::map<std::string, double> {
    auto res = c.Get("/metrics");
    if (!res || res->status != 200) return {};
    return ParseMetrics(res->body);
  };

  auto client = swarm::Client::Connect(address);
  if (!client.ok()) return client.status();
  if (absl::Status st = (*client)->WaitUntilServing(absl::Minutes(2)); !st.ok()) return st;

  auto request = [&](int p) {
    swarm::GenerateRequest req;
    req.prompt_ids = s.prompts[p];
    req.max_new_tokens = s.decode_tokens;
    req.stop_at_eos = false;
    req.mode = "sparse";
    req.top_k_blocks = s.top_k;
    return req;
  };
  // Warm-up: first-call costs in every process (not counted: the busy baseline is read after).
  if (auto w = (*client)->Generate(request(s.order[0])); !w.ok()) return w.status();

  auto sample = [&](double t, int done) {
    const std::map<std::string, double> m = scrape(*http);
    Sample x;
    for (auto& w : worker_metrics) {
      x.device_busy.push_back(Get(scrape(*w), "swarm_worker_busy_seconds_total"));
    }
    x.t = t;
    x.done = done;
    for (const std::string& a : addresses) {
      x.busy.push_back(
          Get(m, absl::StrCat("swarm_coordinator_worker_busy_seconds_total{worker=\"", a, "\"}")));
    }
    x.busy_jain_gauge = Get(m, "swarm_coordinator_worker_busy_jain_ratio");
    x.gap = Get(m, "swarm_coordinator_router_equilibrium_gap");
    x.gap_toll_free = Get(m, "swarm_coordinator_router_toll_free_gap");
    x.windows_one = Get(m, "swarm_coordinator_router_balance_windows_total{requests=\"one\"}");
    x.windows_many = Get(m, "swarm_coordinator_router_balance_windows_total{requests=\"many\"}");
    return x;
  };
  const Sample start = sample(0, 0);

  std::atomic<int> next{0}, done{0};
  std::mutex mu;
  std::vector<std::pair<int, swarm::BlockMask>> served;  // (prompt, blocks) of each request.
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < s.streams; ++i) {
    threads.emplace_back([&] {
      for (int r; (r = next.fetch_add(1)) < s.requests;) {
        const int p = s.order[r % s.order.size()];
        auto got = (*client)->Generate(request(p));
        std::lock_guard<std::mutex> lock(mu);
        if (got.ok()) {
          served.emplace_back(p, swarm::BlocksToMask(got->blocks));
        } else {
          if (result.failed++ == 0) result.first_error = got.status().ToString();
        }
        done.fetch_add(1);
      }
    });
  }
  // The sampler: this thread, until every request is done.
  std::vector<Sample> curve;
  {
    auto due = t0;
    while (done.load() < s.requests) {
      due += std::chrono::microseconds(absl::ToInt64Microseconds(s.sample_every));
      while (Clock::now() < due && done.load() < s.requests) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (done.load() >= s.requests) break;
      curve.push_back(
          sample(std::chrono::duration<double>(Clock::now() - t0).count(), done.load()));
    }
  }
  for (std::thread& t : threads) t.join();
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  curve.push_back(sample(result.seconds, done.load()));
  for (Sample& x : curve) {
    x.busy = Deltas(start.busy, x.busy);
    x.device_busy = Deltas(start.device_busy, x.device_busy);
  }
  result.busy = curve.back().busy;
  result.device_busy = curve.back().device_busy;
  result.curve = curve;
  for (const Sample& x : curve) {
    result.max_gap = std::max(result.max_gap, x.gap);
    result.max_gap_toll_free = std::max(result.max_gap_toll_free, x.gap_toll_free);
  }
  const swarm::router::RouterData& d = s.router->data();
  for (auto [p, mask] : served) {
    const double got = Damage(d, p, mask), free = Damage(d, p, s.toll_free[p]);
    if (got < 0 || free < 0) {
      ++result.unmeasured;
      continue;
    }
    ++result.requests;
    result.moved += mask != s.toll_free[p];
    result.served_kl += got;
    result.free_kl += free;
  }
  return result;
}

void PrintCurve(const Setup& s, const RunResult& r) {
  std::printf("\n%s, %s: %d requests in %.1f s\n", r.shape.c_str(), r.mode.c_str(), r.requests,
              r.seconds);
  std::printf(
      "| t s | done | Jain (interval) | Jain (so far) | workers' own Jain (interval) | busy-Jain "
      "gauge | gap | toll-free gap | windows one/many |\n"
      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const size_t n = s.ranges.size() * s.replicas;
  std::vector<double> prev(n, 0.0), prev_device(n, 0.0);
  for (const Sample& x : r.curve) {
    const std::vector<double> interval = Deltas(prev, x.busy);
    const std::vector<double> device = Deltas(prev_device, x.device_busy);
    prev = x.busy;
    prev_device = x.device_busy;
    std::printf("| %.1f | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.0f/%.0f |\n", x.t,
                x.done, swarm::router::JainIndex(interval), swarm::router::JainIndex(x.busy),
                swarm::router::JainIndex(device), x.busy_jain_gauge, x.gap, x.gap_toll_free,
                x.windows_one, x.windows_many);
  }
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  auto flags =
      swarm::Flags::Parse(argc, argv,
                          {"router", "model", "ranges", "replicas", "top-k-blocks", "streams",
                           "requests", "decode-tokens", "layer-time", "slow", "shapes", "modes",
                           "skew", "seed", "sample-every", "coordinator-args", "balance-args"},
                          {});
  if (!flags.ok()) return Fail(std::string(flags.status().message()));
  Setup s;
  auto router_path = flags->Required("router");
  if (!router_path.ok()) return Fail(std::string(router_path.status().message()));
  s.router_path = *router_path;
  s.model_dir = flags->String("model", "../shared/models/stories260K");
  auto replicas = flags->Int("replicas", 2);
  auto top_k = flags->Int("top-k-blocks", 3);
  auto streams = flags->Int("streams", 8);
  auto requests = flags->Int("requests", 256);
  auto decode = flags->Int("decode-tokens", 16);
  auto layer_time = flags->Duration("layer-time", absl::Milliseconds(1));
  auto slow = flags->Double("slow", 2);
  auto skew = flags->Double("skew", 4);
  auto seed = flags->Int("seed", 11);
  auto every = flags->Duration("sample-every", absl::Seconds(1));
  for (const absl::Status& st :
       {replicas.status(), top_k.status(), streams.status(), requests.status(), decode.status(),
        layer_time.status(), slow.status(), skew.status(), seed.status(), every.status()}) {
    if (!st.ok()) return Fail(std::string(st.message()));
  }
  s.replicas = static_cast<int>(*replicas);
  s.top_k = static_cast<int>(*top_k);
  s.streams = static_cast<int>(*streams);
  s.requests = static_cast<int>(*requests);
  s.decode_tokens = static_cast<int>(*decode);
  s.layer_time = *layer_time;
  s.slow = *slow;
  s.sample_every = *every;
  if (s.replicas < 1 || s.streams < 1 || s.requests < 1 || s.decode_tokens < 1 ||
      s.sample_every <= absl::ZeroDuration()) {
    return Fail(
        "--replicas, --streams, --requests, --decode-tokens and --sample-every must be > 0");
  }
  s.coordinator_args =
      absl::StrSplit(flags->String("coordinator-args", ""), ' ', absl::SkipEmpty());
  s.balance_args = absl::StrSplit(flags->String("balance-args", ""), ' ', absl::SkipEmpty());
  const std::vector<std::string> shapes =
      absl::StrSplit(flags->String("shapes", "equal,slow"), ',', absl::SkipEmpty());
  const std::vector<std::string> modes =
      absl::StrSplit(flags->String("modes", "toll-free,balance"), ',', absl::SkipEmpty());
  for (const std::string& x : shapes) {
    if (x != "equal" && x != "slow") return Fail("--shapes: equal or slow, got " + x);
  }
  for (const std::string& x : modes) {
    if (x != "toll-free" && x != "balance") return Fail("--modes: toll-free or balance, got " + x);
  }

  auto checkpoint = swarm::model::Checkpoint::Open(s.model_dir);
  if (!checkpoint.ok()) return Fail(checkpoint.status().ToString());
  const int num_layers = static_cast<int>((*checkpoint)->config().num_layers);
  for (absl::string_view part :
       absl::StrSplit(flags->String("ranges", ""), ',', absl::SkipEmpty())) {
    auto layers = swarm::ParseLayers(part, num_layers);
    if (!layers.ok()) return Fail(layers.status().ToString());
    s.ranges.push_back(*layers);
    s.range_flags.emplace_back(part);
  }
  if (s.ranges.empty()) {
    // Two halves by default.
    const int half = (num_layers + 1) / 2;
    s.ranges = {{}, {}};
    for (int l = 0; l < num_layers; ++l) s.ranges[l < half ? 0 : 1].push_back(l);
    s.range_flags = {absl::StrCat("0-", half - 1), absl::StrCat(half, "-", num_layers - 1)};
  }
  auto router = swarm::router::Router::Load(s.router_path, *checkpoint);
  if (!router.ok()) return Fail(router.status().ToString());
  s.router = router->get();
  const swarm::router::RouterData& d = s.router->data();
  if (d.prompt_offsets.empty()) return Fail("the router file holds no calibration prompts");
  for (int p = 0; p < d.num_prompts; ++p) {
    s.prompts.emplace_back(d.prompt_ids.begin() + d.prompt_offsets[p],
                           d.prompt_ids.begin() + d.prompt_offsets[p + 1]);
  }
  for (const auto& prompt : s.prompts) {
    auto pred = s.router->Predict(prompt, s.top_k);
    if (!pred.ok()) return Fail(pred.status().ToString());
    s.toll_free.push_back(swarm::BlocksToMask(pred->blocks));
  }
  const swarm::BlockMask popular = swarm::router::MostCommon(s.toll_free);
  const int popular_count =
      static_cast<int>(std::count(s.toll_free.begin(), s.toll_free.end(), popular));
  s.order = swarm::router::SkewedStream(s.toll_free, *skew, static_cast<uint64_t>(*seed),
                                        static_cast<size_t>(s.requests));
  std::printf(
      "model %s, %d layers; router %s (N = %d, k = %d); ranges %s x %d replicas; "
      "emulated layer time %s per row%s; %d streams, %d requests of %d tokens; the most "
      "common toll-free choice [%s] (%d of %d prompts) %.0fx likelier; --balance %s\n",
      s.model_dir.c_str(), num_layers, s.router_path.c_str(), d.num_blocks, s.top_k,
      absl::StrJoin(s.range_flags, ",").c_str(), s.replicas,
      absl::FormatDuration(s.layer_time).c_str(),
      absl::StrCat(" (shape slow: x", s.slow, " on range ", s.range_flags[0], ")").c_str(),
      s.streams, s.requests, s.decode_tokens,
      absl::StrJoin(swarm::MaskToBlocks(popular), ", ").c_str(), popular_count, d.num_prompts,
      *skew, s.balance_args.empty() ? "(defaults)" : absl::StrJoin(s.balance_args, " ").c_str());
  std::fflush(stdout);

  std::vector<RunResult> results;
  for (const std::string& shape : shapes) {
    for (const std::string& mode : modes) {
      auto r = RunOne(s, shape, mode == "balance");
      if (!r.ok()) return Fail(absl::StrCat(shape, ", ", mode, ": ", r.status().ToString()));
      if (r->failed > 0) {
        return Fail(absl::StrCat(shape, ", ", mode, ": ", r->failed,
                                 " requests failed, first: ", r->first_error));
      }
      PrintCurve(s, *r);
      std::fflush(stdout);
      results.push_back(*std::move(r));
    }
  }
  std::printf(
      "\n| shape | mode | Jain of busy time | max/mean | busy s per worker | Jain of "
      "workers' own busy time | moved | KL served | KL toll-free | KL cost | toll-free gap "
      "max | gap max |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const RunResult& r : results) {
    std::vector<std::string> busy;
    for (double b : r.busy) busy.push_back(absl::StrFormat("%.1f", b));
    const double n = std::max(1, r.requests);
    std::printf(
        "| %s | %s | %.3f | %.2f | %s | %.3f | %d/%d | %.4f | %.4f | %+.2f %% | %.3f | %.3f |\n",
        r.shape.c_str(), r.mode.c_str(), swarm::router::JainIndex(r.busy),
        swarm::router::MaxOverMean(r.busy), absl::StrJoin(busy, " ").c_str(),
        swarm::router::JainIndex(r.device_busy), r.moved, r.requests, r.served_kl / n,
        r.free_kl / n, 100 * (r.served_kl / std::max(1e-12, r.free_kl) - 1), r.max_gap_toll_free,
        r.max_gap);
    if (r.unmeasured > 0) {
      std::printf("  (%d requests ran a subset without measured damages: not in the KL)\n",
                  r.unmeasured);
    }
  }
  return 0;
}
