// The Nash side of the router: what a request may choose, what it costs, and how concurrent
// requests and a stream of requests share the blocks.
//
//  - Candidates: one request's options for one k, either explicit admissible subsets with an
//    estimated damage each, or (when subsets are too many) an additive form where skipping free
//    block b costs importance[b].
//  - ChooseBest: the cheapest option given per-block extra costs (tolls, congestion).
//  - SolveCongestionGame: requests that arrive together each pick a subset; every request on a
//    block pays `congestion` per request using it (including itself). This is a congestion game
//    with player-specific base costs, an exact potential game (Rosenthal's potential
//    Σ base + Σ_b [toll_b·n_b + congestion·n_b(n_b+1)/2]), so best-response rounds strictly lower
//    the potential and terminate. A few soft (Gumbel-perturbed) rounds with an annealed
//    temperature come first to leave poor starting points; then pure best responses until nobody
//    improves. Reports the equilibrium gap (largest gain any request could still get by
//    deviating; 0 at a Nash equilibrium) and the usage balance. Blocks may share a resource
//    (GameOptions::resource: the blocks one group of workers hosts); a request choosing two free
//    blocks of one resource is then charged as if each were its only use there, so the potential
//    is approximate and max_rounds bounds the best responses.
//  - TollBook: per-block tolls that move toward target usage shares as requests are routed
//    (bias-style balancing as in auxiliary-loss-free MoE load balancing: no gradient, a toll
//    rises on a block used more than its share and falls otherwise).
// Everything here is plain computation on values; TollBook is not synchronised (Router wraps it
// in a mutex).
#ifndef SWARM_ROUTER_BALANCE_H_
#define SWARM_ROUTER_BALANCE_H_

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "common/block_set.h"

namespace swarm::router {

struct Candidates {
  int num_blocks = 0;
  int top_k = 0;
  BlockMask keep = 0;
  // Explicit form.
  std::vector<BlockMask> masks;
  std::vector<double> cost;  // Estimated damage (KL nats) of each mask.
  // Additive form (masks empty): damage(s) ≈ Σ importance[b] over free blocks b not in s.
  std::vector<double> importance;  // [N]

  bool additive() const { return masks.empty(); }
};

struct Choice {
  BlockMask mask = 0;
  double base_cost = 0;   // Estimated damage, without extra costs.
  double total_cost = 0;  // base_cost + Σ_{b ∈ mask} extra[b].
};

// Estimated damage of `mask` (which must be a candidate in the explicit form).
double BaseCost(const Candidates& c, BlockMask mask);
// Cheapest option; `extra` is [N] (may be empty = zeros). Ties: the first mask / lowest blocks.
Choice ChooseBest(const Candidates& c, absl::Span<const double> extra);
// A draw from softmax(−total / temperature) (explicit form) or a Gumbel-top-k draw (additive).
Choice ChooseSoft(const Candidates& c, absl::Span<const double> extra, double temperature,
                  std::mt19937_64& rng);

// Jain's fairness index (Σx)² / (n Σx²): 1 when all equal, 1/n when one takes everything.
// 1 for an empty or all-zero input.
double JainIndex(absl::Span<const double> x);
// max(x) / mean(x); 1 for an empty or all-zero input.
double MaxOverMean(absl::Span<const double> x);

// The most common mask of `masks` (ties: the lowest mask); 0 for an empty input.
BlockMask MostCommon(absl::Span<const BlockMask> masks);
// eval's skewed request stream (swarm eval's toll curve, the balancing tests, balance_bench):
// `length` draws of indices into `choices` (each prompt's toll-free choice), a prompt whose
// choice is the most common one `skew` times likelier than any other. Deterministic in `seed`
// (std::mt19937_64). Empty when `choices` is.
std::vector<int> SkewedStream(absl::Span<const BlockMask> choices, double skew, uint64_t seed,
                              size_t length);

struct GameOptions {
  double congestion = 0;  // Cost per request on a block (KL nats).
  // The resource each block loads [N] (ids in 0..N−1; empty = each block its own): requests
  // congest each other on a resource, i.e. the congestion cost of a free block counts every use
  // of any free block of its resource (the blocks one group of workers hosts).
  std::vector<int> resource;
  double t_start = 0;     // First soft round's temperature (KL nats); 0 = no soft rounds.
  int anneal_rounds = 6;  // Soft rounds, temperature halving each round.
  int max_rounds = 200;   // Cap on pure best-response rounds.
  uint64_t seed = 0;
};

struct GameResult {
  std::vector<Choice> choices;  // One per request; total_cost is its cost at the end.
  int rounds = 0;               // Pure best-response rounds run.
  bool converged = false;       // A round ended with nobody moving.
  double equilibrium_gap = 0;   // max over requests of (cost − best-response cost), ≥ 0.
  double potential = 0;
  std::vector<double> usage;  // [N] requests per block.
  double jain = 1;            // Over the free blocks' usage.
  double max_over_mean = 1;
};

// The equilibrium gap of the profile where request r chooses masks[r] (one per request, each
// a candidate of its request): max over requests of (its cost − its best-response cost, the
// others staying). 0 at a Nash equilibrium and for a lone request at its best response.
double EquilibriumGap(const std::vector<Candidates>& requests, const std::vector<BlockMask>& masks,
                      absl::Span<const double> tolls, const GameOptions& options);

// `tolls` is [N] (may be empty). All candidates must share num_blocks and keep.
GameResult SolveCongestionGame(const std::vector<Candidates>& requests,
                               absl::Span<const double> tolls, const GameOptions& options);

struct TollOptions {
  // Step per routed request, in units of the damage scale of the request's k: the toll of block
  // b moves by rate·scale·(used − target share).
  double rate = 0.05;
  // |toll| ≤ max_toll·scale (infinity = unbounded).
  double max_toll = std::numeric_limits<double>::infinity();
  // Target share of the free slots per block [N] (non-negative, normalised over free blocks);
  // empty = equal shares.
  std::vector<double> target_shares;
};

class TollBook {
 public:
  TollBook(int num_blocks, BlockMask keep, TollOptions options);

  const std::vector<double>& tolls() const { return tolls_; }  // [N], KL nats.
  const TollOptions& options() const { return options_; }
  // Records a routed request of size top_k that chose `mask`; `scale` is the damage scale of
  // its k (KL nats).
  void Observe(BlockMask mask, int top_k, double scale);
  // Requests per block so far [N] and the target counts for the same requests [N].
  const std::vector<double>& usage() const { return usage_; }
  const std::vector<double>& target() const { return target_; }
  int64_t requests() const { return requests_; }
  // Jain's index and max/mean of usage relative to target over the free blocks.
  double Jain() const;
  double MaxOverMean() const;
  void Reset();

 private:
  std::vector<double> RelativeUsage() const;
  int num_blocks_;
  BlockMask keep_;
  TollOptions options_;
  std::vector<double> shares_;  // [N], normalised over free blocks.
  std::vector<double> tolls_;
  std::vector<double> usage_;
  std::vector<double> target_;
  int64_t requests_ = 0;
};

}  // namespace swarm::router

#endif  // SWARM_ROUTER_BALANCE_H_
