// Load balancing of sparse requests in serving (`swarm-coordinator --balance`): the Nash side of
// the Parisi-Nash router, driven by the cluster's measured load instead of abstract block shares.
//
// Off by default: then every sparse request gets the router's toll-free choice
// (router::Router::Predict), the one `swarm eval` measures. On:
//  - Load tolls. Each worker's load is its busy fraction over the scheduler's window
//    (SchedulerStats), or, before any busy time is measured, its share of the requests planned
//    through it (WorkerSet's queue). A worker's pressure is how much busier it is than the mean
//    of the usable workers, as a share of the mean's idle headroom: (load − mean) / (1 − mean),
//    clamped to 0..1; a block's pressure is, over its layers, the highest of the least pressed
//    worker hosting each layer (the planner sends a request to the least loaded replica). The
//    toll of block b is cap × damage scale(k) × min(1, gain × pressure_b): capped, and 0 on every
//    block unless a worker is busier than the rest.
//  - The congestion game per window. Sparse requests of one top_k that arrive within `window` of
//    the first are routed together by router::Router::BalanceBatch: best responses on the load
//    tolls plus a congestion cost per other request of the window on the same workers (blocks
//    hosted by the same set of workers share one resource: BlockResources), congestion × damage
//    scale × the highest block drive min(1, gain × pressure) (so requests spread only while some
//    worker is congested, and only across workers: moving between two blocks of one worker
//    gains nothing).
//  - The gaps. Each window's game ends at its own equilibrium, but the load it is priced on moves
//    with the choices, and the busy fractions show a choice's load only over the following busy
//    window: routing is at equilibrium once the choices that made the load measured now are still
//    best responses at it. So each window reports the equilibrium gap of the routing: the largest
//    over the earlier windows of its k routed within `gap_horizon` (the busy window; always the
//    previous one) of their gap at this window's prices (router::EquilibriumGap with this window's
//    tolls and congestion: the most any of those requests would now gain by changing blocks) —
//    non-zero while routing and load converge, 0 once they have; the gap of this window's
//    toll-free choices at its prices; and Jain's index and max/mean of the workers' busy
//    fractions (CoordinatorObserver::OnBalanceWindow).
//
// Threading: Route is called by any number of request threads. The first request of a window
// waits `window` (or until max_window_requests have joined), solves the game for all of them on
// its own thread and hands each its choice; no thread is started. Everything else is thread-safe.
#ifndef SWARM_COORDINATOR_ADMISSION_BALANCE_H_
#define SWARM_COORDINATOR_ADMISSION_BALANCE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/block_layout.h"
#include "coordinator/coordinator_observer.h"
#include "router/router.h"

namespace swarm::coordinator {

struct BalanceOptions {
  bool enabled = false;  // --balance.
  // |load toll| ≤ toll_cap × the router's damage scale of the request's k (--balance-cap).
  double toll_cap = 1.0;
  // Congestion per request sharing a block in one window, in damage-scale units, at full
  // pressure (--balance-congestion).
  double congestion = 0.5;
  absl::Duration window = absl::Milliseconds(2);  // --balance-window; 0 = every request alone.
  // A block's drive is min(1, gain × pressure): tolls reach the cap once the block's workers are
  // 1/gain of the mean's headroom busier than the mean. (Defaults: the best of caps 0.5, 1,
  // gains 1-8 and congestion 0.5, 1 on the simulated cluster of admission_balance_test.)
  // --balance-gain.
  double gain = 4;
  int max_window_requests = 64;
  // The windows whose choices the equilibrium gap prices again: those routed within this of the
  // new one (at most AdmissionBalancer::kGapRequests requests in all), and always the previous
  // one. The coordinator sets it to its busy window (SchedulerStats).
  absl::Duration gap_horizon = absl::Seconds(10);
  std::function<absl::Time()> clock;  // Null: absl::Now (tests step a clock of their own).
};

// What the balancer knows of one worker.
struct WorkerLoad {
  std::vector<int> layers;  // Hosted, sorted.
  bool usable = false;
  double busy_fraction = 0;  // Over the scheduler's window, 0..1.
  int queued = 0;            // Requests planned through it now.
};

// Per-worker pressure 0..1 (see the file comment); unusable workers 0.
std::vector<double> WorkerPressure(const std::vector<WorkerLoad>& workers);
// Per-block pressure 0..1 of `layout`'s blocks.
std::vector<double> BlockPressure(const BlockLayout& layout,
                                  const std::vector<WorkerLoad>& workers);
// The congestion game's resource of each block (router::GameOptions::resource): blocks whose
// layers the same set of usable workers hosts share one (the lowest such block's index).
std::vector<int> BlockResources(const BlockLayout& layout, const std::vector<WorkerLoad>& workers);

class AdmissionBalancer {
 public:
  // `router` (not owned) must outlive the balancer; `load` gives the workers' load now;
  // `observer` (not owned, may be null) receives OnBalanceWindow.
  AdmissionBalancer(router::Router* router, int num_layers, BalanceOptions options,
                    std::function<std::vector<WorkerLoad>()> load, CoordinatorObserver* observer);

  // The blocks one sparse request runs, routed with the others of its window. Errors: the
  // router's (a bad top_k, a prompt it cannot featurise).
  absl::StatusOr<router::Prediction> Route(const std::vector<int64_t>& prompt_ids, int top_k);

  // One window's game on `prompts` (Route's work once the window closes; tests call it directly).
  absl::StatusOr<std::vector<router::Prediction>> RouteWindow(
      const std::vector<std::vector<int64_t>>& prompts, int top_k);

  // The load tolls of now for top_k [N] (KL nats).
  std::vector<double> LoadTolls(int top_k) const;

  const BalanceOptions& options() const { return options_; }

 private:
  // Per block: min(1, gain × pressure) under `loads`.
  std::vector<double> Drive(const std::vector<WorkerLoad>& loads) const;
  struct Slot {
    std::vector<int64_t> prompt_ids;
    bool done = false;
    absl::StatusOr<router::Prediction> result = absl::UnknownError("not routed");
  };

  router::Router* const router_;
  const BalanceOptions options_;
  BlockLayout layout_;
  const std::function<std::vector<WorkerLoad>()> load_;
  CoordinatorObserver* const observer_;

  absl::Mutex mu_;
  absl::CondVar cv_;
  // The open window of each top_k.
  std::map<int, std::vector<std::shared_ptr<Slot>>> open_ ABSL_GUARDED_BY(mu_);
  // With an observer: the windows of each top_k routed within gap_horizon, oldest first: when, and
  // their requests' candidates and choices.
  struct Routed {
    absl::Time at;
    std::vector<router::Candidates> requests;
    std::vector<BlockMask> masks;
  };
  // Requests the gap prices again at most (its cost per window: these × their candidates).
  static constexpr size_t kGapRequests = 256;
  std::map<int, std::deque<std::shared_ptr<const Routed>>> recent_ ABSL_GUARDED_BY(mu_);
  uint64_t windows_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_ADMISSION_BALANCE_H_
