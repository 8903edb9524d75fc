// Layer sets: the operator syntax and its runs.
#include "common/layer_set.h"

#include <gtest/gtest.h>

namespace swarm {
namespace {

TEST(LayerRangesTest, ParsesAndFormats) {
  auto l = ParseLayers("0-2,5,7-8", 10);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(*l, std::vector<int>({0, 1, 2, 5, 7, 8}));
  EXPECT_EQ(FormatLayers(*l), "0-2,5,7-8");
  EXPECT_EQ(LayerRuns(*l), (std::vector<std::pair<int, int>>{{0, 3}, {5, 6}, {7, 9}}));
  EXPECT_EQ(*ParseLayers("3,1-2,2", 4), std::vector<int>({1, 2, 3}));
  for (const char* bad : {"", "a", "1-", "3-1", "0-10", "-1", "1,,2"}) {
    EXPECT_EQ(ParseLayers(bad, 10).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace swarm
