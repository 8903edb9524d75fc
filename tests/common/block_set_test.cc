#include "common/block_set.h"

#include "gtest/gtest.h"

namespace swarm::router {
namespace {

TEST(BlockSets, MaskRoundTrip) {
  EXPECT_EQ(MaskToBlocks(BlocksToMask({4, 0, 2})), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(FormatMask(0b10101), "[0, 2, 4]");
  EXPECT_EQ(PopCount(FullMask(5)), 5);
  EXPECT_EQ(FullMask(64), ~BlockMask{0});
}

TEST(BlockSets, DefaultKeepsFirstAndLast) {
  EXPECT_EQ(DefaultKeepMask(5), BlocksToMask({0, 4}));
  EXPECT_EQ(DefaultKeepMask(1), BlockMask{1});
}

TEST(BlockSets, KeepMaskAcceptsNegativeIndices) {
  auto m = MakeKeepMask({0, -1}, 5);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, BlocksToMask({0, 4}));
  auto bad = MakeKeepMask({5}, 5);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kept block 5"), std::string::npos) << bad.status();
  EXPECT_FALSE(MakeKeepMask({}, 0).ok());
  EXPECT_FALSE(MakeKeepMask({}, 65).ok());
}

TEST(BlockSets, EnumeratesAdmissibleSubsets) {
  BlockMask keep = BlocksToMask({0, 4});
  EXPECT_EQ(CountAdmissible(5, keep, 3), 3u);
  std::vector<BlockMask> subsets = EnumerateAdmissible(5, keep, 3);
  ASSERT_EQ(subsets.size(), 3u);
  EXPECT_EQ(subsets[0], BlocksToMask({0, 1, 4}));
  EXPECT_EQ(subsets[1], BlocksToMask({0, 2, 4}));
  EXPECT_EQ(subsets[2], BlocksToMask({0, 3, 4}));
  EXPECT_EQ(CountAdmissible(5, keep, 2), 1u);
  EXPECT_EQ(CountAdmissible(5, keep, 1), 0u);
  EXPECT_EQ(CountAdmissible(8, 0, 4), 70u);
  EXPECT_EQ(EnumerateAdmissible(8, 0, 4).size(), 70u);
  EXPECT_EQ(CountAdmissible(64, 0, 32), 1832624140942590534ull);
}

TEST(BlockSets, TopKErrorsAreClear) {
  BlockMask keep = BlocksToMask({0, 4});
  EXPECT_TRUE(ValidateTopK(3, 5, keep).ok());
  absl::Status too_big = ValidateTopK(6, 5, keep);
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.message().find("exceeds the number of blocks N = 5"), std::string::npos);
  absl::Status zero = ValidateTopK(0, 5, keep);
  EXPECT_NE(zero.message().find("at least 1"), std::string::npos) << zero;
  absl::Status below_kept = ValidateTopK(1, 5, keep);
  EXPECT_NE(below_kept.message().find("always-kept"), std::string::npos) << below_kept;
}

TEST(BlockSets, ParsesKeepLists) {
  bool is_default = false;
  auto v = ParseKeepList("", &is_default);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(is_default);
  v = ParseKeepList("none", &is_default);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(is_default);
  EXPECT_TRUE(v->empty());
  v = ParseKeepList("0, -1", &is_default);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, (std::vector<int>{0, -1}));
  EXPECT_FALSE(ParseKeepList("0,x", &is_default).ok());
}

}  // namespace
}  // namespace swarm::router
