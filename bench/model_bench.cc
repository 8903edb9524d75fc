// Single-process engine benchmark: prefill and decode tokens/s at batch 1, bytes of weights read
// per decoded token, the machine's streaming read bandwidth measured in the same run, and the
// achieved fraction of that roofline. With --rss it also reports the peak RSS of fresh processes
// that load half of the layers vs all of them (each run in a child process of this binary). With
// --batch-steps B1,B2,... it times the batched decode step (LayerHost::ForwardBatch of B decode
// rows, one per session, each session's cache holding the prompt, then the LM head over the B
// rows) and reports each step time against batch 1's, measured in the same run. With --dtypes
// f32,q8,q4 it loads the model once per weight format (common/weight_format.h) and times batch-1
// decode of each, the formats taking turns within each of 7 rounds, and reports each one's median
// tokens/s and its ratio to the first format's (with --rss: the peak RSS of a process loading all
// layers in each format, against the first). --layout panels|rows forces the layout of the CPU
// weight copies (LoadOptions::layout; default auto: panels with AVX-512).
//
//   model_bench --model DIR [--prompt-tokens 128] [--decode-tokens 64] [--threads N] [--rss]
//               [--batch-steps 1,8,16] [--dtypes f32,q8,q4] [--layout auto|panels|rows]
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "bench/read_bandwidth.h"
#include "common/lock_checks.h"
#include "common/weight_format.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/layer_host.h"

namespace {

using Clock = std::chrono::steady_clock;
using swarm::HostTensor;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

long PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

swarm::model::CpuWeightLayout g_layout = swarm::model::CpuWeightLayout::kAuto;

swarm::model::LoadOptions Options(const swarm::WeightFormat& f) {
  swarm::model::LoadOptions o;
  o.layout = g_layout;
  o.dtype = f.dtype;
  o.quant = f.quant;
  return o;
}

// Child mode: load `n` layers in `format` (as a worker does: no ends), run one forward over 8
// tokens, print peak RSS.
int RssChild(const std::string& dir, int n, const swarm::WeightFormat& format) {
  auto ckpt = swarm::model::Checkpoint::Open(dir);
  if (!ckpt.ok()) return 1;
  std::vector<int> layers(n);
  std::iota(layers.begin(), layers.end(), 0);
  auto host = swarm::model::LayerHost::Create(*ckpt, layers, Options(format));
  if (!host.ok()) return 1;
  auto cache = (*host)->NewCache();
  const int64_t d = (*ckpt)->config().hidden_size;
  HostTensor h = HostTensor::FromFloats({8, d}, std::vector<float>(8 * d, 0.01f));
  if (!(*host)->Forward(h, 0, layers, cache.get()).ok()) return 1;
  std::printf("%ld\n", PeakRssKb());
  return 0;
}

long RunRssChild(const std::string& self, const std::string& dir, int n,
                 const swarm::WeightFormat& format = {}) {
  std::string cmd = absl::StrCat(self, " --model ", dir, " --rss-child ", n, " --dtypes ",
                                 swarm::WeightFormatName(format));
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  long kb = -1;
  if (std::fscanf(p, "%ld", &kb) != 1) kb = -1;
  pclose(p);
  return kb;
}

// The batched decode step at each batch size in `sizes` (sessions prefilled with `prompt`): the
// sizes take turns within each of `reps` rounds (after a warm-up round), so that a change in the
// machine's load hits all of them alike; best of the rounds for the layers alone and for layers +
// head, printed with the ratio to the first size.
int BatchSteps(const swarm::model::Engine& engine, const std::vector<int64_t>& prompt,
               const std::vector<int>& sizes, int reps) {
  const auto& layers = engine.layers();
  const auto& ends = engine.ends();
  const int max_b = *std::max_element(sizes.begin(), sizes.end());
  std::vector<std::unique_ptr<swarm::model::KvCache>> caches;
  auto h = ends.Embed(prompt, 0);
  if (!h.ok()) return 1;
  for (int b = 0; b < max_b; ++b) {
    caches.push_back(layers.NewCache());
    if (!layers.Forward(*h, 0, layers.layers(), caches.back().get()).ok()) return 1;
  }
  // One step of B decode rows (sessions 0..B-1 at their next positions): layers, layers + head.
  auto step = [&](int B, double* t_layers, double* t_step) {
    std::vector<swarm::model::BatchSequence> seqs;
    HostTensor x;
    x.shape = {B, engine.config().hidden_size};
    for (int b = 0; b < B; ++b) {
      const int64_t pos = caches[b]->Length(layers.layers()[0]);
      const int64_t id[1] = {prompt[(pos + b) % prompt.size()]};
      auto e = ends.Embed(id, pos);
      if (!e.ok()) return false;
      x.data += e->data;
      seqs.push_back({pos, 1, caches[b].get()});
    }
    auto t0 = Clock::now();
    auto out = layers.ForwardBatch(x, seqs, layers.layers());
    auto t1 = Clock::now();
    if (!out.ok()) return false;
    auto logits = ends.Logits(out->hidden, false);
    auto t2 = Clock::now();
    if (!logits.ok()) return false;
    for (const auto& st : out->status) {
      if (!st.ok()) return false;
    }
    *t_layers = Seconds(t0, t1);
    *t_step = Seconds(t0, t2);
    return true;
  };
  std::vector<double> best_layers(sizes.size(), 1e30), best_step(sizes.size(), 1e30);
  for (int rep = 0; rep <= reps; ++rep) {  // Round 0 warms up.
    for (size_t i = 0; i < sizes.size(); ++i) {
      double tl = 0, ts = 0;
      if (!step(sizes[i], &tl, &ts)) return 1;
      if (rep == 0) continue;
      best_layers[i] = std::min(best_layers[i], tl);
      best_step[i] = std::min(best_step[i], ts);
    }
  }
  std::printf("batched decode step (ForwardBatch of B decode rows, context %zu; best of %d)\n",
              prompt.size(), reps);
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::printf(
        "  batch %2d        layers %8.2f ms (%.2fx batch %d)  + head %8.2f ms (%.2fx)  "
        "%.1f tokens/s\n",
        sizes[i], best_layers[i] * 1e3, best_layers[i] / best_layers[0], sizes[0],
        best_step[i] * 1e3, best_step[i] / best_step[0], sizes[i] / best_step[i]);
  }
  return 0;
}

