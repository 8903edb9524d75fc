// Route planning for exact mode: which worker runs which layers, in layer order. Pure functions
// over a snapshot of the workers, so the policy is unit-testable without servers. Thread-safe.
//
// Policy: walk the layers in order; keep extending the current hop while its worker hosts the next
// layer (fewer hops = less latency); where a new hop starts, pick among the usable workers that
// host the layer the least loaded one, then the one hosting the longest run from there, then the
// lowest index. A worker may appear in several hops (non-contiguous layers).
#ifndef SWARM_COORDINATOR_ROUTE_H_
#define SWARM_COORDINATOR_ROUTE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace swarm::coordinator {

struct RouteCandidate {
  std::vector<int> layers;  // Sorted, unique.
  int load = 0;             // Requests currently routed through it (lower is better).
  bool usable = true;       // Reachable, ready and of the right model.
  std::string address;      // For error messages.
};

struct Hop {
  int worker = 0;           // Index into the candidates.
  std::vector<int> layers;  // Consecutive layers this hop runs.
};

// A route through `layers` (strictly increasing; the layers of one block, or all of them).
// Unavailable naming the layers no usable worker hosts.
absl::StatusOr<std::vector<Hop>> PlanRoute(absl::Span<const int> layers,
                                           const std::vector<RouteCandidate>& workers);
// Every layer 0..num_layers-1 (exact mode).
absl::StatusOr<std::vector<Hop>> PlanRoute(int num_layers,
                                           const std::vector<RouteCandidate>& workers);

// OK when the usable workers host every layer in [0, num_layers); otherwise Unavailable naming
// the uncovered layers.
absl::Status CheckCoverage(int num_layers, const std::vector<RouteCandidate>& workers);

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_ROUTE_H_
