#include "coordinator/hop_fusion.h"

#include <utility>
#include <vector>

namespace swarm::coordinator {

ExecutionPlan FuseSequentialHops(ExecutionPlan plan) {
  if (plan.parallel) return plan;
  std::vector<Segment> fused;
  for (Segment& s : plan.segments) {
    // Exactly 1 (not "close to"): only then is the segment's update B(h) itself.
    const bool ungated = s.weight == 1.0f;
    if (!fused.empty() && ungated && fused.back().weight == 1.0f) {
      std::vector<Hop>& hops = fused.back().hops;
      hops.insert(hops.end(), std::make_move_iterator(s.hops.begin()),
                  std::make_move_iterator(s.hops.end()));
    } else {
      fused.push_back(std::move(s));
    }
  }
  for (Segment& s : fused) {
    std::vector<Hop> hops;
    for (Hop& h : s.hops) {
      if (!hops.empty() && hops.back().worker == h.worker) {
        hops.back().layers.insert(hops.back().layers.end(), h.layers.begin(), h.layers.end());
      } else {
        hops.push_back(std::move(h));
      }
    }
    s.hops = std::move(hops);
  }
  plan.segments = std::move(fused);
  return plan;
}

}  // namespace swarm::coordinator
