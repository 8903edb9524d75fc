// The step deadline of the coordinator's scheduler (scheduler.h's fail-over): the recent step
// latencies in a window, and the deadline they give a step call, max(step_deadline_factor × their
// p99, step_deadline_min), at most the step timeout; the step timeout itself while too few steps
// were seen or with a factor of 0. The scheduler notes every completed step call.
//
// Threading: thread-safe (one mutex).
#ifndef SWARM_COORDINATOR_STEP_DEADLINE_H_
#define SWARM_COORDINATOR_STEP_DEADLINE_H_

#include <cstddef>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/failover_options.h"

namespace swarm::coordinator {

class StepDeadlines {
 public:
  static constexpr size_t kWindow = 256;     // The latest step latencies the p99 is taken over.
  static constexpr size_t kMinSamples = 16;  // Fewer seen: the step timeout.
  static constexpr size_t kEvery = 16;       // Past kMinSamples the p99 is recomputed this often.

  StepDeadlines(const FailoverOptions& options, absl::Duration step_timeout)
      : min_(options.step_deadline_min),
        factor_(options.step_deadline_factor),
        step_timeout_(step_timeout) {}

  // Records one step call's latency.
  void Note(absl::Duration latency);
  // The deadline a step call gets now.
  absl::Duration Deadline() const;
  // The p99 (the element at index min(n − 1, ⌊n·99/100⌋) of the window's n latencies, sorted)
  // as of the last recomputation; 0 before any step.
  absl::Duration p99() const;

 private:
  const absl::Duration min_;
  const double factor_;
  const absl::Duration step_timeout_;
  mutable absl::Mutex mu_;
  std::vector<double> latencies_ ABSL_GUARDED_BY(mu_);  // Seconds; a ring once full.
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;                // Latencies noted so far.
  double p99_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_STEP_DEADLINE_H_
