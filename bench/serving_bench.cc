// Serving benchmark: many concurrent streams through a local cluster (a coordinator and W worker
// processes on loopback), driven by this process's own client threads through the C++ SDK, so
// client start-up does not pollute the figures. Sweeps the number of concurrent streams and
// reports, for each, the aggregate tokens/s, p50/p99 time to first token and inter-token latency,
// and each figure as a ratio to the 1-stream figure of the same run; then the in-process batched
// engine (Engine::GenerateBatch) at the same stream count as --in-process-streams, for the
// distributed / in-process ratio.
//
//   serving_bench [--model DIR | --synth 110m|d2048] [--streams 1,2,4,8,16,32]
//                 [--decode-tokens 32] [--prompt-tokens 16] [--requests-per-stream 1]
//                 [--workers 2] [--pin] [--in-process-streams 8]
//                 [--coordinator-args "--max-batch-tokens 512 ..."]
//                 [--ab-args "--replay-budget 0" --ab-rounds 20]
//
// --synth writes a synthetic Llama into a temporary directory (tools/synth.h) and removes it
// afterwards: 110m = 12 layers, d = 768, 12 heads, I = 2048, vocab 32000, tied embeddings, f32
// (≈110M parameters); d2048 = 8 layers, d = 2048, GQA 16/4, I = 5632, vocab 32000, f32.
// --pin runs worker i under `taskset -c i` with `--threads 1` (one core and one thread each: a
// two-stage pipeline on two cores) and gives the coordinator `--max-micro-batches W`.
// --coordinator-args are passed to swarm-coordinator as they are (split on spaces), e.g. the
// scheduler's batch limits once it has them.
//
// Every stream runs --requests-per-stream requests one after another, each its own prompt of
// --prompt-tokens random ids, --decode-tokens generated without stopping at EOS, greedy. Aggregate
// tokens/s = all generated tokens / (last token - first request start). Time to first token is
// per request, from the call. Inter-token latency is per token: a streamed message carrying k
// tokens g after the previous one counts k gaps of g/k (the coordinator coalesces tokens decoded
// within 5 ms). The server is warmed up with one request first. Works against any coordinator:
// one that serves each worker one request at a time (the before) or the batching scheduler.
//
// A/B mode (--ab-rounds N > 0): a second coordinator B, with --coordinator-args and then --ab-args,
// over the same workers; for each stream count, N pairs of rounds, one through A and one through
// B (the order alternating between pairs: AB, BA, AB, ...), every round as a sweep point above.
// Prints each pair's A/B ratio of tokens/s and their median and quartiles: a difference between A
// and B of a few per cent stays measurable on a shared machine, whose load drifts over seconds
// and hits both rounds of a pair alike (e.g. the cost of fail-over's replay history: A keeps it,
// B with --replay-budget 0 keeps none). No sweep table then.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "common/lock_checks.h"
#include "model/config.h"
#include "model/generate.h"
#include "tools/synth.h"

