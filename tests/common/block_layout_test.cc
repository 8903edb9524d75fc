// The N-way block split: even ranges, earlier blocks taking the remainder, and its inverse.
#include "common/block_layout.h"

#include <gtest/gtest.h>

namespace swarm {
namespace {

TEST(BlockLayoutTest, SplitsEvenlyWithTheRemainderFirst) {
  auto layout = BlockLayout::Create(10, 4);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->Layers(0), std::vector<int>({0, 1, 2}));
  EXPECT_EQ(layout->Layers(1), std::vector<int>({3, 4, 5}));
  EXPECT_EQ(layout->Layers(2), std::vector<int>({6, 7}));
  EXPECT_EQ(layout->Layers(3), std::vector<int>({8, 9}));
  EXPECT_EQ(layout->end(3), 10);
  for (int b = 0; b < 4; ++b) {
    for (int l : layout->Layers(b)) EXPECT_EQ(layout->BlockOf(l), b) << "layer " << l;
  }
}

TEST(BlockLayoutTest, BlockOfInvertsEverySplit) {
  for (int layers = 1; layers <= 13; ++layers) {
    for (int blocks = 1; blocks <= layers; ++blocks) {
      auto layout = BlockLayout::Create(layers, blocks);
      ASSERT_TRUE(layout.ok());
      for (int b = 0; b < blocks; ++b) {
        for (int l = layout->begin(b); l < layout->end(b); ++l) {
          ASSERT_EQ(layout->BlockOf(l), b) << layers << " layers, " << blocks << " blocks";
        }
      }
    }
  }
}

TEST(BlockLayoutTest, RejectsImpossibleSplits) {
  EXPECT_EQ(BlockLayout::Create(4, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockLayout::Create(4, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BlockLayout::Create(4, 4).ok());
}

}  // namespace
}  // namespace swarm
