#include "common/block_layout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace swarm {

absl::StatusOr<BlockLayout> BlockLayout::Create(int num_layers, int num_blocks) {
  if (num_blocks < 1 || num_blocks > num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("number of blocks ", num_blocks,
                                                   " must be between 1 and the ", num_layers,
                                                   " layers of the model"));
  }
  BlockLayout layout;
  layout.num_layers = num_layers;
  layout.num_blocks = num_blocks;
  return layout;
}

int BlockLayout::begin(int block) const {
  const int base = num_layers / num_blocks, extra = num_layers % num_blocks;
  return block * base + std::min(block, extra);
}

int BlockLayout::end(int block) const { return begin(block + 1); }

std::vector<int> BlockLayout::Layers(int block) const {
  std::vector<int> out;
  for (int l = begin(block); l < end(block); ++l) out.push_back(l);
  return out;
}

int BlockLayout::BlockOf(int layer) const {
  // The first `extra` blocks hold base + 1 layers, the rest base (see begin()).
  const int base = num_layers / num_blocks, extra = num_layers % num_blocks;
  const int long_part = extra * (base + 1);
  return layer < long_part ? layer / (base + 1) : extra + (layer - long_part) / base;
}

}  // namespace swarm
