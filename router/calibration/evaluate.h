// `swarm eval`: what routing costs in quality, measured on a test set disjoint from calibration
// (exact repeats and near-duplicates by n-gram overlap dropped). For each k and each strategy —
// random, drop-deepest, best static subset (the strongest measured at calibration: exhaustive,
// or the best of the searched candidates), the router (neighbours only, gate only, both) and
// the per-prompt oracle — mean and p95 KL(full ‖ sparse) per continuation token, top-1
// agreement, perplexity ratio and first greedy divergence; a paired bootstrap interval for the
// router's KL reduction against the strongest static row on the test set; the
// toll curve (Jain's index and KL cost under a skewed request mix as the toll cap grows); the
// congestion game on batches of concurrent requests; and the router's decision time.
//
// Called by the CLI and the benchmarks. Runs on the caller's thread; the Engine is only read, the
// Router's tolls are left as they were.
#ifndef SWARM_ROUTER_CALIBRATION_EVALUATE_H_
#define SWARM_ROUTER_CALIBRATION_EVALUATE_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/generate.h"
#include "router/calibration/probe.h"
#include "router/router.h"

namespace swarm::router {

// Near-duplicate test: the Jaccard index |A ∩ B| / |A ∪ B| of the sets of token n-grams of two
// prompts (the first token, BOS, left out; when either is shorter than n tokens, w-grams with w
// its length). A test prompt whose overlap with some calibration prompt reaches max_overlap is a
// near-duplicate (a one-word edit, a prefix extension by less than its own length). Jaccard, not
// containment: prompts sampled from BOS share their opening ("Once upon a time"), and a short one
// is contained in many longer ones without being their twin.
struct OverlapOptions {
  int ngram = 4;
  double max_overlap = 0.5;  // > 1 = only exact repeats are dropped.
};
struct EvalOptions {
  std::vector<int> top_ks;  // Empty: every k with a real choice (|kept| < k < N).
  int greedy_tokens = 32;
  int bootstrap_samples = 2000;
  uint64_t seed = 0;
  // Enumerate every admissible subset (oracle) when there are at most this many.
  int max_oracle_subsets = 64;
  // When a k is not enumerated, the oracle and prompt ceiling range over the router file's
  // measured candidates of that k instead (labelled so).
  // "prompt ceiling": the best any prompt-only router could do, estimated by choosing, for each
  // test prompt, the subset with the lowest mean damage over this many *other* continuations of
  // the same prompt (drawn at continuation_temperature) and scoring it on the test continuation.
  // 0 = off; pointless for greedy continuations (then it equals the oracle).
  int ceiling_continuations = 0;
  float continuation_temperature = 1.0f;
  // Toll curve: caps in units of the damage scale (infinity = uncapped), a stream of
  // passes × |test| requests where prompts whose untolled choice is the most common one are
  // `skew` times likelier.
  bool balance = true;
  std::vector<double> toll_caps = {0,   0.1,  0.2, 0.3, 0.4,
                                   0.5, 0.75, 1,   2,   std::numeric_limits<double>::infinity()};
  double toll_rate = 0.05;
  int balance_passes = 4;
  double skew = 4.0;
  int batch_size = 8;
  double congestion = 0.5;
  std::function<void(const std::string&)> log;
  // Called after each (k, test prompt) measurement with (done, total = |k| × |test|) (may be
  // null).
  std::function<void(int done, int total)> progress;
};

struct StrategyRow {
  int top_k = 0;
  std::string strategy;
  double mean_kl = 0, p95_kl = 0, top1 = 0, ppl_ratio = 0, first_divergence = 0;
  std::vector<double> kl;          // Per test prompt.
  std::map<BlockMask, int> usage;  // How often each subset was chosen.
};

struct BootstrapCi {
  int top_k = 0;
  std::string strategy;   // Compared against the strongest static row of this k.
  std::string reference;  // That row: "best static" or "drop-deepest", the lower test KL.
  double mean = 0, static_mean = 0;
  double reduction = 0;   // 1 − mean / static_mean.
  double lo = 0, hi = 0;  // 95 % percentile interval of the reduction.
};

struct BalancePoint {
  int top_k = 0;
  double max_toll = 0;  // In units of the damage scale.
  double jain = 1, max_over_mean = 1;
  double mean_kl = 0;  // Realised KL of the routed stream.
  double kl_cost = 0;  // Relative to the untolled stream.
};

struct BatchSummary {
  int top_k = 0;
  int batches = 0;
  double mean_gap = 0, max_gap = 0, mean_rounds = 0;
  bool all_converged = true;
  double jain = 1, jain_alone = 1;        // Usage balance with and without congestion.
  double mean_kl = 0, mean_kl_alone = 0;  // Realised KL with and without congestion.
};

struct EvalReport {
  int num_test = 0;
  int dropped_overlap = 0;  // Test prompts dropped because calibration had them.
  int dropped_near = 0;     // ... because they overlap a calibration prompt (n-grams).
  OverlapOptions overlap;
  std::string feature;             // The router file's feature.
  std::string calibration_source;  // The router file's prompt source.
  std::string test_source;         // "sampled" or the test prompts file.
  int num_blocks = 0;
  BlockMask keep = 0;
  bool has_gate = false;
  std::vector<StrategyRow> rows;
  std::vector<BootstrapCi> cis;
  std::vector<BalancePoint> balance;
  std::vector<BatchSummary> batches;
  double decision_us_mean = 0, decision_us_p99 = 0;
};

double NgramOverlap(const std::vector<int64_t>& a, const std::vector<int64_t>& b, int n);

// Drops samples whose prompt the router was calibrated on (`dropped` counts them) and, when the
// router file has the calibration prompts, near-duplicates of them (`near_dropped`).
std::vector<Sample> DisjointFromCalibration(const Router& router, std::vector<Sample> samples,
                                            int* dropped, const OverlapOptions& overlap = {},
                                            int* near_dropped = nullptr);

// The router's reduced feature of `prompt` for the file's feature kind (block0: runs block 0).
absl::StatusOr<std::vector<float>> RouterFeature(const model::Engine& engine, const Router& router,
                                                 const std::vector<int64_t>& prompt);

// Evaluates `router` on `test` (which should be disjoint from calibration). Strategies in order:
// random, drop-deepest, best static, router: neighbours, [router: gate, router: both when the
// file has a gate], [prompt ceiling], [oracle when every admissible subset is enumerated].
absl::StatusOr<EvalReport> Evaluate(const model::Engine& engine, Router& router,
                                    const std::vector<Sample>& test, const EvalOptions& options);

// Markdown tables.
std::string FormatReport(const EvalReport& report);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_CALIBRATION_EVALUATE_H_