// Seconds per token of batch-1 decode: `n` tokens after a prefill of `prompt` (not timed).
double DecodeSeconds(const swarm::model::Engine& engine, const std::vector<int64_t>& prompt,
                     int n) {
  swarm::model::LocalExecutor exec(&engine.layers());
  auto h = engine.ends().Embed(prompt, 0);
  if (!h.ok() || !exec.Run(*h, 0).ok()) return -1;
  const int64_t T = static_cast<int64_t>(prompt.size());
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    const int64_t id[1] = {prompt[i % T]};
    auto e = engine.ends().Embed(id, T + i);
    if (!e.ok()) return -1;
    auto o = exec.Run(*e, T + i);
    if (!o.ok() || !engine.ends().Logits(*o, true).ok()) return -1;
  }
  return Seconds(t0, Clock::now()) / n;
}

// Bytes one decoded token reads: every layer weight, the LM head (quantized with the layers'
// linear weights) and one embedding row.
double BytesPerToken(const swarm::model::Engine& engine, const swarm::WeightFormat& format) {
  const auto& c = engine.config();
  const double head =
      format.quant == swarm::WeightQuant::kNone
          ? static_cast<double>(c.vocab_size * c.hidden_size) * swarm::DTypeSize(format.dtype)
          : static_cast<double>(swarm::QuantizedBytes(format.quant, c.vocab_size, c.hidden_size));
  return static_cast<double>(engine.layers().WeightBytes()) + head + c.hidden_size * 4.0;
}

