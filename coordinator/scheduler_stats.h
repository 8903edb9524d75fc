// Recent figures of the coordinator's scheduler for `swarm status`: requests running and waiting,
// sequences and rows (tokens) per step, and each worker's busy fraction (pipeline occupancy), over
// a sliding window (10 s by default). It is a CoordinatorObserver that records the four scheduler
// hooks (OnBatchStep, OnAdmitted, OnSchedulerState, OnWorkerBusy) and forwards every hook to the
// next observer (the metrics, or none), so the scheduler reports once, through the observer it is
// given, and both Prometheus and Status see it. CoordinatorServer puts one in front of
// CoordinatorOptions::observer and fills StatusResponse from Get().
//
// Threading: every method is thread-safe (one mutex, held for O(workers) per hook; no callback runs
// under it).
#ifndef SWARM_COORDINATOR_SCHEDULER_STATS_H_
#define SWARM_COORDINATOR_SCHEDULER_STATS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/coordinator_observer.h"

namespace swarm::coordinator {

class SchedulerStats : public CoordinatorObserver {
 public:
  struct Options {
    CoordinatorObserver* next = nullptr;        // Receives every hook too; not owned; may be null.
    int num_workers = 0;                        // WorkerSet size: OnWorkerBusy's indices 0..n-1.
    absl::Duration window = absl::Seconds(10);  // > 0; kept in 10 slices.
    std::function<absl::Time()> clock;          // Default absl::Now (tests pass a fake).
  };
  explicit SchedulerStats(Options options);

  struct Snapshot {
    int running_requests = 0;  // As last reported by OnSchedulerState.
    int waiting_requests = 0;
    // Over the window (the slices it covers, at most `window` and at least one slice back):
    double window_seconds = 0;
    int64_t steps = 0;              // OnBatchStep calls.
    double sequences_per_step = 0;  // Mean; 0 without steps.
    double tokens_per_step = 0;     // Mean rows per step; 0 without steps.
    int64_t admitted = 0;           // OnAdmitted calls.
    double queue_seconds_mean = 0;  // Mean time in queue of those; 0 without any.
    // Per WorkerSet index: busy time over window_seconds, clamped to 0..1 (overlapping hops of one
    // worker, e.g. parallel combine, would otherwise exceed 1).
    std::vector<double> worker_busy_fraction;
  };
  Snapshot Get() const;

  // The scheduler's hooks: recorded, then forwarded.
  void OnBatchStep(int sequences, int64_t tokens) override;
  void OnAdmitted(absl::Duration queued) override;
  void OnSchedulerState(int running, int waiting) override;
  void OnWorkerBusy(int worker, absl::Duration busy) override;  // Other indices: forwarded only.

  // Every other hook: forwarded only.
  void OnRequestStart(absl::string_view mode) override;
  void OnRequestRefused(absl::string_view mode, absl::StatusCode code) override;
  void OnRequestDone(absl::string_view mode, absl::StatusCode code, int64_t prompt_tokens,
                     int64_t generated_tokens, double seconds, double ttft_seconds) override;
  void OnInterToken(absl::string_view mode, double seconds) override;
  void OnWorkerStep(absl::string_view worker, double seconds, absl::StatusCode code) override;
  void SetWorkerUp(absl::string_view worker, bool up) override;
  void SetReady(bool ready) override;
  void OnBlocksChosen(absl::string_view mode, const std::vector<int>& blocks,
                      const std::vector<double>& router_tolls) override;
  void OnStep(const std::vector<int>& blocks) override;
  void OnWorkers(const std::vector<WorkerState>& workers) override;
  void OnBalanceWindow(const BalanceWindow& window) override;

 private:
  static constexpr int kSlices = 10;
  struct Slice {
    int64_t index = -1;  // Which slice of time (now / slice length); -1 = unused.
    int64_t steps = 0;
    int64_t sequences = 0;
    int64_t tokens = 0;
    int64_t admitted = 0;
    absl::Duration queued;
    std::vector<absl::Duration> busy;  // [num_workers]
  };
  // The slice of now, cleared if it held an older one.
  Slice& CurrentLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t SliceIndex(absl::Time t) const;

  CoordinatorObserver default_next_;
  CoordinatorObserver* const next_;
  const int num_workers_;
  const absl::Duration slice_;
  const std::function<absl::Time()> clock_;
  const absl::Time start_;

  mutable absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Slice> slices_ ABSL_GUARDED_BY(mu_);  // Ring of kSlices.
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_SCHEDULER_STATS_H_
