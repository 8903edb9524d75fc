#include "router/calibration/calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/block_layout.h"
#include "common/status_macros.h"
#include "router/features.h"

namespace swarm::router {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Mean over rows of the standard deviation within each row of `v` [rows, cols].
double MeanRowSpread(const std::vector<double>& v, int rows, int cols) {
  if (cols < 2 || rows < 1) return 0;
  double total = 0;
  for (int p = 0; p < rows; ++p) {
    double m = 0, m2 = 0;
    for (int c = 0; c < cols; ++c) m += v[p * cols + c];
    m /= cols;
    for (int c = 0; c < cols; ++c) m2 += (v[p * cols + c] - m) * (v[p * cols + c] - m);
    total += std::sqrt(m2 / cols);
  }
  return total / rows;
}

// One k's choice problem for the leave-one-out study: either explicit columns (subset damages)
// or additive (skip damages of the free blocks; a choice keeps `need` of them).
struct Problem {
  bool additive = false;
  int cols = 0;
  int need = 0;
  std::vector<double> v;  // [P, cols]
};

// Index set chosen for estimate `est` [cols].
std::vector<int> Choose(const Problem& pr, const std::vector<double>& est) {
  std::vector<int> idx(pr.cols);
  std::iota(idx.begin(), idx.end(), 0);
  if (!pr.additive) {
    int best = static_cast<int>(std::min_element(est.begin(), est.end()) - est.begin());
    return {best};
  }
  // Keep the `need` most important free blocks (stable: ties to the lower block).
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return est[a] > est[b]; });
  idx.resize(pr.need);
  return idx;
}

// Realised damage of `choice` for prompt p.
double Realised(const Problem& pr, int p, const std::vector<int>& choice) {
  const double* row = pr.v.data() + static_cast<int64_t>(p) * pr.cols;
  if (!pr.additive) return row[choice[0]];
  double s = 0;
  for (int c = 0; c < pr.cols; ++c) {
    if (std::find(choice.begin(), choice.end(), c) == choice.end()) s += row[c];
  }
  return s;
}

// Pearson correlation of x and y (0 when either is constant).
double Pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 2) return 0;
  double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 1e-18 || syy <= 1e-18) return 0;
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace

absl::StatusOr<RouterData> Calibrate(const model::Engine& engine,
                                     const std::vector<Sample>& samples,
                                     const CalibrationOptions& options, CalibrationReport* report) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  if (samples.empty()) {
    return absl::InvalidArgumentError(
        "the calibration set is empty: give --prompts FILE with text or --num-prompts > 0");
  }
  const model::ModelConfig& config = engine.config();
  const int N = options.num_blocks;
  ASSIGN_OR_RETURN(BlockLayout layout, BlockLayout::Create(static_cast<int>(config.num_layers), N));
  BlockMask keep;
  if (options.default_keep) {
    keep = DefaultKeepMask(N);
  } else {
    ASSIGN_OR_RETURN(keep, MakeKeepMask(options.keep_blocks, N));
  }
  if (options.neighbours < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("neighbours must be at least 1, got ", options.neighbours));
  }
  if (options.feature != kFeatureEmbedding && options.feature != kFeatureBlock0 &&
      options.feature != "auto") {
    return absl::InvalidArgumentError(absl::StrCat("unknown feature '", options.feature,
                                                   "' (expected embedding, block0 or auto)"));
  }
  if (options.search_beam < 0 || options.search_prompts < 1 || options.proposals_per_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad strongest-static search options: beam ", options.search_beam, ", prompts ",
        options.search_prompts, ", proposals ", options.proposals_per_k));
  }

  // Which subsets to measure.
  std::vector<BlockMask> subsets;
  std::vector<int> ks;
  if (!options.top_ks.empty() || options.top_k > 0) {
    ks = options.top_ks.empty() ? std::vector<int>{options.top_k} : options.top_ks;
    for (int k : ks) RETURN_IF_ERROR(ValidateTopK(k, N, keep));
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  } else {
    for (int k = std::max(1, PopCount(keep)); k < N; ++k) ks.push_back(k);
  }
  std::vector<int> search_ks;  // Too many subsets to enumerate: searched candidates instead.
  for (int k : ks) {
    uint64_t count = CountAdmissible(N, keep, k);
    if (count > static_cast<uint64_t>(options.max_subsets_per_k) ||
        subsets.size() + count > static_cast<uint64_t>(options.max_subsets_total)) {
      if (count > 1 && options.search_beam > 0) {
        search_ks.push_back(k);
        log(absl::StrFormat(
            "k=%d: %llu admissible subsets, too many to enumerate; measured candidates from a "
            "beam search (width %d) and the additive model stand in",
            k, static_cast<unsigned long long>(count), options.search_beam));
      } else {
        log(absl::StrFormat(
            "k=%d: %llu admissible subsets, too many to enumerate; per-block skip damages stand "
            "in",
            k, static_cast<unsigned long long>(count)));
      }
      continue;
    }
    for (BlockMask m : EnumerateAdmissible(N, keep, k)) subsets.push_back(m);
  }
  const BlockMask full = FullMask(N);
  std::vector<BlockMask> measure = subsets;
  if (N > 1) {
    for (int b = 0; b < N; ++b) measure.push_back(full & ~(BlockMask{1} << b));
  }
  std::sort(measure.begin(), measure.end());
  measure.erase(std::unique(measure.begin(), measure.end()), measure.end());

  const int P = static_cast<int>(samples.size());
  std::vector<int> free_blocks;
  for (int b = 0; b < N; ++b) {
    if (!(keep & (BlockMask{1} << b))) free_blocks.push_back(b);
  }
  const int F = static_cast<int>(free_blocks.size());

  // Measured damages, per prompt, of every mask measured so far.
  std::vector<std::map<BlockMask, float>> kl(P);
  auto measure_on = [&](int p, const std::vector<BlockMask>& masks) -> absl::Status {
    std::vector<BlockMask> missing;
    for (BlockMask m : masks) {
      if (!kl[p].count(m)) missing.push_back(m);
    }
    if (missing.empty()) return absl::OkStatus();
    std::sort(missing.begin(), missing.end());
    missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
    auto m = MeasureSubsets(engine, layout, samples[p], missing);
    if (!m.ok()) return Annotate(m.status(), absl::StrCat("calibration prompt ", p));
    for (BlockMask mask : missing) kl[p][mask] = static_cast<float>(m->at(mask).kl);
    return absl::OkStatus();
  };

  log(absl::StrFormat("measuring %d prompts × %zu block subsets (N=%d, kept %s)", P, measure.size(),
                      N, FormatMask(keep)));
  auto t0 = std::chrono::steady_clock::now();
  for (int p = 0; p < P; ++p) {
    RETURN_IF_ERROR(measure_on(p, measure));
    if (options.progress) {
      options.progress(p + 1, P);
    } else if ((p + 1) % 64 == 0 || p + 1 == P) {
      log(absl::StrFormat("  %d/%d prompts (%.1f s)", p + 1, P, Seconds(t0)));
    }
  }
  std::vector<double> skip_mean(N, 0.0);
  for (int p = 0; p < P && N > 1; ++p) {
    for (int b = 0; b < N; ++b) skip_mean[b] += kl[p][full & ~(BlockMask{1} << b)] / P;
  }

  // The strongest static subsets of the searched k, and the additive model's proposals.
  double search_seconds = 0;
  if (!search_ks.empty()) {
    auto ts = std::chrono::steady_clock::now();
    const int M = std::min(P, options.search_prompts);
    const int min_k = *std::min_element(search_ks.begin(), search_ks.end());
    const int max_k = *std::max_element(search_ks.begin(), search_ks.end());
    // Backward elimination from the full model, or forward selection from the kept blocks,
    // whichever reaches the searched sizes in fewer steps.
    const bool backward = N - min_k <= max_k - PopCount(keep);
    std::map<int, std::vector<BlockMask>> beams;
    std::vector<BlockMask> beam = {backward ? full : keep};
    for (int size = backward ? N - 1 : PopCount(keep) + 1; backward ? size >= min_k : size <= max_k;
         size += backward ? -1 : 1) {
      std::vector<BlockMask> next;
      for (BlockMask m : beam) {
        for (int b : free_blocks) {
          const BlockMask bit = BlockMask{1} << b;
          if (backward && (m & bit)) next.push_back(m & ~bit);
          if (!backward && !(m & bit)) next.push_back(m | bit);
        }
      }
      std::sort(next.begin(), next.end());
      next.erase(std::unique(next.begin(), next.end()), next.end());
      if (next.empty()) break;
      for (int p = 0; p < M; ++p) RETURN_IF_ERROR(measure_on(p, next));
      std::vector<std::pair<double, BlockMask>> scored;
      for (BlockMask m : next) {
        double s = 0;
        for (int p = 0; p < M; ++p) s += kl[p][m];
        scored.push_back({s / M, m});
      }
      std::sort(scored.begin(), scored.end());
      beam.clear();
      for (int i = 0; i < std::min<int>(options.search_beam, scored.size()); ++i) {
        beam.push_back(scored[i].second);
      }
      if (std::find(search_ks.begin(), search_ks.end(), size) != search_ks.end()) {
        beams[size] = beam;
        log(
            absl::StrFormat("k=%d: %s beam search's strongest static subset %s (mean KL %.4f on "
                            "%d calibration prompts)",
                            size, backward ? "backward" : "forward", FormatMask(scored[0].second),
                            scored[0].first, M));
      }
    }
    for (int k : search_ks) {
      const int need = k - PopCount(keep);
      auto top_blocks = [&](const std::vector<double>& importance) {
        std::vector<int> idx(F);
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
          return importance[free_blocks[a]] > importance[free_blocks[b]];
        });
        BlockMask m = keep;
        for (int i = 0; i < need; ++i) m |= BlockMask{1} << free_blocks[idx[i]];
        return m;
      };
      std::vector<BlockMask> cand = beams[k];
      cand.push_back(top_blocks(skip_mean));  // The additive model's static choice.
      {
        BlockMask m = keep;  // Drop-deepest.
        for (int i = 0; i < need; ++i) m |= BlockMask{1} << free_blocks[i];
        cand.push_back(m);
      }
      std::map<BlockMask, int> proposals;  // Each prompt's own additive choice.
      for (int p = 0; p < P; ++p) {
        std::vector<double> own(N, 0.0);
        for (int b = 0; b < N; ++b) own[b] = kl[p][full & ~(BlockMask{1} << b)];
        proposals[top_blocks(own)]++;
      }
      std::vector<std::pair<int, BlockMask>> ranked;
      for (const auto& [m, c] : proposals) ranked.push_back({-c, m});
      std::sort(ranked.begin(), ranked.end());
      for (int i = 0; i < std::min<int>(options.proposals_per_k, ranked.size()); ++i) {
        cand.push_back(ranked[i].second);
      }
      std::sort(cand.begin(), cand.end());
      cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
      for (int p = 0; p < P; ++p) RETURN_IF_ERROR(measure_on(p, cand));
      subsets.insert(subsets.end(), cand.begin(), cand.end());
    }
    search_seconds = Seconds(ts);
    log(absl::StrFormat("strongest-static search and candidates: %.1f s", search_seconds));
  }
  std::sort(subsets.begin(), subsets.end(), [](BlockMask a, BlockMask b) {
    return PopCount(a) != PopCount(b) ? PopCount(a) < PopCount(b) : a < b;
  });
  subsets.erase(std::unique(subsets.begin(), subsets.end()), subsets.end());
  const double measure_seconds = Seconds(t0);

  const int S = static_cast<int>(subsets.size());
  RouterData d;
  d.fingerprint = config.Fingerprint();
  d.num_blocks = N;
  d.num_layers = static_cast<int>(config.num_layers);
  d.keep = keep;
  d.neighbours = options.neighbours;
  d.continuation_tokens = static_cast<int>(samples[0].continuation.size());
  d.seed = options.seed;
  d.prompt_source = options.prompt_source;
  d.num_prompts = P;
  d.subsets = subsets;
  d.subset_damage.assign(static_cast<int64_t>(P) * S, 0.0f);
  d.skip_damage.assign(static_cast<int64_t>(P) * N, 0.0f);
  for (int p = 0; p < P; ++p) {
    for (int s = 0; s < S; ++s)
      d.subset_damage[static_cast<int64_t>(p) * S + s] = kl[p][subsets[s]];
    if (N > 1) {
      for (int b = 0; b < N; ++b) {
        d.skip_damage[static_cast<int64_t>(p) * N + b] = kl[p][full & ~(BlockMask{1} << b)];
      }
    }
  }
  kl.clear();

  // Raw features of every kind studied.
  auto t1 = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<EmbeddingTable> table,
                   EmbeddingTable::Open(engine.checkpoint()));
  std::vector<std::vector<int64_t>> prompts;
  for (const Sample& s : samples) prompts.push_back(s.prompt);
  d.idf = ComputeIdf(prompts, table->vocab_size());
  const int64_t D = table->dim();
  std::vector<std::string> kinds;
  if (options.feature == "auto") {
    kinds = {kFeatureEmbedding, kFeatureBlock0};
  } else {
    kinds = {options.feature};
  }

  // Static prior and damage scales.
  d.subset_prior.assign(S, 0.0f);
  d.skip_prior.assign(N, 0.0f);
  for (int p = 0; p < P; ++p) {
    for (int s = 0; s < S; ++s) d.subset_prior[s] += d.subset_damage[p * S + s] / P;
    for (int b = 0; b < N; ++b) d.skip_prior[b] += d.skip_damage[p * N + b] / P;
  }
  d.damage_scale.assign(N + 2, 0.0f);
  std::vector<Problem> problems(N + 1);
  for (int k = 0; k <= N; ++k) {
    Problem& pr = problems[k];
    std::vector<int> group;
    for (int s = 0; s < S; ++s) {
      if (PopCount(subsets[s]) == k) group.push_back(s);
    }
    if (!group.empty()) {
      pr.cols = static_cast<int>(group.size());
      for (int p = 0; p < P; ++p) {
        for (int s : group) pr.v.push_back(d.subset_damage[p * S + s]);
      }
    } else {
      pr.additive = true;
      pr.cols = F;
      pr.need = k - PopCount(keep);
      for (int p = 0; p < P; ++p) {
        for (int b : free_blocks) pr.v.push_back(d.skip_damage[p * N + b]);
      }
    }
    if (!pr.additive) d.damage_scale[k] = static_cast<float>(MeanRowSpread(pr.v, P, pr.cols));
  }
  {
    std::vector<double> v;
    for (int p = 0; p < P; ++p) {
      for (int b : free_blocks) v.push_back(d.skip_damage[p * N + b]);
    }
    d.damage_scale[N + 1] = static_cast<float>(MeanRowSpread(v, P, F));
  }
  for (int k = 0; k <= N; ++k) {
    // An additive k's spread: a choice differs from another by about one block's skip damage.
    if (problems[k].additive) d.damage_scale[k] = d.damage_scale[N + 1];
  }

  // Leave one *prompt* out: identical prompts (short sampled prompts repeat) are left out with
  // it, or a prompt would find its twin and the study would overstate what neighbours know.
  std::vector<int64_t> hashes;
  for (const Sample& s : samples) hashes.push_back(HashIds(s.prompt));
  // The study's queries are the prompts that occur once: like a test prompt, which by
  // construction is not in the calibration set. Frequent short prompts have many near-twins
  // (prefix extensions) and would overstate what neighbours know about a new prompt.
  std::vector<int> queries;
  {
    std::map<int64_t, int> count;
    for (int64_t h : hashes) ++count[h];
    for (int p = 0; p < P; ++p) {
      if (count[hashes[p]] == 1) queries.push_back(p);
    }
    if (static_cast<int>(queries.size()) < std::max(10, P / 10)) {
      queries.resize(P);
      std::iota(queries.begin(), queries.end(), 0);
    }
  }
  const double Q = static_cast<double>(queries.size());
  const int K = std::min(options.neighbours, std::max(1, P - 1));

  // One feature kind: its space, the calibration prompts' features, the leave-one-out study.
  struct Study {
    std::string kind;
    FeatureSpace space;
    std::vector<float> features;
    std::vector<float> blend;
    std::vector<LooSummary> loo;
    double total_router_kl = 0;
  };
  auto study = [&](const std::string& kind) -> absl::StatusOr<Study> {
    Study st;
    st.kind = kind;
    std::vector<float> raw(static_cast<int64_t>(P) * D);
    for (int p = 0; p < P; ++p) {
      absl::StatusOr<std::vector<float>> f = kind == kFeatureBlock0
                                                 ? Block0Feature(engine, layout, d.idf, prompts[p])
                                                 : RawFeature(*table, d.idf, prompts[p]);
      if (!f.ok()) return Annotate(f.status(), absl::StrCat("calibration prompt ", p));
      std::copy(f->begin(), f->end(), raw.begin() + static_cast<int64_t>(p) * D);
    }
    st.space.dim = D;
    st.space.mean.assign(D, 0.0f);
    for (int p = 0; p < P; ++p) {
      for (int64_t i = 0; i < D; ++i) st.space.mean[i] += raw[p * D + i] / P;
    }
    std::vector<float> centred = raw;
    for (int p = 0; p < P; ++p) {
      for (int64_t i = 0; i < D; ++i) centred[p * D + i] -= st.space.mean[i];
    }
    st.space.rank = std::max<int64_t>(1, std::min<int64_t>({options.pca_rank, D, P - 1}));
    ASSIGN_OR_RETURN(st.space.basis, FitPcaBasis(centred, P, D, st.space.rank));
    const int64_t R = st.space.rank;
    st.features.resize(static_cast<int64_t>(P) * R);
    for (int p = 0; p < P; ++p) {
      std::vector<float> f = ProjectFeature(
          st.space, absl::Span<const float>(raw.data() + static_cast<int64_t>(p) * D, D));
      std::copy(f.begin(), f.end(), st.features.begin() + static_cast<int64_t>(p) * R);
    }
    std::vector<std::vector<int>> nn(P);
    for (int p = 0; p < P; ++p) {
      std::vector<std::pair<float, int>> sims;
      for (int q = 0; q < P; ++q) {
        if (hashes[q] == hashes[p]) continue;
        float s = 0;
        for (int64_t i = 0; i < R; ++i) s += st.features[p * R + i] * st.features[q * R + i];
        sims.push_back({-s, q});
      }
      int k = std::min<int>(K, static_cast<int>(sims.size()));
      std::partial_sort(sims.begin(), sims.begin() + k, sims.end());
      for (int i = 0; i < k; ++i) nn[p].push_back(sims[i].second);
    }
    st.blend.assign(N + 1, 0.5f);
    for (int k = 0; k <= N; ++k) {
      const Problem& pr = problems[k];
      if (k < PopCount(keep) || k >= N || pr.cols < 1) continue;
      if (!pr.additive && pr.cols < 2) {
        st.blend[k] = 1.0f;
        continue;
      }
      if (pr.additive && (pr.need <= 0 || pr.need >= pr.cols)) continue;
      std::vector<double> sum(pr.cols, 0.0);
      for (int p = 0; p < P; ++p) {
        for (int c = 0; c < pr.cols; ++c) sum[c] += pr.v[p * pr.cols + c];
      }
      auto prior_of = [&](int p, int c) {
        return P > 1 ? (sum[c] - pr.v[p * pr.cols + c]) / (P - 1) : sum[c];
      };
      auto neighbour_mean = [&](int p, int c) {
        if (nn[p].empty()) return prior_of(p, c);
        double m = 0;
        for (int q : nn[p]) m += pr.v[q * pr.cols + c];
        return m / nn[p].size();
      };
      auto loo_mean = [&](double beta) {
        double total = 0;
        std::vector<double> est(pr.cols);
        for (int p : queries) {
          for (int c = 0; c < pr.cols; ++c) {
            est[c] = (1 - beta) * neighbour_mean(p, c) + beta * prior_of(p, c);
          }
          total += Realised(pr, p, Choose(pr, est));
        }
        return total / Q;
      };
      LooSummary s;
      s.top_k = k;
      s.additive = pr.additive;
      s.candidates = pr.additive ? 0 : pr.cols;
      s.enumerated = !pr.additive && static_cast<uint64_t>(pr.cols) == CountAdmissible(N, keep, k);
      double best = 1e300;
      for (int i = 10; i >= 0; --i) {  // Ties go to the larger β (closer to static).
        double beta = i / 10.0;
        double v = loo_mean(beta);
        if (v < best - 1e-12) {
          best = v;
          s.blend = beta;
        }
      }
      s.router_kl = best;
      s.neighbours_only_kl = loo_mean(0.0);
      std::vector<double> mean(pr.cols);
      for (int c = 0; c < pr.cols; ++c) mean[c] = sum[c] / P;
      std::vector<int> static_choice = Choose(pr, mean);
      double stat = 0, orc = 0, corr = 0;
      for (int p : queries) {
        stat += Realised(pr, p, static_choice);
        std::vector<double> own(pr.v.begin() + p * pr.cols, pr.v.begin() + (p + 1) * pr.cols);
        orc += Realised(pr, p, Choose(pr, own));
        std::vector<double> x(pr.cols), y(pr.cols);
        for (int c = 0; c < pr.cols; ++c) {
          x[c] = own[c] - prior_of(p, c);
          y[c] = neighbour_mean(p, c) - prior_of(p, c);
        }
        corr += Pearson(x, y);
      }
      s.static_kl = stat / Q;
      s.oracle_kl = orc / Q;
      s.correlation = corr / Q;
      st.blend[k] = static_cast<float>(s.blend);
      // Other k get their β too (the router serves every k), but only the calibrated ones are
      // reported and decide the feature.
      if (std::find(ks.begin(), ks.end(), k) == ks.end()) continue;
      st.total_router_kl += s.router_kl;
      st.loo.push_back(s);
      log(absl::StrFormat(
          "%s feature, k=%d%s: leave-one-out KL: static %.4f, neighbours %.4f, blended (β=%.1f) "
          "%.4f, oracle %.4f; neighbour damage correlation %+.3f",
          kind, k,
          pr.additive ? " (additive)"
                      : (s.enumerated ? "" : absl::StrCat(" (", pr.cols, " candidates)")),
          s.static_kl, s.neighbours_only_kl, s.blend, s.router_kl, s.oracle_kl, s.correlation));
    }
    return st;
  };
  std::vector<Study> studies;
  for (const std::string& kind : kinds) {
    ASSIGN_OR_RETURN(Study st, study(kind));
    studies.push_back(std::move(st));
  }
  size_t chosen = 0;
  for (size_t i = 1; i < studies.size(); ++i) {
    if (studies[i].total_router_kl < studies[chosen].total_router_kl - 1e-12) chosen = i;
  }
  if (studies.size() > 1) {
    log(absl::StrFormat("feature chosen by leave-one-out: %s", studies[chosen].kind));
  }
  d.feature = studies[chosen].kind;
  d.space = studies[chosen].space;
  d.features = studies[chosen].features;
  d.blend = studies[chosen].blend;
  std::vector<LooSummary> loo = studies[chosen].loo;

  // Optional gate.
  if (options.fit_gate) {
    std::vector<GateGroup> groups;
    for (int k = 0; k <= N; ++k) {
      const Problem& pr = problems[k];
      if (pr.additive || pr.cols < 2) continue;
      GateGroup g;
      for (int s = 0; s < S; ++s) {
        if (PopCount(subsets[s]) == k) g.columns.push_back(s);
      }
      g.values.assign(pr.v.begin(), pr.v.end());
      g.lower_is_better = true;
      g.scale = d.damage_scale[k];
      g.index = k;
      groups.push_back(std::move(g));
    }
    if (F >= 2) {
      GateGroup g;
      for (int b : free_blocks) g.columns.push_back(S + b);
      for (int p = 0; p < P; ++p) {
        for (int b : free_blocks) g.values.push_back(d.skip_damage[p * N + b]);
      }
      g.lower_is_better = false;
      g.scale = d.damage_scale[N + 1];
      g.index = N + 1;
      groups.push_back(std::move(g));
    }
    d.gate_temperature.assign(N + 2, 1.0f);
    GateFitOptions gate_options = options.gate;
    gate_options.seed = options.seed;
    // Hold out every third prompt that occurs once (the leave-one-out study's queries, shaped
    // like test prompts, which never repeat a calibration prompt), so that checkpoint selection
    // sees the distribution the router is evaluated on and no held-out prompt is trained on.
    if (gate_options.validation_rows.empty() && P >= 10) {
      std::map<int64_t, int> count;
      for (int64_t h : hashes) ++count[h];
      int unique = 0;
      for (int p = 0; p < P; ++p) {
        if (count[hashes[p]] == 1 && unique++ % 3 == 2) gate_options.validation_rows.push_back(p);
      }
    }
    GateFitStats stats;
    ASSIGN_OR_RETURN(GateWeights w, FitGate(d.features, P, d.space.rank, S + N, groups,
                                            gate_options, &d.gate_temperature, &stats));
    d.gate = std::move(w);
    log(absl::StrFormat(
        "fitted the MLP gate (%d → %d → %d, %d epochs, T %.2f → %.2f × scale, %d/%d prompts "
        "trained/held out): kept epoch %d, held-out score %.4f (untrained, = static prior: %.4f)",
        static_cast<int>(d.space.rank), gate_options.hidden, S + N, gate_options.epochs,
        gate_options.t_start, gate_options.t_end, stats.train_rows, stats.validation_rows,
        stats.best_epoch, stats.best_score, stats.start_score));
    d.notes["gate_kept_epoch"] = absl::StrCat(stats.best_epoch);
  }

  d.prompt_hashes = hashes;
  d.prompt_offsets.push_back(0);
  for (const auto& ids : prompts) {
    d.prompt_ids.insert(d.prompt_ids.end(), ids.begin(), ids.end());
    d.prompt_offsets.push_back(static_cast<int64_t>(d.prompt_ids.size()));
  }
  d.notes["pca_rank"] = absl::StrCat(d.space.rank);
  d.notes["calibrated_k"] = absl::StrJoin(ks, ",");
  d.notes["measure_seconds"] = absl::StrFormat("%.2f", measure_seconds);
  if (!search_ks.empty()) {
    d.notes["searched_k"] = absl::StrJoin(search_ks, ",");
    d.notes["search_beam"] = absl::StrCat(options.search_beam);
  }
  RETURN_IF_ERROR(d.Validate());
  if (report != nullptr) {
    report->num_prompts = P;
    report->num_subsets = S;
    report->measure_seconds = measure_seconds;
    report->search_seconds = search_seconds;
    report->fit_seconds = Seconds(t1);
    report->feature = d.feature;
    for (const Study& st : studies) report->feature_loo.push_back({st.kind, st.loo});
    report->loo = std::move(loo);
  }
  return d;
}

}  // namespace swarm::router
