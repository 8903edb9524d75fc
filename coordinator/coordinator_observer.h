// Hook points for the coordinator's metrics: the generation pipeline (pipeline.h) reports
// requests, tokens, steps and worker calls; the server (coordinator_server.h) reports readiness
// and the monitor's view of the workers. CoordinatorMetricsObserver (coordinator_metrics.h) feeds
// them to Prometheus; tests record them.
//
// Blocks: the per-block hooks speak of blocks of the coordinator's block layout
// (CoordinatorModel::block_layout(): the router's N-way split, or one block per layer without a
// router), the layout the per-block series follow. The pipeline computes a request's blocks once,
// when its plan is known, and passes the same vector to every step.
//
// Threading: called on request, gRPC and monitor threads; implementations must be thread-safe and
// cheap. Every method has a no-op default.
#ifndef SWARM_COORDINATOR_COORDINATOR_OBSERVER_H_
#define SWARM_COORDINATOR_COORDINATOR_OBSERVER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/block_layout.h"

namespace swarm::coordinator {

struct WorkerState;

class CoordinatorObserver {
 public:
  virtual ~CoordinatorObserver() = default;
  // `mode` is "exact", "sparse" or "other" (a request whose mode did not validate).
  virtual void OnRequestStart(absl::string_view /*mode*/) {}
  // A Generate call refused before it started (`code`: RESOURCE_EXHAUSTED when the request pool
  // is full, UNAVAILABLE while shutting down). Not paired with OnRequestStart.
  virtual void OnRequestRefused(absl::string_view /*mode*/, absl::StatusCode /*code*/) {}
  // `ttft_seconds` < 0 when no token was produced.
  virtual void OnRequestDone(absl::string_view /*mode*/, absl::StatusCode /*code*/,
                             int64_t /*prompt_tokens*/, int64_t /*generated_tokens*/,
                             double /*seconds*/, double /*ttft_seconds*/) {}
  virtual void OnInterToken(absl::string_view /*mode*/, double /*seconds*/) {}
  // One Forward to `worker` (its address), taking `seconds`.
  virtual void OnWorkerStep(absl::string_view /*worker*/, double /*seconds*/,
                            absl::StatusCode /*code*/) {}
  virtual void SetWorkerUp(absl::string_view /*worker*/, bool /*up*/) {}
  virtual void SetReady(bool /*ready*/) {}
  // Once per request, when its blocks are known: the blocks (of the coordinator's block layout,
  // sorted) each of its steps runs at least one layer of (exact mode: every block), and, when the
  // router chose them, the router's per-block tolls after that choice (else empty).
  virtual void OnBlocksChosen(absl::string_view /*mode*/, const std::vector<int>& /*blocks*/,
                              const std::vector<double>& /*router_tolls*/) {}
  // One forward step of a request completed over `blocks` (as given to OnBlocksChosen).
  virtual void OnStep(const std::vector<int>& /*blocks*/) {}
  // The workers as the monitor sees them after each refresh.
  virtual void OnWorkers(const std::vector<WorkerState>& /*workers*/) {}
  // One scheduler step (a micro-batch's hop or the whole batch's step): sequences and rows (tokens)
  // in it.
  virtual void OnBatchStep(int /*sequences*/, int64_t /*tokens*/) {}
  // A request admitted into the running batch after waiting `queued` in the scheduler's queue.
  virtual void OnAdmitted(absl::Duration /*queued*/) {}
  // The scheduler's occupancy now: requests running in the batch and requests waiting.
  virtual void OnSchedulerState(int /*running*/, int /*waiting*/) {}
  // Worker `worker` (WorkerSet index) spent `busy` computing a batch hop (wall time of the
  // Forward).
  virtual void OnWorkerBusy(int /*worker*/, absl::Duration /*busy*/) {}
  // A request's session on `worker` (its address) is being moved to another worker (scheduler.h's
  // fail-over); `reason` is "error", "deadline", "drain" or "down".
  virtual void OnFailover(absl::string_view /*reason*/, absl::string_view /*worker*/) {}
  // A fail-over replayed `positions` (rows × hops) of `bytes` of hidden states in `seconds`.
  virtual void OnReplay(int64_t /*positions*/, int64_t /*bytes*/, double /*seconds*/) {}
  // The bytes every request's replay history holds now.
  virtual void OnReplayHistory(int64_t /*bytes*/) {}
  // One balancing window of `swarm-coordinator --balance` (admission_balance.h): the sparse
  // requests routed together in it and what the congestion game found.
  struct BalanceWindow {
    int requests = 0;  // Routed together in this window.
    // Equilibrium gap of the previous window's choices (same k) at this window's prices, in
    // damage-scale units: the most any of those requests would now gain by changing blocks.
    // Non-zero while routing and load converge; 0 at equilibrium and for a k's first window.
    double gap = 0;
    // Equilibrium gap of this window's toll-free choices (each request routed alone, no load
    // tolls) at this window's prices.
    double gap_toll_free = 0;
    double worker_jain = 1;      // Jain's index of the usable workers' busy fractions.
    double worker_max_mean = 1;  // Their max / mean.
  };
  virtual void OnBalanceWindow(const BalanceWindow& /*window*/) {}
};

// The blocks of `layout` that `layers` (sorted, within the layout) touch, sorted. Layers outside
// [0, layout.num_layers) are ignored.
std::vector<int> BlocksTouched(const BlockLayout& layout, absl::Span<const int> layers);

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_COORDINATOR_OBSERVER_H_
