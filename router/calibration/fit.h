// The two fits of calibration, done with LibTorch inside fit.cc (this header is torch-free):
//  - FitPcaBasis: the PCA basis of the calibration features;
//  - FitGate: the optional MLP gate, trained on the measured damages with temperature-annealed
//    soft labels (the seed design's "router fine-tuning"; the LLM itself is never trained).
// Deterministic for a given seed. Called from calibration only; not thread-safe with other
// LibTorch users that change the global seed.
#ifndef SWARM_ROUTER_CALIBRATION_FIT_H_
#define SWARM_ROUTER_CALIBRATION_FIT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "router/router_file.h"

namespace swarm::router {

// Top-`rank` principal directions [rank, dim] (orthonormal rows, each with its largest-magnitude
// entry positive) of `centred` [rows, dim] (row-major, columns already mean-free).
absl::StatusOr<std::vector<float>> FitPcaBasis(const std::vector<float>& centred, int64_t rows,
                                               int64_t dim, int64_t rank);

// One softmax group of the gate's outputs.
struct GateGroup {
  std::vector<int> columns;   // Output columns forming the group.
  std::vector<float> values;  // [P, columns.size()]: damages (lower is better) or importances.
  bool lower_is_better = true;
  double scale = 1;  // Typical spread of values within a row (nats).
  int index = 0;     // Where its final temperature goes in gate_temperature.
};

struct GateFitOptions {
  int hidden = 32;
  int epochs = 400;
  double learning_rate = 1e-2;
  double weight_decay = 1e-4;
  // Label temperature, in units of each group's scale: annealed geometrically from t_start to
  // t_end over the epochs; soft labels are softmax(∓values / T).
  double t_start = 2.0;
  double t_end = 0.25;
  uint64_t seed = 0;
  // A trained checkpoint is kept only when its held-out score beats the untrained gate's by this
  // fraction.
  double min_improvement = 0.01;
  // Rows held out to pick the checkpoint; empty = every fifth row (from 10 rows up). Rows not
  // listed here are trained on.
  std::vector<int64_t> validation_rows;
};

struct GateFitStats {
  int train_rows = 0, validation_rows = 0;
  int best_epoch = 0;      // 0 = the untrained gate (the static prior) was kept.
  double start_score = 0;  // Held-out score of the untrained gate (lower is better).
  double best_score = 0;   // ... and of the kept checkpoint.
};

// Fits logits = MLP(features) with Σ_groups cross-entropy against the soft labels. The output
// bias starts at the static prior's logits (so an untrained gate is the best static choice) and
// the checkpoint kept is the one that does best on the held-out rows (options.validation_rows):
// realised damage of its choice relative to the static choice for damage groups.
// `features` is [P, in]. Writes the final temperature (nats) of each group into
// temperatures[group.index]. InvalidArgument for empty data or mismatched sizes.
absl::StatusOr<GateWeights> FitGate(const std::vector<float>& features, int64_t num_prompts,
                                    int64_t in, int64_t out, const std::vector<GateGroup>& groups,
                                    const GateFitOptions& options, std::vector<float>* temperatures,
                                    GateFitStats* stats = nullptr);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_CALIBRATION_FIT_H_
