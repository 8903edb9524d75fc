// Calibration, not training: `swarm calibrate`. Runs the exact model on a calibration prompt set
// (user text, or prompts sampled from the model itself with fixed seeds), measures for every
// prompt the damage — mean KL(full ‖ sparse) per continuation token — of each admissible block
// subset (or only of skipping each block, when subsets are too many), and fits the router's
// feature space (IDF, PCA), static prior, leave-one-out prior blend and optional MLP gate.
// The LLM is never trained.
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
  int max_subsets_per_k = 128;
  int max_subsets_total = 512;
  int pca_rank = 16;
  int neighbours = kDefaultNeighbours;
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
};

struct CalibrationReport {
  int num_prompts = 0;
  int num_subsets = 0;
  double measure_seconds = 0;
  double fit_seconds = 0;
  std::vector<LooSummary> loo;
};

// Calibrates on `samples`. InvalidArgument for an empty set, a bad N, k or kept block.
absl::StatusOr<RouterData> Calibrate(const model::Engine& engine,
                                     const std::vector<Sample>& samples,
                                     const CalibrationOptions& options,
                                     CalibrationReport* report = nullptr);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_CALIBRATION_CALIBRATE_H_
