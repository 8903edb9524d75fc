// Hop fusion for sparse plans: consecutive selected blocks that run on one worker go there as
// one hop (one Forward / ForwardBatch with the union of their layers) instead of one hop each.
//
// Valid only where the math is identical. In sequential combine a segment of weight 1 is
// h ← B(h) (router/sparse.h: h + 1·(B(h) − h)), so consecutive weight-1 segments compose into one
// segment running their hops in order, and two adjacent hops on one worker into one hop over
// both layer lists (a worker runs the listed layers in order, skipped ones are the identity).
// A segment with a gate g ≠ 1 keeps its own boundaries (the gate applies to its update alone),
// and parallel combine is never fused (every segment reads the same input). Exact mode, one
// segment already planned with the fewest hops, is unchanged.
//
// A pure function on a plan (the pipeline calls it after planning workers; the planned hops
// are still what WorkerSet::Release gets). Thread-safe.
#ifndef SWARM_COORDINATOR_HOP_FUSION_H_
#define SWARM_COORDINATOR_HOP_FUSION_H_

#include "coordinator/scheduler.h"

namespace swarm::coordinator {

// The plan with consecutive weight-1 sequential segments merged and, inside each segment,
// adjacent hops on the same worker merged. Parallel plans are returned as they are.
ExecutionPlan FuseSequentialHops(ExecutionPlan plan);

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_HOP_FUSION_H_
