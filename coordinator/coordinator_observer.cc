#include "coordinator/coordinator_observer.h"

namespace swarm::coordinator {

std::vector<int> BlocksTouched(const BlockLayout& layout, absl::Span<const int> layers) {
  std::vector<int> blocks;
  for (int l : layers) {
    if (l < 0 || l >= layout.num_layers) continue;
    const int b = layout.BlockOf(l);
    if (blocks.empty() || blocks.back() != b) blocks.push_back(b);  // `layers` is sorted.
  }
  return blocks;
}

}  // namespace swarm::coordinator
