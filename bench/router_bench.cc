// Router benchmark: what a routing decision costs and what sparse execution saves.
//
//   router_bench [--model DIR] [--router FILE] [--calib-prompts 256] [--decisions 2000]
//                [--synth-layers 8] [--decode-tokens 48] [--reps 3]
//
// 1. Decision time on --model (default ../shared/models/stories260K) with --router, or with a
//    router calibrated in-process on --calib-prompts sampled prompts (gate fitted): Predict per
//    scoring (feature + neighbours/gate + choice), Route (with tolls), BalanceBatch of 8 and 64
//    concurrent requests.
// 2. Time saved: prefill and decode tokens/s of exact mode vs sparse top-k (sequential and
//    parallel combine) on a synthetic Llama of --synth-layers layers (hidden 512, f32, written to
//    a temporary directory and removed), N = layers blocks, plus `swarm memory`'s estimate.
// Every number is measured in this run on this machine (means/percentiles over repetitions),
// after untimed warm-up calls: 200 of each decision call (or --decisions, if fewer), 3
// BalanceBatch calls, and one round of every execution mode.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/block_layout.h"
#include "common/lock_checks.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "router/calibration/calibrate.h"
#include "router/calibration/probe.h"
#include "router/memory.h"
#include "router/router.h"
#include "router/sparse.h"
#include "tools/synth.h"