// Batch-1 decode of each format, the formats taking turns in each of `rounds` rounds after a
// warm-up; medians and ratios to the first.
int CompareFormats(const std::string& dir, const std::vector<swarm::WeightFormat>& formats,
                   const std::vector<int64_t>& prompt, int decode_tokens, int rounds, double bw) {
  std::vector<std::unique_ptr<swarm::model::Engine>> engines;
  for (const swarm::WeightFormat& f : formats) {
    auto e = swarm::model::Engine::Create(dir, Options(f));
    if (!e.ok()) {
      std::fprintf(stderr, "model_bench: %s: %s\n", swarm::WeightFormatName(f),
                   std::string(e.status().message()).c_str());
      return 1;
    }
    engines.push_back(*std::move(e));
  }
  std::vector<std::vector<double>> times(formats.size());
  for (int round = 0; round <= rounds; ++round) {  // Round 0 warms up.
    for (size_t i = 0; i < formats.size(); ++i) {
      const double t = DecodeSeconds(*engines[i], prompt, decode_tokens);
      if (t < 0) return 1;
      if (round > 0) times[i].push_back(t);
    }
  }
  std::printf("decode by weight format (batch 1, %d tokens after %zu, median of %d rounds)\n",
              decode_tokens, prompt.size(), rounds);
  double base = 0;
  for (size_t i = 0; i < formats.size(); ++i) {
    std::vector<double>& t = times[i];
    std::sort(t.begin(), t.end());
    const double median = t[t.size() / 2];
    if (i == 0) base = median;
    const double bytes = BytesPerToken(*engines[i], formats[i]);
    std::printf(
        "  %-4s %8.2f tokens/s (best %.2f)  %.2fx %s  %7.1f MB/token  %.1f %% of %.2f GB/s\n",
        swarm::WeightFormatName(formats[i]), 1.0 / median, 1.0 / t.front(), base / median,
        swarm::WeightFormatName(formats[0]), bytes / 1e6, 100.0 * bytes / median / bw, bw / 1e9);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  std::string dir = "../shared/models/stories260K";
  int prompt_tokens = 128, decode_tokens = 64, threads = 0, rss_child = -1;
  bool rss = false;
  std::vector<int> batch_steps;
  std::vector<swarm::WeightFormat> formats = {swarm::WeightFormat{}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model")
      dir = next();
    else if (a == "--prompt-tokens")
      prompt_tokens = std::atoi(next().c_str());
    else if (a == "--decode-tokens")
      decode_tokens = std::atoi(next().c_str());
    else if (a == "--threads")
      threads = std::atoi(next().c_str());
    else if (a == "--rss")
      rss = true;
    else if (a == "--batch-steps") {
      for (absl::string_view v : absl::StrSplit(next(), ',')) {
        int b = 0;
        if (!absl::SimpleAtoi(v, &b) || b < 1) {
          std::fprintf(stderr, "model_bench: --batch-steps takes sizes >= 1, e.g. 1,8,16\n");
          return 2;
        }
        batch_steps.push_back(b);
      }
    } else if (a == "--dtypes") {
      formats.clear();
      for (absl::string_view v : absl::StrSplit(next(), ',')) {
        auto f = swarm::ParseWeightFormat(v);
        if (!f.ok()) {
          std::fprintf(stderr, "model_bench: --dtypes: %s\n",
                       std::string(f.status().message()).c_str());
          return 2;
        }
        formats.push_back(*f);
      }
    } else if (a == "--layout") {
      const std::string v = next();
      if (v == "panels") {
        g_layout = swarm::model::CpuWeightLayout::kPanels;
      } else if (v == "rows") {
        g_layout = swarm::model::CpuWeightLayout::kRows;
      } else if (v != "auto") {
        std::fprintf(stderr, "model_bench: --layout takes auto, panels or rows\n");
        return 2;
      }
    } else if (a == "--rss-child")
      rss_child = std::atoi(next().c_str());
    else {
      std::fprintf(stderr, "model_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (rss_child >= 0) return RssChild(dir, rss_child, formats[0]);
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());

  auto engine = swarm::model::Engine::Create(dir, Options(formats[0]));
  if (!engine.ok()) {
    std::fprintf(stderr, "model_bench: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  const auto& c = (*engine)->config();
  prompt_tokens = std::min<int>(prompt_tokens, c.max_position_embeddings - decode_tokens - 1);
  std::vector<int64_t> prompt(prompt_tokens);
  for (int i = 0; i < prompt_tokens; ++i) prompt[i] = 1 + (i * 7919) % (c.vocab_size - 1);

  // Warm-up (pages the weights in), then timed prefill and decode.
  swarm::model::SamplingParams p;
  p.max_new_tokens = 4;
  p.stop_at_eos = false;
  (void)(*engine)->Generate(prompt, p);

  const auto& layers = (*engine)->layers();
  double prefill_best = 1e30, decode_best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    swarm::model::LocalExecutor exec(&layers);
    auto h = (*engine)->ends().Embed(prompt, 0);
    auto t0 = Clock::now();
    auto out = exec.Run(*h, 0);
    auto logits = (*engine)->ends().Logits(*out, true);
    auto t1 = Clock::now();
    if (!out.ok() || !logits.ok()) return 1;
    prefill_best = std::min(prefill_best, Seconds(t0, t1));
    auto t2 = Clock::now();
    for (int i = 0; i < decode_tokens; ++i) {
      const int64_t id[1] = {prompt[i % prompt_tokens]};
      auto e = (*engine)->ends().Embed(id, prompt_tokens + i);
      auto o = exec.Run(*e, prompt_tokens + i);
      auto l = (*engine)->ends().Logits(*o, true);
      if (!o.ok() || !l.ok()) return 1;
    }
    decode_best = std::min(decode_best, Seconds(t2, Clock::now()) / decode_tokens);
  }
  // Bytes read per decoded token: every layer weight once, the head once, one embedding row.
  const double bytes_per_token = BytesPerToken(**engine, formats[0]);
  const double bw = swarm::bench::ReadBandwidth(size_t{1} << 30, threads);
  const double achieved = bytes_per_token / decode_best;
  std::printf("model            %s (%s, %ld layers, d=%ld, vocab %ld)\n", dir.c_str(),
              c.architecture.c_str(), static_cast<long>(c.num_layers),
              static_cast<long>(c.hidden_size), static_cast<long>(c.vocab_size));
  std::printf("threads          %d\n", threads);
  std::printf("prefill          %d tokens: %.1f tokens/s\n", prompt_tokens,
              prompt_tokens / prefill_best);
  std::printf("decode           %.2f tokens/s (%.3f ms/token)\n", 1.0 / decode_best,
              decode_best * 1e3);
  std::printf("weights/token    %.1f MB\n", bytes_per_token / 1e6);
  std::printf("read bandwidth   %.2f GB/s (measured, %d threads)\n", bw / 1e9, threads);
  std::printf("achieved         %.2f GB/s = %.1f %% of the bandwidth roofline\n", achieved / 1e9,
              100.0 * achieved / bw);
  if (formats.size() > 1) {
    const int L = static_cast<int>(c.num_layers);
    engine->reset();  // The comparison loads its own engines.
    if (CompareFormats(dir, formats, prompt, decode_tokens, 7, bw) != 0) return 1;
    if (rss) {
      std::string exe(4096, '\0');
      ssize_t n = readlink("/proc/self/exe", exe.data(), exe.size());
      exe.resize(n > 0 ? n : 0);
      const long none_kb = RunRssChild(exe, dir, 0, formats[0]);
      long base_kb = 0;
      for (size_t i = 0; i < formats.size(); ++i) {
        const long kb = RunRssChild(exe, dir, L, formats[i]);
        if (i == 0) base_kb = kb;
        std::printf(
            "peak RSS %-4s    all %d layers %.1f MB (%.3fx %s; above the 0-layer process "
            "%.1f MB: %.3fx)\n",
            swarm::WeightFormatName(formats[i]), L, kb / 1024.0, static_cast<double>(kb) / base_kb,
            swarm::WeightFormatName(formats[0]), (kb - none_kb) / 1024.0,
            static_cast<double>(kb - none_kb) / (base_kb - none_kb));
      }
    }
    return 0;
  }
  if (!batch_steps.empty() && BatchSteps(**engine, prompt, batch_steps, 7) != 0) {
    std::fprintf(stderr, "model_bench: the batched step failed\n");
    return 1;
  }
  if (rss) {
    const std::string self = "/proc/self/exe";
    std::string exe(4096, '\0');
    ssize_t n = readlink(self.c_str(), exe.data(), exe.size());
    exe.resize(n > 0 ? n : 0);
    const int half = static_cast<int>(c.num_layers / 2);
    long half_kb = RunRssChild(exe, dir, half);
    long all_kb = RunRssChild(exe, dir, static_cast<int>(c.num_layers));
    long none_kb = RunRssChild(exe, dir, 0);
    std::printf("peak RSS         0 layers %.1f MB, %d layers %.1f MB, all %ld layers %.1f MB\n",
                none_kb / 1024.0, half, half_kb / 1024.0, static_cast<long>(c.num_layers),
                all_kb / 1024.0);
    std::printf("peak RSS ratio   (half - none) / (all - none) = %.3f\n",
                static_cast<double>(half_kb - none_kb) / (all_kb - none_kb));
  }
  return 0;
}
