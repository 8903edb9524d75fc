// The Parisi-Nash router: given only a prompt's token ids, choose which top_k of the N blocks a
// sparse request runs, in well under a millisecond, without running any block.
//
//  - Parisi (scoring): the prompt's feature (features.h) aligns with its K nearest calibration
//    prompts — a fixed number of neighbours (K = 7 by default), not a radius — whose measured
//    damages are averaged and blended with the static prior (the calibration mean) with the
//    weight β_k chosen by leave-one-out at calibration. An optional MLP gate, fitted on the same
//    damages with temperature-annealed soft labels, gives a second estimate; "both" averages
//    them.
//  - Nash (load): per-block tolls (TollBook) that move toward target usage shares as requests are
//    routed, and BalanceBatch, which lets requests arriving together best-respond to each other
//    on a congestion game until equilibrium (balance.h).
//
// Callers: the coordinator (Load at start-up, Route/Predict per request, BalanceBatch for a batch
// of concurrent requests), `swarm eval`, the benchmarks. The header is torch-free.
//
// Threading: Load/Create are one-shot. Predict, Score, Features and BalanceBatch are const and
// safe to call concurrently; Route, Observe and the toll accessors take an internal mutex.
#ifndef SWARM_ROUTER_ROUTER_H_
#define SWARM_ROUTER_ROUTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_set.h"
#include "model/checkpoint.h"
#include "router/balance.h"
#include "router/features.h"
#include "router/router_file.h"

namespace swarm::router {

enum class Scoring {
  kStatic,      // The calibration mean only: one subset for every prompt ("best static").
  kNeighbours,  // K nearest calibration prompts blended with the static prior.
  kGate,        // The MLP gate only.
  kBoth,        // Average of the neighbours' and the gate's estimates.
  kDefault,     // kBoth when the file has a gate, kNeighbours otherwise.
};
const char* ScoringName(Scoring scoring);
absl::StatusOr<Scoring> ParseScoring(absl::string_view name);

struct Prediction {
  std::vector<int> blocks;     // Sorted block indices, top_k of them.
  std::vector<float> weights;  // One per block: the gate g (sequential) or w (parallel) to use.
                               // 1.0, the value the damages were calibrated with.
  double expected_kl = 0;      // The scorer's damage estimate for this choice (nats per token).
  double toll = 0;             // Sum of the tolls of the chosen blocks when tolls applied.
  std::string basis;           // "subsets" (explicit damages) or "blocks" (additive skip damages).
};

struct RouterOptions {
  // When > 0, the router file must have been calibrated for this many blocks.
  int expected_num_blocks = 0;
  // Neighbours K; 0 = the file's value (7 by default).
  int neighbours = 0;
  TollOptions tolls;
  // Accept a file calibrated on the block0 feature. Its prompts' features need block 0's output,
  // which Features() cannot compute: only callers that run block 0 themselves (swarm eval) set
  // this; serving refuses such a file at load with a clear error.
  bool allow_block0_feature = false;
};

struct PredictOptions {
  Scoring scoring = Scoring::kDefault;
  bool use_tolls = false;  // Add the current per-block tolls to the costs.
  // Per-block costs from outside the router [N] (KL nats; empty = none), added to the costs.
  std::vector<double> extra_costs;
};

struct BatchOptions {
  Scoring scoring = Scoring::kDefault;
  bool use_tolls = false;
  // Congestion cost per request on a block, in units of the k's damage scale.
  double congestion = 0.5;
  // First soft round's temperature in units of the damage scale (0 = pure best response only).
  double t_start = 1.0;
  int anneal_rounds = 6;
  int max_rounds = 200;
  uint64_t seed = 0;
  bool observe = false;  // Feed the final choices to the tolls.
  // Per-block costs from outside the router [N] (KL nats; empty = none), added to the tolls:
  // the coordinator's load tolls (coordinator/admission_balance.h).
  std::vector<double> extra_costs;
  // The resource each block loads (GameOptions::resource; empty = each block its own).
  std::vector<int> resource;
};

struct BatchResult {
  std::vector<Prediction> predictions;
  GameResult game;
  double mean_expected_kl = 0;        // Of the equilibrium choices.
  double mean_expected_kl_alone = 0;  // Of each request's choice without congestion.
  double jain_alone = 1;              // Usage balance without congestion.
  // The largest gain any request could get by leaving its choice without congestion (each
  // request's toll-free, congestion-free best) for its best response in the game's final costs:
  // how far routing each request alone would have been from the equilibrium (0 when nothing is
  // congested). In KL nats.
  double gap_alone = 0;
  // What the game was played on, so that its choices can be priced again later
  // (EquilibriumGap): each request's candidates, the tolls (the router's plus extra_costs, [N],
  // may be empty) and the game's options in KL nats.
  std::vector<Candidates> requests;
  std::vector<double> tolls;
  GameOptions game_options;
};

class Router {
 public:
  // Reads `path` and binds it to `checkpoint`. FailedPrecondition when the file was calibrated
  // for another model (fingerprint) or another N; InvalidArgument for a malformed file.
  static absl::StatusOr<std::unique_ptr<Router>> Load(
      const std::string& path, std::shared_ptr<const model::Checkpoint> checkpoint,
      const RouterOptions& options = {});
  // Same from data already in memory (calibration, tests).
  static absl::StatusOr<std::unique_ptr<Router>> Create(
      RouterData data, std::shared_ptr<const model::Checkpoint> checkpoint,
      const RouterOptions& options = {});

