// Typed Prometheus metric sets for swarm-worker (WorkerMetrics) and swarm-coordinator
// (CoordinatorMetrics), and the load-balance figures they export (Jain's index, max/mean).
//
// Callers: the worker's and coordinator's servers create one set per process at start-up, pass
// registry() to MetricsServer (common/metrics_server.h) for `--metrics-listen`, and call the small
// On*/Set* methods from their request paths. docs/metrics.md lists every metric; the Grafana
// dashboard and the Prometheus rules in deploy/ use these names, and tests/common checks that every
// name they query is exported here.
//
// Naming: swarm_<component>_<quantity>_<unit>; counters end in _total; base units (seconds, bytes,
// ratio); histograms, not summaries. Labels are bounded: every label value is either fixed at
// Create() (blocks 0..N-1, the worker addresses, the hosted layer ranges), one of a small closed
// set (mode: exact|sparse|other; code: the 17 absl/gRPC status codes in snake case), or folded
// into "other".
//
// Threading: every method is thread-safe and cheap enough for the per-token path (series used per
// step are created once at Create(); updates are atomic adds). prometheus-cpp stays out of this
// header: it is only forward-declared for registry().
#ifndef SWARM_COMMON_METRICS_H_
#define SWARM_COMMON_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace swarm::common {

// Jain's fairness index of a load vector, (Σx)² / (n·Σx²): 1 when every entry is equal, 1/n when
// one entry carries everything. 1 for an empty or all-zero vector (nothing to be unfair about).
// Negative entries are treated as 0.
double JainIndex(absl::Span<const double> loads);
double JainIndex(absl::Span<const int64_t> counts);

// max/mean of a load vector: 1 when balanced, n when one entry carries everything. 1 for an empty
// or all-zero vector. Negative entries are treated as 0.
double MaxMeanRatio(absl::Span<const double> loads);
double MaxMeanRatio(absl::Span<const int64_t> counts);

// The `code` label value of a status code: "ok", "cancelled", "invalid_argument",
// "resource_exhausted", ... (snake case of the gRPC code name; gRPC and absl codes agree).
std::string StatusCodeLabel(absl::StatusCode code);

// The `mode` label value: "exact" or "sparse" as given (case-sensitive), anything else "other".
absl::string_view ModeLabel(absl::string_view mode);

// Metrics of one swarm-worker process (prefix swarm_worker_).
class WorkerMetrics {
 public:
  struct Options {
    // The layers this worker hosts, sorted and unique (at least one). Each run of consecutive
    // layers becomes a `layers` label value "A-B" (inclusive), e.g. {0,1,2,3,6,7} → "0-3", "6-7".
    std::vector<int> layers;
    std::string model;           // swarm_worker_info{model}: the model's name or directory.
    std::string device = "cpu";  // swarm_worker_info{device}
    std::string dtype = "f32";   // swarm_worker_info{dtype}
    // Register onto this registry instead of a new one (e.g. a test hosting both sets).
    std::shared_ptr<prometheus::Registry> registry;
  };

  // InvalidArgument when no layer is given or the layers are not sorted, unique and >= 0.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Create(const Options& options);
  ~WorkerMetrics();

  // The registry to serve on /metrics.
  std::shared_ptr<prometheus::Registry> registry() const;

  // One Forward RPC whose first layer is `first_layer`, over `tokens` positions, taking
  // `seconds`. OK: counts a step and its tokens and observes the latency under the hosted range
  // that contains first_layer (a step over any layers of a range counts under that range; a layer
  // not hosted, or -1, under layers="other"). Not OK: counts
  // swarm_worker_errors_total{method="Forward",code} only.
  void OnForward(int first_layer, double seconds, absl::StatusCode code, int64_t tokens = 1);
  // A failed RPC other than Forward: `method` is the RPC's short name ("OpenSession", "Info",
  // ...); names outside the WorkerService's methods are folded into "other".
  void OnError(absl::string_view method, absl::StatusCode code);

  void SetReady(bool ready);                 // 1 once the hosted layers are loaded (SERVING).
  void SetDraining(bool draining);           // 1 once the worker drains (SIGTERM).
  void SetActiveSessions(int64_t sessions);  // Open sessions (KV caches held).
  void SetKvCacheBytes(int64_t bytes);       // Bytes held by KV caches now.
  // Bytes reserved by open sessions (max_length x bytes per position each): what the budget
  // counts when it refuses a session.
  void SetKvCacheReservedBytes(int64_t bytes);
  void SetKvCacheBudgetBytes(int64_t bytes);  // The KV memory budget (0 = unlimited).
  // A session the worker dropped on its own. reason: "idle_ttl" or "lease" (its coordinator stopped
  // renewing it; the worker never evicts for the budget: it refuses instead); other identifiers
  // are kept, anything else is "other".
  void OnSessionEvicted(absl::string_view reason);
  // Residency (a worker that pages blocks in and out of device memory).
  // Blocks resident now and their weight bytes.
  void SetBlocksResident(int64_t blocks, int64_t bytes = 0);
  void OnBlockLoad(double seconds);  // One block loaded onto the device, taking `seconds`.
  void OnBlockEviction();            // One block dropped from the device.
  void OnBlockHit();                 // A block use (step or prefetch) found it resident.
  // Batching. One pass through the layers (a Forward, or a ForwardBatch of several sessions'
  // steps) that computed `sequences` steps of `rows` rows in all.
  void OnBatch(int64_t sequences, int64_t rows);
  // `seconds` more of wall time during which at least one pass was computing (counted once
  // however many passes overlap, so its rate is the busy fraction, 0..1).
  void AddBusySeconds(double seconds);
  // Bytes held by streamed calls whose request is still arriving changed by `delta`.
  void AddStreamBufferedBytes(int64_t delta);