namespace {

using Clock = std::chrono::steady_clock;
using swarm::bench::AddFlagUnlessGiven;
using swarm::bench::Child;
using swarm::bench::Percentile;
using swarm::bench::SelfDir;
using swarm::bench::SpawnAndWait;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Flags {
  std::string model_dir;
  std::string synth;
  std::vector<int> streams = {1, 2, 4, 8, 16, 32};
  int64_t decode_tokens = 32;
  int64_t prompt_tokens = 16;
  int64_t requests_per_stream = 1;
  int64_t workers = 2;
  bool pin = false;
  int64_t in_process_streams = 8;
  std::vector<std::string> coordinator_args;
  std::vector<std::string> ab_args;
  int64_t ab_rounds = 0;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--pin") {
      f->pin = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "serving_bench: %s needs a value\n", flag.c_str());
      return false;
    }
    const std::string value = argv[++i];
    bool ok = true;
    if (flag == "--model") {
      f->model_dir = value;
    } else if (flag == "--synth") {
      f->synth = value;
      ok = value == "110m" || value == "d2048";
    } else if (flag == "--streams") {
      f->streams.clear();
      for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        int n = 0;
        ok = ok && absl::SimpleAtoi(part, &n) && n >= 1 && n <= 1024;
        f->streams.push_back(n);
      }
      ok = ok && !f->streams.empty();
    } else if (flag == "--decode-tokens") {
      ok = absl::SimpleAtoi(value, &f->decode_tokens) && f->decode_tokens >= 2;
    } else if (flag == "--prompt-tokens") {
      ok = absl::SimpleAtoi(value, &f->prompt_tokens) && f->prompt_tokens >= 1;
    } else if (flag == "--requests-per-stream") {
      ok = absl::SimpleAtoi(value, &f->requests_per_stream) && f->requests_per_stream >= 1;
    } else if (flag == "--workers") {
      ok = absl::SimpleAtoi(value, &f->workers) && f->workers >= 1 && f->workers <= 64;
    } else if (flag == "--in-process-streams") {
      ok = absl::SimpleAtoi(value, &f->in_process_streams) && f->in_process_streams >= 0;
    } else if (flag == "--coordinator-args") {
      f->coordinator_args = absl::StrSplit(value, ' ', absl::SkipEmpty());
    } else if (flag == "--ab-args") {
      f->ab_args = absl::StrSplit(value, ' ', absl::SkipEmpty());
    } else if (flag == "--ab-rounds") {
      ok = absl::SimpleAtoi(value, &f->ab_rounds) && f->ab_rounds >= 0 && f->ab_rounds <= 10000;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "serving_bench: bad flag %s %s\n", flag.c_str(), value.c_str());
      return false;
    }
  }
  return true;
}

// The prompt of request `r` of stream `s`: BOS then random ids, different for every request.
std::vector<int64_t> PromptIds(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int64_t> ids = {1};
  std::mt19937 rng(seed);
  while (static_cast<int64_t>(ids.size()) < n) ids.push_back(3 + rng() % (vocab - 3));
  return ids;
}

// What one sweep point measured.
struct Point {
  int streams = 0;
  int64_t tokens = 0;
  int failed = 0;
  std::string first_error;
  double seconds = 0;
  double tokens_per_s = 0;
  double ttft_p50 = 0, ttft_p99 = 0;
  double itl_p50 = 0, itl_p99 = 0;
};

