// The one meaning of *block*: a contiguous range of layers in the N-way split of a model that
// the router chooses from, the scheduler plans with and `swarm up` places on workers. Block b of
// N covers layers [begin(b), end(b)); layers are split as evenly as possible, earlier blocks
// taking the remainder. Value type; thread-safe.
#ifndef SWARM_COMMON_BLOCK_LAYOUT_H_
#define SWARM_COMMON_BLOCK_LAYOUT_H_

#include <vector>

#include "absl/status/statusor.h"

namespace swarm {

struct BlockLayout {
  int num_layers = 0;
  int num_blocks = 0;
  // InvalidArgument unless 1 <= num_blocks <= num_layers.
  static absl::StatusOr<BlockLayout> Create(int num_layers, int num_blocks);
  int begin(int block) const;
  int end(int block) const;
  std::vector<int> Layers(int block) const;
  // The block holding `layer` (0 <= layer < num_layers).
  int BlockOf(int layer) const;
};

}  // namespace swarm

#endif  // SWARM_COMMON_BLOCK_LAYOUT_H_