 private:
  struct Impl;
  explicit WorkerMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Metrics of one swarm-coordinator process (prefix swarm_coordinator_).
class CoordinatorMetrics {
 public:
  struct Options {
    int num_blocks = 0;                // Blocks 0..N-1 get per-block series. Required (> 0).
    std::vector<std::string> workers;  // Worker addresses as given to --workers: `worker` labels.
    std::string model;                 // swarm_coordinator_info{model}
    std::shared_ptr<prometheus::Registry> registry;  // As in WorkerMetrics::Options.
  };

  // InvalidArgument when num_blocks <= 0 or a worker address is empty or repeated.
  static absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> Create(const Options& options);
  ~CoordinatorMetrics();

  std::shared_ptr<prometheus::Registry> registry() const;

  // --- Requests. `mode` is "exact" or "sparse" (see ModeLabel).
  // A Generate call was accepted: swarm_coordinator_active_requests += 1. Pair with
  // OnRequestDone.
  void OnRequestStart(absl::string_view mode);
  // A Generate call finished with `outcome` (OK, CANCELLED, DEADLINE_EXCEEDED, ...):
  // active_requests -= 1, requests_total{mode,outcome} += 1, token counters += the counts, and the
  // request latency is observed. `time_to_first_token_seconds` < 0 means no token was produced
  // (not observed).
  void OnRequestDone(absl::string_view mode, absl::StatusCode outcome, int64_t prompt_tokens,
                     int64_t generated_tokens, double seconds, double time_to_first_token_seconds);
  // A Generate call refused before it started (pool full, shutting down): requests_total{mode,
  // outcome} += 1 only (it was never active and produced nothing).
  void OnRequestRefused(absl::string_view mode, absl::StatusCode outcome);
  // The gap between two consecutive streamed tokens of one request.
  void OnInterToken(absl::string_view mode, double seconds);

  // --- Block load. Block indices outside [0, num_blocks) are ignored.
  // The router chose `blocks` for one request: block_selections_total{block} += 1 each.
  void OnBlocksSelected(absl::Span<const int> blocks);
  // `steps` forward steps ran on each of `blocks` (exact mode: every block, every step).
  void OnBlockSteps(absl::Span<const int> blocks, int64_t steps = 1);
  // Current load per block (the router's load estimate; entry b is block b; extra entries are
  // ignored): sets block_load_share_ratio{block} = load_b / Σload, and the Jain and max/mean
  // gauges from the same vector.
  void SetBlockLoads(absl::Span<const double> loads);
  // Sets the balance gauges directly: Jain's index, max/mean and the router's equilibrium gap.
  void SetBalance(double jain, double max_mean, double equilibrium_gap);
  // One balancing window of `--balance` (coordinator/admission_balance.h): `requests` routed
  // together; the equilibrium gap of the previous window's choices at this window's prices and
  // that of this window's toll-free choices (damage-scale units); Jain's index and max/mean of the
  // workers' busy fractions. Sets router_equilibrium_gap, router_toll_free_gap,
  // worker_busy_jain_ratio and worker_busy_max_mean_ratio, and counts
  // router_balance_windows_total{requests="one"|"many"}.
  void OnBalanceWindow(int requests, double gap, double gap_toll_free, double worker_jain,
                       double worker_max_mean);
  // The router's per-block load tolls (entry b is block b).
  void SetTolls(absl::Span<const double> tolls);
  // How many ready workers host block `block` now (0 = the block is uncovered).
  void SetBlockReplicas(int block, int replicas);

  // --- Workers. Unknown addresses are counted under worker="other".
  // One step dispatched to `worker` (round trip `seconds`). OK: steps_total and the latency
  // histogram; otherwise worker_errors_total{worker,code}.
  void OnWorkerStep(absl::string_view worker, double seconds, absl::StatusCode code);
  void SetWorkerUp(absl::string_view worker, bool up);  // The coordinator's health view.
  void SetReady(bool ready);  // 1 while the workers cover every layer (serving).

  // --- The scheduler (coordinator/scheduler.h) through the observer's batch hooks.
  // One step: batch_sequences and batch_tokens (rows, prefill chunks included) are observed.
  void OnBatchStep(int sequences, int64_t tokens);
  // A request admitted after `seconds` in the queue: queue_time_seconds is observed.
  void OnQueued(double seconds);
  // The scheduler's occupancy now: scheduler_running_requests and scheduler_waiting_requests.
  void SetSchedulerState(int running, int waiting);
  // `seconds` of the worker's compute on one batch hop: worker_busy_seconds_total{worker} += it
  // (rate() of it is the worker's busy fraction, pipeline occupancy).
  void OnWorkerBusy(absl::string_view worker, double seconds);

  // --- Fail-over (coordinator/scheduler.h). `reason` is "error", "deadline", "drain" or "down"
  // (others count as "error").
  // A request's session moved off `worker`: failovers_total{worker,reason} += 1.
  void OnFailover(absl::string_view reason, absl::string_view worker);
  // A fail-over replayed `positions` (rows × hops) and `bytes`, in `seconds`:
  // replayed_positions_total, replayed_bytes_total, replay_duration_seconds.
  void OnReplay(int64_t positions, int64_t bytes, double seconds);
  // The bytes of replay history every request holds now: replay_history_bytes.
  void SetReplayHistoryBytes(int64_t bytes);

 private:
  struct Impl;
  explicit CoordinatorMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace swarm::common

#endif  // SWARM_COMMON_METRICS_H_