  int num_blocks() const { return data_.num_blocks; }
  BlockMask keep_mask() const { return data_.keep; }
  std::vector<int> keep_blocks() const { return MaskToBlocks(data_.keep); }
  bool has_gate() const { return data_.gate.has_value(); }
  int neighbours() const { return neighbours_; }
  const RouterData& data() const { return data_; }
  // Typical spread of damages between choices of size top_k (KL nats), the unit of tolls.
  double DamageScale(int top_k) const;
  // True when every admissible subset of size top_k has measured damages in the file.
  bool HasSubsets(int top_k) const;
  // True when the file has measured damages for some subsets of size top_k (all of them, or a
  // candidate list); Score then chooses among those, otherwise by additive skip damages.
  bool HasCandidates(int top_k) const;

  // The prompt's reduced feature [r] (the embedding feature; FailedPrecondition for a block0
  // router file: project block 0's output with ProjectFeature instead).
  absl::StatusOr<std::vector<float>> Features(absl::Span<const int64_t> prompt_ids) const;
  // Candidates for top_k under `scoring` (InvalidArgument for a bad top_k, FailedPrecondition
  // for kGate/kBoth without a gate). `exclude` (≥ 0) leaves one calibration prompt out of the
  // neighbours (leave-one-out studies).
  absl::StatusOr<Candidates> Score(absl::Span<const float> feature, int top_k, Scoring scoring,
                                   int exclude = -1) const;
  // Chooses blocks for one prompt. Does not change the tolls.
  absl::StatusOr<Prediction> Predict(absl::Span<const int64_t> prompt_ids, int top_k,
                                     const PredictOptions& options = {}) const;
  // Predict with the current tolls, then Observe the choice: what a serving path calls.
  absl::StatusOr<Prediction> Route(absl::Span<const int64_t> prompt_ids, int top_k,
                                   Scoring scoring = Scoring::kDefault);
  // Requests that arrive together, balanced by best-response rounds on the congestion game.
  absl::StatusOr<BatchResult> BalanceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                           int top_k, const BatchOptions& options);

  // Toll state.
  void Observe(const Prediction& prediction);
  std::vector<double> Tolls() const;
  // Per-block requests so far, Jain's index and max/mean of usage relative to the target shares
  // over the free blocks.
  struct UsageStats {
    int64_t requests = 0;
    std::vector<double> usage;
    std::vector<double> tolls;
    double jain = 1;
    double max_over_mean = 1;
  };
  UsageStats Usage() const;
  void ResetTolls();
  void SetTollOptions(const TollOptions& options);

  // Builds a Prediction from a chosen mask.
  Prediction MakePrediction(const Choice& choice, const Candidates& candidates,
                            absl::Span<const double> tolls) const;

 private:
  Router(RouterData data, std::unique_ptr<EmbeddingTable> table, const RouterOptions& options);
  Scoring Resolve(Scoring scoring) const;
  // Indices of the calibration prompts nearest to `feature` (at most K).
  std::vector<int> Neighbours(absl::Span<const float> feature, int exclude) const;

  RouterData data_;
  std::unique_ptr<EmbeddingTable> table_;
  int neighbours_;
  // Subset indices per k (size N + 1).
  std::vector<std::vector<int>> groups_;

  mutable absl::Mutex mu_;
  TollBook tolls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace swarm::router

#endif  // SWARM_ROUTER_ROUTER_H_