Point RunStreams(const std::string& address, int streams, const Flags& f, int64_t vocab) {
  std::mutex mu;
  std::vector<double> ttft, itl;
  Point p;
  p.streams = streams;
  Clock::time_point last_token = Clock::now();
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&, s] {
      auto client = swarm::Client::Connect(address);
      if (!client.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        p.failed += static_cast<int>(f.requests_per_stream);
        if (p.first_error.empty()) p.first_error = client.status().ToString();
        return;
      }
      for (int64_t r = 0; r < f.requests_per_stream; ++r) {
        swarm::GenerateRequest req;
        req.prompt_ids = PromptIds(f.prompt_tokens, vocab, static_cast<uint32_t>(1000 * s + r + 1));
        req.max_new_tokens = f.decode_tokens;
        req.stop_at_eos = false;
        req.timeout = absl::Minutes(30);
        std::vector<double> my_itl;
        double my_ttft = -1;
        int64_t my_tokens = 0;
        const Clock::time_point t0 = Clock::now();
        Clock::time_point prev = t0;
        auto result = (*client)->Generate(req, [&](const swarm::GenerateChunk& c) {
          if (c.ids.empty()) return true;
          const Clock::time_point now = Clock::now();
          size_t k = c.ids.size();
          if (my_ttft < 0) {
            my_ttft = Seconds(now - t0);
            --k;  // The first token's gap is the time to first token.
          }
          for (size_t i = 0; i < k; ++i) my_itl.push_back(Seconds(now - prev) / k);
          prev = now;
          my_tokens += static_cast<int64_t>(c.ids.size());
          return true;
        });
        std::lock_guard<std::mutex> lock(mu);
        if (!result.ok()) {
          ++p.failed;
          if (p.first_error.empty()) p.first_error = result.status().ToString();
          continue;
        }
        p.tokens += my_tokens;
        if (my_ttft >= 0) ttft.push_back(my_ttft);
        itl.insert(itl.end(), my_itl.begin(), my_itl.end());
        last_token = std::max(last_token, prev);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  p.seconds = Seconds(last_token - start);
  p.tokens_per_s = p.seconds > 0 ? p.tokens / p.seconds : 0;
  p.ttft_p50 = Percentile(ttft, 0.5);
  p.ttft_p99 = Percentile(ttft, 0.99);
  p.itl_p50 = Percentile(itl, 0.5);
  p.itl_p99 = Percentile(itl, 0.99);
  return p;
}

// The in-process batched engine: `streams` requests at once through Engine::GenerateBatch.
absl::StatusOr<double> InProcessTokensPerSecond(const swarm::model::Engine& engine, int streams,
                                                const Flags& f) {
  std::vector<swarm::model::BatchedRequest> requests;
  for (int s = 0; s < streams; ++s) {
    swarm::model::BatchedRequest r;
    r.prompt_ids =
        PromptIds(f.prompt_tokens, engine.config().vocab_size, static_cast<uint32_t>(1000 * s + 1));
    r.params.max_new_tokens = f.decode_tokens;
    r.params.stop_at_eos = false;
    requests.push_back(std::move(r));
  }
  const Clock::time_point t0 = Clock::now();
  auto results = engine.GenerateBatch(std::move(requests));
  const double seconds = Seconds(Clock::now() - t0);
  int64_t tokens = 0;
  for (const auto& r : results) {
    if (!r.ok()) return r.status();
    tokens += static_cast<int64_t>(r->ids.size());
  }
  return tokens / seconds;
}

std::string Ratio(double x, double base) {
  return base > 0 ? absl::StrFormat("%.2fx", x / base) : std::string("-");
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  Flags f;
  if (!ParseFlags(argc, argv, &f)) return 2;
  std::string synth_dir;
  if (!f.synth.empty()) {
    swarm::tools::SynthOptions o;
    if (f.synth == "110m") {
      o.layers = 12;
      o.hidden = 768;
      o.intermediate = 2048;
      o.heads = 12;
      o.kv_heads = 12;
      o.tie_embeddings = true;
    } else {
      o.layers = 8;
      o.hidden = 2048;
      o.intermediate = 5632;
      o.heads = 16;
      o.kv_heads = 4;
    }
    o.vocab = 32000;
    o.max_position = 1024;
    o.seed = 1;
    synth_dir = absl::StrCat("/tmp/swarm-serving-bench-", getpid());
    o.out_dir = synth_dir;
    auto r = swarm::tools::WriteSynthModel(o);
    if (!r.ok()) {
      std::fprintf(stderr, "serving_bench: %s\n", r.status().ToString().c_str());
      return 1;
    }
    f.model_dir = synth_dir;
  }
  if (f.model_dir.empty()) f.model_dir = "../shared/models/stories260K";
  auto cleanup = [&] {
    if (!synth_dir.empty()) std::system(("rm -rf '" + synth_dir + "'").c_str());
  };
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "serving_bench: %s\n", why.c_str());
    cleanup();
    return 1;
  };

  auto engine = swarm::model::Engine::Create(f.model_dir);
  if (!engine.ok()) return fail(engine.status().ToString());
  const swarm::model::ModelConfig config = (*engine)->config();
  const int64_t layers = config.num_layers;
  if (f.workers > layers) return fail("more workers than layers");
  if (f.prompt_tokens + f.decode_tokens > config.max_position_embeddings) {
    return fail("--prompt-tokens + --decode-tokens exceed the model's context");
  }

  std::vector<double> in_process;  // [1 stream, N streams]
  if (f.in_process_streams > 0) {
    for (int n : {1, static_cast<int>(f.in_process_streams)}) {
      auto rate = InProcessTokensPerSecond(**engine, n, f);
      if (!rate.ok()) return fail(rate.status().ToString());
      in_process.push_back(*rate);
      std::fprintf(stderr, "serving_bench: in-process, %d streams: %.1f tokens/s\n", n, *rate);
    }
  }
  engine->reset();  // Its memory and threads stay out of the cluster's way.

  // The cluster: worker i hosts an even share of the layers; then the coordinator over them.
  std::vector<Child> workers(f.workers);
  std::vector<std::string> addresses;
  for (int64_t w = 0; w < f.workers; ++w) {
    const int64_t begin = w * layers / f.workers, end = (w + 1) * layers / f.workers - 1;
    std::vector<std::string> worker_argv;
    if (f.pin)
      worker_argv = {"taskset", "-c", absl::StrCat(w % std::thread::hardware_concurrency())};
    for (const std::string& a :
         {SelfDir() + "/swarm-worker", std::string("--model"), f.model_dir, std::string("--layers"),
          absl::StrCat(begin, "-", end), std::string("--listen"), std::string("127.0.0.1:0")}) {
      worker_argv.push_back(a);
    }
    if (f.pin) {
      worker_argv.push_back("--threads");
      worker_argv.push_back("1");
    }
    std::string address = SpawnAndWait(&workers[w], worker_argv, "listening on ");
    if (address.empty()) return fail(absl::StrCat("worker ", w, " did not start"));
    addresses.push_back(address);
  }
  // A coordinator over the workers with `extra` after --coordinator-args, serving and warmed up
  // (one request: first-call costs in every process); its address, "" when it failed (`why`).
  auto start_coordinator = [&](Child* child, const std::vector<std::string>& extra,
                               std::string* why) -> std::string {
    std::vector<std::string> argv = {
        SelfDir() + "/swarm-coordinator", "--model",  f.model_dir,  "--workers",
        absl::StrJoin(addresses, ","),    "--listen", "127.0.0.1:0"};
    // Pinned workers have cores of their own: the pipeline's depth is one micro-batch per worker
    // (the coordinator's default counts machines, and these share one), unless the args say.
    if (f.pin) {
      AddFlagUnlessGiven(&argv, f.coordinator_args, "--max-micro-batches", absl::StrCat(f.workers));
    }
    argv.insert(argv.end(), f.coordinator_args.begin(), f.coordinator_args.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    const std::string address = SpawnAndWait(child, argv, "listening on ");
    if (address.empty()) {
      *why = "the coordinator did not start";
      return "";
    }
    auto client = swarm::Client::Connect(address);
    if (!client.ok()) {
      *why = client.status().ToString();
      return "";
    }
    absl::Status serving = (*client)->WaitUntilServing(absl::Minutes(5));
    if (!serving.ok()) {
      *why = serving.ToString();
      return "";
    }
    std::fprintf(stderr, "serving_bench: cluster serving at %s\n", address.c_str());
    Point warm = RunStreams(address, 1, f, config.vocab_size);
    if (warm.failed > 0) {
      *why = "warm-up: " + warm.first_error;
      return "";
    }
    return address;
  };
  Child coordinator;
  std::string why;
  const std::string address = start_coordinator(&coordinator, {}, &why);
  if (address.empty()) return fail(why);

  if (f.ab_rounds > 0) {
    Child coordinator_b;
    const std::string address_b = start_coordinator(&coordinator_b, f.ab_args, &why);
    if (address_b.empty()) return fail(why);
    std::printf(
        "model: %s (%lld layers, hidden %lld); coordinator + %lld workers; A: %s; B: A + %s\n",
        synth_dir.empty() ? f.model_dir.c_str() : ("synthetic " + f.synth).c_str(),
        static_cast<long long>(layers), static_cast<long long>(config.hidden_size),
        static_cast<long long>(f.workers),
        f.coordinator_args.empty() ? "(no args)" : absl::StrJoin(f.coordinator_args, " ").c_str(),
        absl::StrJoin(f.ab_args, " ").c_str());
    for (int n : f.streams) {
      std::vector<double> ratios;
      double sum_a = 0, sum_b = 0;
      int failed = 0;
      for (int64_t k = 0; k < f.ab_rounds; ++k) {
        Point a, b;
        if (k % 2 == 0) {
          a = RunStreams(address, n, f, config.vocab_size);
          b = RunStreams(address_b, n, f, config.vocab_size);
        } else {
          b = RunStreams(address_b, n, f, config.vocab_size);
          a = RunStreams(address, n, f, config.vocab_size);
        }
        failed += a.failed + b.failed;
        sum_a += a.tokens_per_s;
        sum_b += b.tokens_per_s;
        if (b.tokens_per_s > 0) ratios.push_back(a.tokens_per_s / b.tokens_per_s);
        std::fprintf(stderr, "serving_bench: A/B %d streams pair %lld: %.1f / %.1f tokens/s\n", n,
                     static_cast<long long>(k), a.tokens_per_s, b.tokens_per_s);
      }
      std::printf(
          "%d streams x %lld tokens, %lld pairs: A %.1f, B %.1f tokens/s (means); A/B per pair: "
          "median %.4f, quartiles %.4f .. %.4f, min %.4f, max %.4f; %d failed\n",
          n, static_cast<long long>(f.decode_tokens), static_cast<long long>(f.ab_rounds),
          sum_a / f.ab_rounds, sum_b / f.ab_rounds, Percentile(ratios, 0.5),
          Percentile(ratios, 0.25), Percentile(ratios, 0.75), Percentile(ratios, 0.0),
          Percentile(ratios, 1.0), failed);
    }
    cleanup();
    return 0;
  }

  std::vector<Point> points;
  for (int n : f.streams) {
    points.push_back(RunStreams(address, n, f, config.vocab_size));
    const Point& p = points.back();
    std::fprintf(stderr, "serving_bench: %d streams: %.1f tokens/s\n", n, p.tokens_per_s);
    if (p.failed > 0) {
      std::fprintf(stderr, "serving_bench: %d streams: %d requests failed, first: %s\n", n,
                   p.failed, p.first_error.c_str());
    }
  }
  cleanup();

  std::printf("model: %s (%s, %lld layers, hidden %lld, vocab %lld)\n",
              synth_dir.empty() ? f.model_dir.c_str() : ("synthetic " + f.synth).c_str(),
              config.architecture.c_str(), static_cast<long long>(layers),
              static_cast<long long>(config.hidden_size),
              static_cast<long long>(config.vocab_size));
  std::printf(
      "cluster: coordinator + %lld workers (processes, loopback)%s; coordinator args: %s\n",
      static_cast<long long>(f.workers),
      f.pin ? ", worker i pinned to core i (taskset) with --threads 1" : "",
      f.coordinator_args.empty() ? "(none)" : absl::StrJoin(f.coordinator_args, " ").c_str());
  std::printf(
      "each stream: %lld request(s) of %lld prompt tokens, %lld generated (greedy, no EOS stop); "
      "OPENBLAS_THREAD_TIMEOUT=%s\n",
      static_cast<long long>(f.requests_per_stream), static_cast<long long>(f.prompt_tokens),
      static_cast<long long>(f.decode_tokens),
      std::getenv("OPENBLAS_THREAD_TIMEOUT") ? std::getenv("OPENBLAS_THREAD_TIMEOUT")
                                             : "4 (children)");
  std::printf("%7s %10s %8s %10s %10s %8s %10s %10s %8s %7s\n", "streams", "tokens/s", "x1",
              "TTFT p50", "TTFT p99", "x1 p50", "ITL p50", "ITL p99", "x1 p50", "failed");
  const Point& one = points.front();
  for (const Point& p : points) {
    std::printf("%7d %10.1f %8s %9.1fms %9.1fms %8s %9.1fms %9.1fms %8s %7d\n", p.streams,
                p.tokens_per_s, Ratio(p.tokens_per_s, one.tokens_per_s).c_str(), 1e3 * p.ttft_p50,
                1e3 * p.ttft_p99, Ratio(p.ttft_p50, one.ttft_p50).c_str(), 1e3 * p.itl_p50,
                1e3 * p.itl_p99, Ratio(p.itl_p50, one.itl_p50).c_str(), p.failed);
  }
  if (one.streams != 1) std::printf("(ratios are to the first point, %d streams)\n", one.streams);
  if (!in_process.empty()) {
    std::printf(
        "in-process batched engine (Engine::GenerateBatch): 1 stream %.1f tokens/s, %lld "
        "streams %.1f tokens/s (%s)\n",
        in_process[0], static_cast<long long>(f.in_process_streams), in_process[1],
        Ratio(in_process[1], in_process[0]).c_str());
    for (const Point& p : points) {
      if (p.streams == f.in_process_streams) {
        std::printf("distributed / in-process at %d streams: %.3f\n", p.streams,
                    p.tokens_per_s / in_process[1]);
      }
    }
  }
  return 0;
}
