// The fail-over settings of the coordinator's scheduler (scheduler.h's file comment says what
// each does): carried from swarm-coordinator's flags through CoordinatorOptions and
// PipelineOptions to SchedulerOptions. Plain data.
#ifndef SWARM_COORDINATOR_FAILOVER_OPTIONS_H_
#define SWARM_COORDINATOR_FAILOVER_OPTIONS_H_

#include <cstdint>

#include "absl/time/time.h"

namespace swarm::coordinator {

struct FailoverOptions {
  // Bytes of replay history (hops' input hidden states) all requests together keep
  // (--replay-budget); a request past it drops its history and is recomputed on fail-over.
  // 0 = keep none.
  int64_t replay_budget_bytes = int64_t{1} << 30;
  // How long a fail-over waits for a worker hosting the layers (a replica, or the failed one
  // back) before the request fails (--failover-wait).
  absl::Duration failover_wait = absl::Seconds(10);
  // Fail-overs a request may go through without a step completing in between
  // (--failover-attempts); then UNAVAILABLE.
  int failover_attempts = 3;
  // A step's deadline: max(step_deadline_factor × the recent p99 step latency,
  // step_deadline_min), at most the step timeout (--step-deadline-min, --step-deadline-factor;
  // factor 0 = always the step timeout).
  absl::Duration step_deadline_min = absl::Seconds(2);
  double step_deadline_factor = 10;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_FAILOVER_OPTIONS_H_
