// Calibration, not training: `swarm calibrate`. Runs the exact model on a calibration prompt set
// (user text, or prompts sampled from the model itself with fixed seeds), measures for every
// prompt the damage — mean KL(full ‖ sparse) per continuation token — of each admissible block
// subset, and fits the router's feature space (IDF, PCA), static prior, leave-one-out prior blend
// and optional MLP gate. The LLM is never trained.
//
// When a k has too many subsets to enumerate, the additive model (per-block skip damages, always
// measured) proposes candidates and measurement corrects it: a beam search over subsets (backward
// elimination from the full model or forward selection from the kept blocks, whichever needs
// fewer steps, each step scored by running the candidates on calibration prompts) finds the
// strongest static subsets; they, the additive model's static choice, drop-
// deepest and the most common per-prompt additive choices are measured on every calibration
// prompt and stored as that k's candidate list. The router then chooses among measured subsets,
// and "best static" is the strongest measured one, not the additive model's guess.
//
// Features: the embedding mean (what serving computes) or block0 (block 0's output); "auto"
// computes both and keeps the one whose leave-one-out router KL is lower (ties: embedding).
//
// Called by the CLI, tests and benchmarks. Runs on the caller's thread; the Engine is only read.
#ifndef SWARM_ROUTER_CALIBRATION_CALIBRATE_H_
#define SWARM_ROUTER_CALIBRATION_CALIBRATE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/generate.h"
#include "router/calibration/fit.h"
#include "router/calibration/probe.h"
#include "router/router_file.h"

namespace swarm::router {

struct CalibrationOptions {
  int num_blocks = 0;
  // Blocks every request keeps; `default_keep` = first and last.
  bool default_keep = true;
  std::vector<int> keep_blocks;
  // 0 = measure subsets for every k whose admissible subsets number at most max_subsets_per_k;
  // otherwise only for this k (validated against N and the kept blocks).
  int top_k = 0;
  // When non-empty: exactly these k (top_k is ignored).
  std::vector<int> top_ks;
  int max_subsets_per_k = 128;
  int max_subsets_total = 512;
  int pca_rank = 16;
  int neighbours = kDefaultNeighbours;
  // Strongest-static search where a k is not enumerated: beam width (0 = off: additive skip
  // damages only), calibration prompts scoring each step, per-prompt additive proposals kept.
  int search_beam = 4;
  int search_prompts = 64;
  int proposals_per_k = 8;
  // kFeatureEmbedding, kFeatureBlock0 or "auto".
  std::string feature = kFeatureEmbedding;
  bool fit_gate = false;
  GateFitOptions gate;
  // Written to the file for provenance.
  uint64_t seed = 0;
  std::string prompt_source = "sampled";
  // Progress lines (may be null).
  std::function<void(const std::string&)> log;
  // Called after each calibration prompt is measured with (done, total) (may be null; when set,
  // it replaces the periodic "p/P prompts" log lines).
  std::function<void(int done, int total)> progress;
};

// Leave-one-out summary per calibrated k, over the calibration prompts that occur once (each
// left out with its own data; all prompts when too few are unique).
struct LooSummary {
  int top_k = 0;
  double blend = 1;               // Chosen prior weight β.
  double static_kl = 0;           // Mean damage of the best static subset (in-sample).
  double router_kl = 0;           // Mean damage of the router's choice, each prompt left out.
  double neighbours_only_kl = 0;  // Same with β = 0.
  double oracle_kl = 0;           // Mean of each prompt's best subset.
  bool additive = false;          // Damages approximated by summed skip damages.
  int candidates = 0;             // Measured subsets of this k (all admissible, or the list).
  bool enumerated = false;        // candidates = every admissible subset.
  // Mean over queries of the Pearson correlation, across subsets (or blocks), between a prompt's
  // damages and its neighbours' mean damages, both centred on the static prior: how much the
  // feature's neighbours share the prompt's damage pattern.
  double correlation = 0;
};

struct CalibrationReport {
  int num_prompts = 0;
  int num_subsets = 0;
  double measure_seconds = 0;
  double fit_seconds = 0;
  double search_seconds = 0;    // Part of measure_seconds spent on the strongest-static search.
  std::string feature;          // The feature written to the file.
  std::vector<LooSummary> loo;  // For that feature.
  // Every feature studied (one entry, or two with "auto"), with its leave-one-out summaries.
  std::vector<std::pair<std::string, std::vector<LooSummary>>> feature_loo;
};

// Calibrates on `samples`. InvalidArgument for an empty set, a bad N, k or kept block.
absl::StatusOr<RouterData> Calibrate(const model::Engine& engine,
                                     const std::vector<Sample>& samples,
                                     const CalibrationOptions& options,
                                     CalibrationReport* report = nullptr);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_CALIBRATION_CALIBRATE_H_
