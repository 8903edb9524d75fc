#include "router/calibration/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/block_layout.h"
#include "common/status_macros.h"
#include "router/calibration/divergence.h"

namespace swarm::router {
namespace {

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  return std::accumulate(v.begin(), v.end(), 0.0) / v.size();
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = q * (v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(v.size() - 1, lo + 1);
  double f = pos - lo;
  return v[lo] * (1 - f) + v[hi] * f;
}

}  // namespace

namespace {

// For w = 1..n: the sorted, unique hashes of the w-grams of ids[1..] (empty when shorter).
using NgramSets = std::vector<std::vector<uint64_t>>;
NgramSets MakeNgramSets(const std::vector<int64_t>& ids, int n) {
  NgramSets sets(std::max(1, n));
  for (size_t w = 1; w <= sets.size(); ++w) {
    std::vector<uint64_t>& out = sets[w - 1];
    for (size_t i = 1; i + w <= ids.size(); ++i) {
      uint64_t h = 1469598103934665603ull;
      for (size_t j = i; j < i + w; ++j) {
        h = (h ^ static_cast<uint64_t>(ids[j])) * 1099511628211ull;
      }
      out.push_back(h);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
  }
  return sets;
}

// The Jaccard index of the w-gram sets, w = n or the shorter prompt's length when less.
double SetOverlap(const NgramSets& a, size_t len_a, const NgramSets& b, size_t len_b) {
  const size_t w = std::min({a.size(), len_a, len_b});
  if (w == 0) return 0;
  const std::vector<uint64_t>& x = a[w - 1];
  const std::vector<uint64_t>& y = b[w - 1];
  if (x.empty() || y.empty()) return 0;
  size_t i = 0, j = 0, common = 0;
  while (i < x.size() && j < y.size()) {
    if (x[i] == y[j]) {
      ++common, ++i, ++j;
    } else if (x[i] < y[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return static_cast<double>(common) / (x.size() + y.size() - common);
}

size_t TailLength(const std::vector<int64_t>& ids) { return ids.empty() ? 0 : ids.size() - 1; }

}  // namespace

double NgramOverlap(const std::vector<int64_t>& a, const std::vector<int64_t>& b, int n) {
  return SetOverlap(MakeNgramSets(a, n), TailLength(a), MakeNgramSets(b, n), TailLength(b));
}

std::vector<Sample> DisjointFromCalibration(const Router& router, std::vector<Sample> samples,
                                            int* dropped, const OverlapOptions& overlap,
                                            int* near_dropped) {
  const RouterData& d = router.data();
  std::set<int64_t> seen(d.prompt_hashes.begin(), d.prompt_hashes.end());
  std::vector<std::pair<NgramSets, size_t>> calib;
  if (overlap.max_overlap <= 1 && !d.prompt_offsets.empty()) {
    for (int p = 0; p < d.num_prompts; ++p) {
      std::vector<int64_t> ids(d.prompt_ids.begin() + d.prompt_offsets[p],
                               d.prompt_ids.begin() + d.prompt_offsets[p + 1]);
      calib.push_back({MakeNgramSets(ids, overlap.ngram), TailLength(ids)});
    }
  }
  std::vector<Sample> out;
  int n = 0, near = 0;
  for (Sample& s : samples) {
    if (seen.count(HashIds(s.prompt))) {
      ++n;
      continue;
    }
    if (!calib.empty()) {
      NgramSets mine = MakeNgramSets(s.prompt, overlap.ngram);
      bool close = false;
      for (const auto& [sets, len] : calib) {
        if (SetOverlap(mine, TailLength(s.prompt), sets, len) >= overlap.max_overlap) {
          close = true;
          break;
        }
      }
      if (close) {
        ++near;
        continue;
      }
    }
    out.push_back(std::move(s));
  }
  if (dropped != nullptr) *dropped = n;
  if (near_dropped != nullptr) *near_dropped = near;
  return out;
}

absl::StatusOr<std::vector<float>> RouterFeature(const model::Engine& engine, const Router& router,
                                                 const std::vector<int64_t>& prompt) {
  if (router.data().feature != kFeatureBlock0) return router.Features(prompt);
  ASSIGN_OR_RETURN(
      BlockLayout layout,
      BlockLayout::Create(static_cast<int>(engine.config().num_layers), router.num_blocks()));
  ASSIGN_OR_RETURN(std::vector<float> raw,
                   Block0Feature(engine, layout, router.data().idf, prompt));
  return ProjectFeature(router.data().space, raw);
}

absl::StatusOr<EvalReport> Evaluate(const model::Engine& engine, Router& router,
                                    const std::vector<Sample>& test, const EvalOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  if (test.empty()) {
    return absl::InvalidArgumentError(
        "the test set is empty (every prompt was in the calibration set, or none was given)");
  }
  const int N = router.num_blocks();
  const BlockMask keep = router.keep_mask();
  const int kept = PopCount(keep);
  ASSIGN_OR_RETURN(BlockLayout layout,
                   BlockLayout::Create(static_cast<int>(engine.config().num_layers), N));
  std::vector<int> ks = options.top_ks;
  if (ks.empty()) {
    for (int k = kept + 1; k < N; ++k) ks.push_back(k);
  }
  if (ks.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no k with a choice to evaluate: N = ", N,
                                                   " with kept blocks ", FormatMask(keep)));
  }
  for (int k : ks) RETURN_IF_ERROR(ValidateTopK(k, N, keep));
  std::vector<int> free_blocks;
  for (int b = 0; b < N; ++b) {
    if (!(keep & (BlockMask{1} << b))) free_blocks.push_back(b);
  }

  EvalReport report;
  report.num_test = static_cast<int>(test.size());
  report.num_blocks = N;
  report.keep = keep;
  report.has_gate = router.has_gate();
  report.feature = router.data().feature;
  report.calibration_source = router.data().prompt_source;
  const int T = static_cast<int>(test.size());
  const bool block0 = router.data().feature == kFeatureBlock0;

  // Features and the router's decision time (feature + scoring + choice; for the block0 feature
  // scoring and choice only: block 0 itself runs anyway).
  std::vector<std::vector<float>> features(T);
  for (int p = 0; p < T; ++p) {
    ASSIGN_OR_RETURN(features[p], RouterFeature(engine, router, test[p].prompt));
  }
  {
    std::vector<double> us;
    for (int rep = 0; rep < 5; ++rep) {
      for (int p = 0; p < T; ++p) {
        auto t0 = std::chrono::steady_clock::now();
        if (block0) {
          ASSIGN_OR_RETURN(Candidates c, router.Score(features[p], ks[0], Scoring::kDefault));
          (void)ChooseBest(c, {});
        } else {
          auto pred = router.Predict(test[p].prompt, ks[0]);
          if (!pred.ok()) return pred.status();
        }
        auto t1 = std::chrono::steady_clock::now();
        us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
    }
    report.decision_us_mean = Mean(us);
    report.decision_us_p99 = Percentile(us, 0.99);
  }

  std::vector<std::map<BlockMask, Divergence>> measured(T);
  auto measure = [&](int p, const std::vector<BlockMask>& masks) -> absl::Status {
    std::vector<BlockMask> missing;
    for (BlockMask m : masks) {
      if (!measured[p].count(m)) missing.push_back(m);
    }
    if (missing.empty()) return absl::OkStatus();
    std::sort(missing.begin(), missing.end());
    missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
    auto m = MeasureSubsets(engine, layout, test[p], missing);
    if (!m.ok()) return Annotate(m.status(), absl::StrCat("test prompt ", p));
    for (auto& [mask, d] : *m) measured[p][mask] = d;
    return absl::OkStatus();
  };
  std::vector<std::vector<int64_t>> reference(T);
  std::vector<std::map<BlockMask, int>> first_div(T);
  auto divergence = [&](int p, BlockMask mask) -> absl::StatusOr<int> {
    auto it = first_div[p].find(mask);
    if (it != first_div[p].end()) return it->second;
    if (reference[p].empty() && options.greedy_tokens > 0) {
      ASSIGN_OR_RETURN(reference[p],
                       GreedyReference(engine, test[p].prompt, options.greedy_tokens));
    }
    int d = options.greedy_tokens;
    if (mask != FullMask(N) && options.greedy_tokens > 0) {
      SparsePlan plan;
      plan.blocks = MaskToBlocks(mask);
      ASSIGN_OR_RETURN(d, GreedyDivergence(engine, layout, test[p].prompt, reference[p], plan));
    }
    first_div[p][mask] = d;
    return d;
  };

  int measured_passes = 0;
  for (int k : ks) {
    const int need = k - kept;
    const bool enumerable =
        CountAdmissible(N, keep, k) <= static_cast<uint64_t>(options.max_oracle_subsets);
    std::vector<BlockMask> admissible;
    if (enumerable) admissible = EnumerateAdmissible(N, keep, k);
    // The subsets the oracle and the prompt ceiling range over: every admissible one, or the
    // router file's measured candidates when there are too many.
    std::vector<BlockMask> pool = admissible;
    if (!enumerable) {
      for (BlockMask m : router.data().subsets) {
        if (PopCount(m) == k) pool.push_back(m);
      }
    }
    log(absl::StrFormat("k=%d: %s admissible subsets%s", k,
                        enumerable ? absl::StrCat(admissible.size()) : "too many",
                        !enumerable && !pool.empty()
                            ? absl::StrCat("; oracle over the ", pool.size(), " candidates")
                            : ""));

    std::vector<std::pair<std::string, std::vector<BlockMask>>> choices;
    auto add_strategy = [&](const std::string& name) -> std::vector<BlockMask>& {
      choices.push_back({name, std::vector<BlockMask>(T, 0)});
      return choices.back().second;
    };
    {
      auto& c = add_strategy("random");
      for (int p = 0; p < T; ++p) {
        std::mt19937_64 rng(DeriveSeed(options.seed, 3, static_cast<uint64_t>(p) * 131 + k));
        if (enumerable) {
          c[p] = admissible[std::uniform_int_distribution<size_t>(0, admissible.size() - 1)(rng)];
        } else {
          std::vector<int> f = free_blocks;
          std::shuffle(f.begin(), f.end(), rng);
          BlockMask m = keep;
          for (int i = 0; i < need; ++i) m |= BlockMask{1} << f[i];
          c[p] = m;
        }
      }
    }
    {
      auto& c = add_strategy("drop-deepest");
      BlockMask m = keep;
      for (int i = 0; i < need; ++i) m |= BlockMask{1} << free_blocks[i];
      std::fill(c.begin(), c.end(), m);
    }
    std::vector<std::pair<std::string, Scoring>> scorers = {
        {"best static", Scoring::kStatic}, {"router: neighbours", Scoring::kNeighbours}};
    if (router.has_gate()) {
      scorers.push_back({"router: gate", Scoring::kGate});
      scorers.push_back({"router: both", Scoring::kBoth});
    }
    for (const auto& [name, scoring] : scorers) {
      auto& c = add_strategy(name);
      for (int p = 0; p < T; ++p) {
        ASSIGN_OR_RETURN(Candidates cand, router.Score(features[p], k, scoring));
        c[p] = ChooseBest(cand, {}).mask;
      }
    }
    // Measure what is needed, then the oracle.
    for (int p = 0; p < T; ++p) {
      std::vector<BlockMask> masks = pool;
      for (const auto& [name, c] : choices) masks.push_back(c[p]);
      RETURN_IF_ERROR(measure(p, masks));
      ++measured_passes;
      if (options.progress) {
        options.progress(measured_passes, static_cast<int>(ks.size()) * T);
      }
    }
    const std::string among =
        enumerable ? "" : absl::StrCat(", among ", pool.size(), " candidates");
    if (pool.size() > 1 && options.ceiling_continuations > 0 &&
        options.continuation_temperature > 0) {
      auto& c = add_strategy(
          absl::StrCat("prompt ceiling (", options.ceiling_continuations, " draws", among, ")"));
      for (int p = 0; p < T; ++p) {
        std::vector<double> mean(pool.size(), 0.0);
        for (int j = 0; j < options.ceiling_continuations; ++j) {
          model::SamplingParams sp;
          sp.max_new_tokens = static_cast<int64_t>(test[p].continuation.size());
          sp.temperature = options.continuation_temperature;
          sp.seed = DeriveSeed(options.seed, 7, static_cast<uint64_t>(p) * 1000 + j);
          sp.stop_at_eos = false;
          ASSIGN_OR_RETURN(model::GenerateResult g, engine.Generate(test[p].prompt, sp));
          auto m = MeasureSubsets(engine, layout, Sample{test[p].prompt, g.ids}, pool);
          if (!m.ok()) return Annotate(m.status(), absl::StrCat("test prompt ", p));
          for (size_t i = 0; i < pool.size(); ++i) mean[i] += m->at(pool[i]).kl;
        }
        c[p] = pool[std::min_element(mean.begin(), mean.end()) - mean.begin()];
      }
    }
    if (!pool.empty()) {
      auto& c =
          add_strategy(enumerable ? std::string("oracle")
                                  : absl::StrCat("oracle (among ", pool.size(), " candidates)"));
      for (int p = 0; p < T; ++p) {
        double best = 1e300;
        for (BlockMask m : pool) {
          if (measured[p][m].kl < best) {
            best = measured[p][m].kl;
            c[p] = m;
          }
        }
      }
    }

    const std::vector<double>* static_kl = nullptr;
    size_t first_row = report.rows.size();
    for (const auto& [name, c] : choices) {
      StrategyRow row;
      row.top_k = k;
      row.strategy = name;
      std::vector<double> top1, nll_s, nll_f, div;
      for (int p = 0; p < T; ++p) {
        const Divergence& d = measured[p].at(c[p]);
        row.kl.push_back(d.kl);
        top1.push_back(d.top1);
        nll_s.push_back(d.nll_sparse);
        nll_f.push_back(d.nll_full);
        ASSIGN_OR_RETURN(int fd, divergence(p, c[p]));
        div.push_back(fd);
        row.usage[c[p]]++;
      }
      row.mean_kl = Mean(row.kl);
      row.p95_kl = Percentile(row.kl, 0.95);
      row.top1 = Mean(top1);
      row.ppl_ratio = std::exp(Mean(nll_s) - Mean(nll_f));
      row.first_divergence = Mean(div);
      report.rows.push_back(std::move(row));
    }
    // The strongest static row on the test set: the harder baseline of the two.
    std::string reference;
    double reference_mean = 1e300;
    for (size_t i = first_row; i < report.rows.size(); ++i) {
      const StrategyRow& row = report.rows[i];
      if ((row.strategy == "best static" || row.strategy == "drop-deepest") &&
          row.mean_kl < reference_mean) {
        reference_mean = row.mean_kl;
        reference = row.strategy;
        static_kl = &row.kl;
      }
    }
    // Paired bootstrap: router variants against the best static subset.
    for (size_t i = first_row; i < report.rows.size() && static_kl != nullptr; ++i) {
      const StrategyRow& row = report.rows[i];
      if (row.strategy.rfind("router", 0) != 0) continue;
      BootstrapCi ci;
      ci.top_k = k;
      ci.strategy = row.strategy;
      ci.reference = reference;
      ci.mean = row.mean_kl;
      ci.static_mean = Mean(*static_kl);
      ci.reduction = ci.static_mean > 0 ? 1 - ci.mean / ci.static_mean : 0;
      std::mt19937_64 rng(DeriveSeed(options.seed, 5, k * 16 + i));
      std::uniform_int_distribution<int> pick(0, T - 1);
      std::vector<double> reductions;
      for (int b = 0; b < options.bootstrap_samples; ++b) {
        double a = 0, s = 0;
        for (int j = 0; j < T; ++j) {
          int p = pick(rng);
          a += row.kl[p];
          s += (*static_kl)[p];
        }
        reductions.push_back(s > 0 ? 1 - a / s : 0);
      }
      ci.lo = Percentile(reductions, 0.025);
      ci.hi = Percentile(reductions, 0.975);
      report.cis.push_back(ci);
    }

    if (!options.balance || need < 1 || need >= static_cast<int>(free_blocks.size())) continue;
    // Toll curve on a skewed stream.
    std::vector<Candidates> cands(T);
    std::vector<BlockMask> untolled(T);
    for (int p = 0; p < T; ++p) {
      ASSIGN_OR_RETURN(cands[p], router.Score(features[p], k, Scoring::kDefault));
      untolled[p] = ChooseBest(cands[p], {}).mask;
    }
    const std::vector<int> stream =
        SkewedStream(untolled, options.skew, DeriveSeed(options.seed, 4, k),
                     static_cast<size_t>(options.balance_passes) * T);
    double base_kl = -1;
    const double scale = router.DamageScale(k);
    for (double cap : options.toll_caps) {
      TollOptions to;
      to.rate = options.toll_rate;
      to.max_toll = cap;
      TollBook book(N, keep, to);
      double kl = 0;
      for (int p : stream) {
        Choice c = ChooseBest(cands[p], book.tolls());
        RETURN_IF_ERROR(measure(p, {c.mask}));
        kl += measured[p][c.mask].kl;
        book.Observe(c.mask, k, scale);
      }
      kl /= stream.size();
      if (base_kl < 0) base_kl = kl;
      BalancePoint bp;
      bp.top_k = k;
      bp.max_toll = cap;
      bp.jain = book.Jain();
      bp.max_over_mean = book.MaxOverMean();
      bp.mean_kl = kl;
      bp.kl_cost = base_kl > 0 ? kl / base_kl - 1 : 0;
      report.balance.push_back(bp);
    }
    // Congestion game on batches of concurrent requests.
    if (options.batch_size >= 2) {
      BatchSummary bs;
      bs.top_k = k;
      std::vector<double> jain, jain_alone, kl, kl_alone;
      for (int start = 0; start + options.batch_size <= T; start += options.batch_size) {
        std::vector<std::vector<int64_t>> prompts;
        for (int i = 0; i < options.batch_size; ++i) prompts.push_back(test[start + i].prompt);
        BatchOptions bo;
        bo.congestion = options.congestion;
        bo.seed = DeriveSeed(options.seed, 6, start);
        ASSIGN_OR_RETURN(BatchResult r, router.BalanceBatch(prompts, k, bo));
        ++bs.batches;
        bs.mean_gap += r.game.equilibrium_gap;
        bs.max_gap = std::max(bs.max_gap, r.game.equilibrium_gap);
        bs.mean_rounds += r.game.rounds;
        bs.all_converged = bs.all_converged && r.game.converged;
        jain.push_back(r.game.jain);
        jain_alone.push_back(r.jain_alone);
        for (int i = 0; i < options.batch_size; ++i) {
          int p = start + i;
          BlockMask eq = r.game.choices[i].mask;
          BlockMask alone = untolled[p];
          RETURN_IF_ERROR(measure(p, {eq, alone}));
          kl.push_back(measured[p][eq].kl);
          kl_alone.push_back(measured[p][alone].kl);
        }
      }
      if (bs.batches > 0) {
        bs.mean_gap /= bs.batches;
        bs.mean_rounds /= bs.batches;
        bs.jain = Mean(jain);
        bs.jain_alone = Mean(jain_alone);
        bs.mean_kl = Mean(kl);
        bs.mean_kl_alone = Mean(kl_alone);
        report.batches.push_back(bs);
      }
    }
  }
  return report;
}

std::string FormatReport(const EvalReport& r) {
  std::string out;
  absl::StrAppendFormat(&out,
                        "Test prompts: %d (%d dropped: in the calibration set; %d dropped: "
                        "near-duplicates, %d-gram overlap ≥ %.2f). N = %d blocks, kept %s. "
                        "Feature: %s. Router decision: %.1f µs mean, %.1f µs p99.\n",
                        r.num_test, r.dropped_overlap, r.dropped_near, r.overlap.ngram,
                        r.overlap.max_overlap, r.num_blocks, FormatMask(r.keep), r.feature,
                        r.decision_us_mean, r.decision_us_p99);
  if (!r.test_source.empty()) {
    absl::StrAppendFormat(&out, "Calibration prompts: %s; test prompts: %s.\n",
                          r.calibration_source, r.test_source);
  }
  int k = -1;
  for (const StrategyRow& row : r.rows) {
    if (row.top_k != k) {
      k = row.top_k;
      absl::StrAppendFormat(&out,
                            "\n### k = %d\n\n| strategy | mean KL | p95 KL | top-1 | ppl ratio | "
                            "first greedy divergence | subsets chosen |\n|---|---:|---:|---:|---:|"
                            "---:|---|\n",
                            k);
    }
    std::vector<std::pair<int, BlockMask>> used;
    for (const auto& [m, n] : row.usage) used.push_back({-n, m});
    std::sort(used.begin(), used.end());
    std::vector<std::string> parts;
    for (size_t i = 0; i < used.size() && i < 3; ++i) {
      parts.push_back(absl::StrFormat("%s %.0f%%", FormatMask(used[i].second),
                                      100.0 * -used[i].first / row.kl.size()));
    }
    if (used.size() > 3) parts.push_back("…");
    absl::StrAppendFormat(&out, "| %s | %.4f | %.4f | %.3f | %.3f | %.1f | %s |\n", row.strategy,
                          row.mean_kl, row.p95_kl, row.top1, row.ppl_ratio, row.first_divergence,
                          absl::StrJoin(parts, ", "));
  }
  if (!r.cis.empty()) {
    absl::StrAppend(&out,
                    "\nRouter vs the strongest static row (paired bootstrap over test prompts, "
                    "95 %):\n\n"
                    "| k | strategy | mean KL | strongest static | its KL | KL reduction | 95 % "
                    "interval |\n|---|---|---:|---|---:|---:|---|\n");
    for (const BootstrapCi& ci : r.cis) {
      absl::StrAppendFormat(&out,
                            "| %d | %s | %.4f | %s | %.4f | %+.1f %% | [%+.1f %%, %+.1f %%] |\n",
                            ci.top_k, ci.strategy, ci.mean, ci.reference, ci.static_mean,
                            100 * ci.reduction, 100 * ci.lo, 100 * ci.hi);
    }
  }
  // Best static against random.
  {
    std::map<int, std::pair<double, double>> sr;
    for (const StrategyRow& row : r.rows) {
      if (row.strategy == "random") sr[row.top_k].first = row.mean_kl;
      if (row.strategy == "best static") sr[row.top_k].second = row.mean_kl;
    }
    absl::StrAppend(&out, "\nBest static / random mean KL:");
    for (const auto& [kk, v] : sr) {
      absl::StrAppendFormat(&out, " k=%d: %.2f×", kk, v.first > 0 ? v.second / v.first : 0.0);
    }
    absl::StrAppend(&out, "\n");
  }
  if (!r.balance.empty()) {
    absl::StrAppend(&out,
                    "\nTolls on a skewed stream (router's default scoring; cap in units of the "
                    "damage scale):\n\n| k | toll cap | Jain | max/mean | mean KL | KL cost |\n"
                    "|---|---:|---:|---:|---:|---:|\n");
    for (const BalancePoint& b : r.balance) {
      absl::StrAppendFormat(&out, "| %d | %s | %.3f | %.2f | %.4f | %+.1f %% |\n", b.top_k,
                            std::isinf(b.max_toll) ? "∞" : absl::StrFormat("%.2f", b.max_toll),
                            b.jain, b.max_over_mean, b.mean_kl, 100 * b.kl_cost);
    }
  }
  if (!r.batches.empty()) {
    absl::StrAppend(
        &out,
        "\nConcurrent batches (congestion game, best-response rounds):\n\n"
        "| k | batches | rounds | converged | mean gap | max gap | Jain alone → "
        "equilibrium | KL alone → equilibrium |\n|---|---:|---:|---|---:|---:|---|---|\n");
    for (const BatchSummary& b : r.batches) {
      absl::StrAppendFormat(
          &out, "| %d | %d | %.1f | %s | %.2g | %.2g | %.3f → %.3f | %.4f → %.4f |\n", b.top_k,
          b.batches, b.mean_rounds, b.all_converged ? "all" : "not all", b.mean_gap, b.max_gap,
          b.jain_alone, b.jain, b.mean_kl_alone, b.mean_kl);
    }
  }
  return out;
}

}  // namespace swarm::router
