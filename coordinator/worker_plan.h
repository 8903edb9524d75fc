// Worker planning: which worker runs which layers of a layer set, in layer order (the hops of one
// request's exact-mode pass, or of one selected block in sparse mode). Not to be confused with
// the router's choice of blocks (router::Router::Route): this plans workers for layers already
// chosen. Pure functions over a snapshot of the workers (WorkerSet::AcquirePlans calls them), so
// the policy is unit-testable without servers. Thread-safe.
//
// Policy: walk the layers in order; keep extending the current hop while its worker hosts the next
// layer (fewer hops = less latency); where a new hop starts, pick among the usable workers that
// host the layer the least loaded one, then the one hosting the longest run from there, then the
// lowest index. A worker may appear in several hops (non-contiguous layers).
#ifndef SWARM_COORDINATOR_WORKER_PLAN_H_
#define SWARM_COORDINATOR_WORKER_PLAN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace swarm::coordinator {

// A worker as the planner sees it.
struct WorkerCandidate {
  std::vector<int> layers;  // Sorted, unique.
  int load = 0;             // Requests currently planned through it (lower is better).
  bool usable = true;       // Reachable, ready and of the right model.
  std::string address;      // For error messages.
};

// One Forward of a plan: a worker and the consecutive layers it runs.
struct Hop {
  int worker = 0;           // Index into the candidates.
  std::vector<int> layers;  // Consecutive layers this hop runs.
};

// The hops through `layers` (strictly increasing; the layers of one block, or all of them).
// Unavailable naming the layers no usable worker hosts.
absl::StatusOr<std::vector<Hop>> PlanHops(absl::Span<const int> layers,
                                          const std::vector<WorkerCandidate>& workers);
// Every layer 0..num_layers-1 (exact mode).
absl::StatusOr<std::vector<Hop>> PlanHops(int num_layers,
                                          const std::vector<WorkerCandidate>& workers);

// A fail-over's replacement for a session on `layers`: the least loaded usable worker hosting
// every one of them, the lowest index among equals; -1 when none does.
int PickReplica(absl::Span<const int> layers, const std::vector<WorkerCandidate>& workers);

// OK when the usable workers host every layer in [0, num_layers); otherwise Unavailable naming
// the uncovered layers.
absl::Status CheckCoverage(int num_layers, const std::vector<WorkerCandidate>& workers);

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_WORKER_PLAN_H_