namespace {

using Clock = std::chrono::steady_clock;

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

struct Stats {
  double mean = 0, p50 = 0, p99 = 0;
};

Stats Summarise(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  s.p50 = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, static_cast<size_t>(0.99 * v.size()))];
  return s;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "router_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  using namespace swarm;
  std::string model_dir = "../shared/models/stories260K", router_path;
  int64_t calib_prompts = 256, decisions = 2000, synth_layers = 8, decode_tokens = 48, reps = 3;
  for (int i = 1; i + 1 < argc + 1; i += 2) {
    std::string flag = argv[i];
    std::string value = i + 1 < argc ? argv[i + 1] : "";
    bool ok = true;
    if (flag == "--model") {
      model_dir = value;
    } else if (flag == "--router") {
      router_path = value;
    } else if (flag == "--calib-prompts") {
      ok = absl::SimpleAtoi(value, &calib_prompts);
    } else if (flag == "--decisions") {
      ok = absl::SimpleAtoi(value, &decisions);
    } else if (flag == "--synth-layers") {
      ok = absl::SimpleAtoi(value, &synth_layers);
    } else if (flag == "--decode-tokens") {
      ok = absl::SimpleAtoi(value, &decode_tokens);
    } else if (flag == "--reps") {
      ok = absl::SimpleAtoi(value, &reps);
    } else {
      ok = false;
    }
    if (!ok || value.empty()) {
      std::fprintf(stderr, "router_bench: bad flag %s %s\n", flag.c_str(), value.c_str());
      return 2;
    }
  }

  // 1. Decision time.
  auto engine = model::Engine::Create(model_dir);
  if (!engine.ok()) return Fail(engine.status());
  const int num_layers = static_cast<int>((*engine)->config().num_layers);
  std::unique_ptr<router::Router> r;
  router::SampleOptions so;
  so.count = static_cast<int>(calib_prompts);
  so.seed = 1;
  so.stream = 1;
  so.min_prompt_tokens = 8;
  so.max_prompt_tokens = 32;
  if (router_path.empty()) {
    auto samples = router::SampleFromModel(**engine, so);
    if (!samples.ok()) return Fail(samples.status());
    router::CalibrationOptions co;
    co.num_blocks = num_layers;
    co.fit_gate = true;
    auto t0 = Clock::now();
    auto data = router::Calibrate(**engine, *samples, co);
    if (!data.ok()) return Fail(data.status());
    std::printf("calibrated in-process: %lld prompts, N=%d, %.1f s (sampling excluded)\n",
                static_cast<long long>(calib_prompts), num_layers, Us(t0, Clock::now()) / 1e6);
    auto created = router::Router::Create(*data, (*engine)->checkpoint());
    if (!created.ok()) return Fail(created.status());
    r = std::move(*created);
  } else {
    auto loaded = router::Router::Load(router_path, (*engine)->checkpoint());
    if (!loaded.ok()) return Fail(loaded.status());
    r = std::move(*loaded);
  }
  const int n = r->num_blocks();
  const int k = std::max(PopCount(r->keep_mask()) + 1, n - 2);
  so.stream = 2;
  so.count = 64;
  auto test = router::SampleFromModel(**engine, so);
  if (!test.ok()) return Fail(test.status());
  std::printf("\n## Router decision time (%s, N=%d, k=%d, %d calibration prompts, K=%d)\n\n",
              model_dir.c_str(), n, k, r->data().num_prompts, r->neighbours());
  std::printf("| call | mean µs | p50 µs | p99 µs |\n|---|---:|---:|---:|\n");
  // Before each timed loop, the same calls untimed (caches, branch predictors, lazy pages).
  const int64_t warmup = std::min<int64_t>(decisions, 200);
  {
    for (int64_t i = 0; i < warmup; ++i) (void)r->Features((*test)[i % test->size()].prompt);
    std::vector<double> us;
    for (int64_t i = 0; i < decisions; ++i) {
      const auto& prompt = (*test)[i % test->size()].prompt;
      auto t0 = Clock::now();
      auto f = r->Features(prompt);
      auto t1 = Clock::now();
      if (!f.ok()) return Fail(f.status());
      us.push_back(Us(t0, t1));
    }
    Stats s = Summarise(us);
    std::printf("| features only | %.1f | %.1f | %.1f |\n", s.mean, s.p50, s.p99);
  }
  for (router::Scoring scoring : {router::Scoring::kStatic, router::Scoring::kNeighbours,
                                  router::Scoring::kGate, router::Scoring::kBoth}) {
    if (!r->has_gate() &&
        (scoring == router::Scoring::kGate || scoring == router::Scoring::kBoth)) {
      continue;
    }
    router::PredictOptions po;
    po.scoring = scoring;
    for (int64_t i = 0; i < warmup; ++i) (void)r->Predict((*test)[i % test->size()].prompt, k, po);
    std::vector<double> us;
    for (int64_t i = 0; i < decisions; ++i) {
      const auto& prompt = (*test)[i % test->size()].prompt;
      auto t0 = Clock::now();
      auto p = r->Predict(prompt, k, po);
      auto t1 = Clock::now();
      if (!p.ok()) return Fail(p.status());
      us.push_back(Us(t0, t1));
    }
    Stats s = Summarise(us);
    std::printf("| Predict (%s) | %.1f | %.1f | %.1f |\n", router::ScoringName(scoring), s.mean,
                s.p50, s.p99);
  }
  {
    for (int64_t i = 0; i < warmup; ++i) (void)r->Route((*test)[i % test->size()].prompt, k);
    r->ResetTolls();  // The timed calls start from fresh tolls, as before.
    std::vector<double> us;
    for (int64_t i = 0; i < decisions; ++i) {
      const auto& prompt = (*test)[i % test->size()].prompt;
      auto t0 = Clock::now();
      auto p = r->Route(prompt, k);
      auto t1 = Clock::now();
      if (!p.ok()) return Fail(p.status());
      us.push_back(Us(t0, t1));
    }
    Stats s = Summarise(us);
    router::Router::UsageStats u = r->Usage();
    std::printf("| Route (tolls, default scoring) | %.1f | %.1f | %.1f |\n", s.mean, s.p50, s.p99);
    std::printf("\n(after %lld routed requests: Jain %.3f, max/mean %.2f)\n\n",
                static_cast<long long>(u.requests), u.jain, u.max_over_mean);
  }
  for (int batch : {8, 64}) {
    std::vector<std::vector<int64_t>> prompts;
    for (int i = 0; i < batch; ++i) prompts.push_back((*test)[i % test->size()].prompt);
    std::vector<double> us;
    router::BatchResult last;
    for (int rep = 0; rep < 3; ++rep) (void)r->BalanceBatch(prompts, k, router::BatchOptions{});
    for (int rep = 0; rep < 20; ++rep) {
      router::BatchOptions bo;
      bo.seed = rep;
      auto t0 = Clock::now();
      auto res = r->BalanceBatch(prompts, k, bo);
      auto t1 = Clock::now();
      if (!res.ok()) return Fail(res.status());
      us.push_back(Us(t0, t1));
      last = *res;
    }
    Stats s = Summarise(us);
    std::printf(
        "BalanceBatch of %d: %.0f µs mean (%.1f µs per request), %d rounds, gap %.2g, "
        "Jain %.3f → %.3f\n",
        batch, s.mean, s.mean / batch, last.game.rounds, last.game.equilibrium_gap, last.jain_alone,
        last.game.jain);
  }

  // 2. Time saved by running fewer blocks.
  if (synth_layers < 2) return 0;
  tools::SynthOptions o;
  o.layers = synth_layers;
  o.hidden = 512;
  o.intermediate = 1408;
  o.heads = 8;
  o.kv_heads = 4;
  o.vocab = 4096;
  o.max_position = 512;
  o.out_dir = absl::StrCat("/tmp/swarm-router-bench-", getpid());
  auto synth = tools::WriteSynthModel(o);
  if (!synth.ok()) return Fail(synth.status());
  auto cleanup = [&] { std::system(("rm -rf '" + o.out_dir + "'").c_str()); };
  auto big = model::Engine::Create(o.out_dir);
  if (!big.ok()) {
    cleanup();
    return Fail(big.status());
  }
  const int N = static_cast<int>(synth_layers);
  auto layout = BlockLayout::Create(N, N);
  std::vector<int64_t> prompt;
  for (int i = 0; i < 64; ++i) prompt.push_back(3 + (i * 37) % 4000);
  model::SamplingParams params;
  params.max_new_tokens = decode_tokens;
  params.stop_at_eos = false;
  std::printf(
      "\n## Sparse execution time (synthetic Llama: %d layers, hidden 512, %.0f MB f32; "
      "prompt 64 tokens, %lld decoded; N = %d blocks, first and last kept)\n\n",
      N, synth->weight_bytes / 1e6, static_cast<long long>(decode_tokens), N);
  std::printf(
      "| mode | blocks | prefill ms | decode tokens/s | speed-up (decode) |\n"
      "|---|---|---:|---:|---:|\n");
  struct Mode {
    std::string name;
    std::vector<int> blocks;
    router::Combine combine;
    std::vector<double> prefill_ms, tps;
  };
  std::vector<Mode> modes;
  std::vector<int> all(N);
  std::iota(all.begin(), all.end(), 0);
  modes.push_back({"exact (all blocks)", all, router::Combine::kSequential, {}, {}});
  for (int kk : {N * 3 / 4, N / 2}) {
    if (kk < 2) break;
    std::vector<int> blocks = {0};
    for (int b = 1; static_cast<int>(blocks.size()) < kk - 1; ++b) blocks.push_back(b);
    blocks.push_back(N - 1);
    modes.push_back(
        {absl::StrCat("sparse sequential k=", kk), blocks, router::Combine::kSequential, {}, {}});
    modes.push_back(
        {absl::StrCat("sparse parallel k=", kk), blocks, router::Combine::kParallel, {}, {}});
  }
  // Modes interleaved within each repetition, so that load from other processes on a shared
  // machine spreads over all of them; medians reported.
  auto measure = [&](Mode& m, bool record) -> absl::Status {
    router::SparsePlan plan;
    plan.blocks = m.blocks;
    plan.combine = m.combine;
    auto exec = router::SparseExecutor::Create(&(*big)->layers(), *layout, plan);
    if (!exec.ok()) return exec.status();
    auto h = (*big)->ends().Embed(prompt, 0);
    if (!h.ok()) return h.status();
    auto t0 = Clock::now();
    auto out = (*exec)->Run(*h, 0);
    auto t1 = Clock::now();
    if (!out.ok()) return out.status();
    if (record) m.prefill_ms.push_back(Us(t0, t1) / 1000);
    auto exec2 = router::SparseExecutor::Create(&(*big)->layers(), *layout, plan);
    if (!exec2.ok()) return exec2.status();
    auto t2 = Clock::now();
    auto g = model::RunGenerationLoop((*big)->ends(), **exec2, nullptr, prompt, params);
    auto t3 = Clock::now();
    if (!g.ok()) return g.status();
    // Includes the prompt's prefill; decode dominates at these lengths.
    if (record) m.tps.push_back(decode_tokens / (Us(t2, t3) / 1e6));
    return absl::OkStatus();
  };
  absl::Status s;
  for (int64_t rep = 0; rep <= reps && s.ok(); ++rep) {  // Round 0 warms up, untimed.
    for (Mode& m : modes) {
      s = measure(m, rep > 0);
      if (!s.ok()) break;
    }
  }
  if (s.ok()) {
    double exact_tps = Summarise(modes[0].tps).p50;
    for (const Mode& m : modes) {
      Stats p = Summarise(m.prefill_ms);
      Stats t = Summarise(m.tps);
      std::printf("| %s | %s | %.1f | %.1f | %.2f× |\n", m.name.c_str(),
                  FormatBlocks(m.blocks).c_str(), p.p50, t.p50, t.p50 / exact_tps);
    }
  }
  if (s.ok()) {
    auto ckpt = model::Checkpoint::Open(o.out_dir);
    if (ckpt.ok()) {
      router::MemoryOptions mo;
      mo.num_blocks = N;
      mo.top_k = N / 2;
      auto m = router::EstimateMemory(**ckpt, mo);
      if (m.ok()) {
        std::printf(
            "\nmemory (k=%d of %d): total %.1f MB, active %.1f MB, savings %.1f %% "
            "(%.1f %% of block weights)\n",
            N / 2, N, m->total_bytes / 1e6, m->active_bytes / 1e6, 100 * m->savings_ratio,
            100 * m->block_savings_ratio);
      }
    }
  }
  cleanup();
  if (!s.ok()) return Fail(s);
  return 0;
}
