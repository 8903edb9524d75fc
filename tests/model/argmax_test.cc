// FirstArgmax (model/sampler.h) against std::max_element, the reference it must equal, on rows
// built to catch a wrong lane reduction, tie rule or NaN rule.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/sampler.h"

namespace swarm::model {
namespace {

int64_t Reference(const std::vector<float>& x) {
  return std::max_element(x.begin(), x.end()) - x.begin();
}

TEST(FirstArgmax, EqualsMaxElementOnRandomRowsWithTiesAndSpecialValues) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  int rows = 0;
  // Lengths around the 16 lanes and a vocabulary's.
  for (int64_t n : {1, 2, 15, 16, 17, 31, 33, 100, 512, 32000, 32003}) {
    for (int variant = 0; variant < 12; ++variant) {
      std::vector<float> x(n);
      for (float& v : x) v = normal(rng);
      std::uniform_int_distribution<int64_t> at(0, n - 1);
      switch (variant) {
        case 1:  // The maximum repeated in several lanes and in the tail: the first one wins.
          for (int k = 0; k < 4; ++k) x[at(rng)] = 9.0f;
          break;
        case 2:  // Only in the tail past the last whole group of 16.
          x[n - 1] = 9.0f;
          break;
        case 3:  // At index 0.
          x[0] = 9.0f;
          break;
        case 4:  // NaNs spread around, never the answer.
          for (int k = 0; k < 5; ++k) x[at(rng)] = nan;
          if (std::isnan(x[0])) x[0] = -1.0f;
          break;
        case 5:  // A NaN first: max_element keeps index 0.
          x[0] = nan;
          break;
        case 6:  // Every entry equal.
          std::fill(x.begin(), x.end(), 0.5f);
          break;
        case 7:  // Signed zeros as the maximum: the first zero, whatever its sign.
          for (float& v : x) v = -std::fabs(v) - 1.0f;
          x[at(rng)] = -0.0f;
          x[at(rng)] = 0.0f;
          break;
        case 8:  // Infinities.
          x[at(rng)] = inf;
          x[at(rng)] = -inf;
          break;
        case 9:  // All -inf but one.
          std::fill(x.begin(), x.end(), -inf);
          x[at(rng)] = -3.0f;
          break;
        case 10:  // Increasing: the last entry.
          for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i);
          break;
        case 11:  // Decreasing: the first entry.
          for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(n - i);
          break;
        default:
          break;
      }
      ASSERT_EQ(FirstArgmax(x), Reference(x)) << "n " << n << " variant " << variant;
      ++rows;
    }
  }
  EXPECT_EQ(rows, 11 * 12);
  EXPECT_EQ(FirstArgmax({}), 0);
}

TEST(FirstArgmax, IsWhatGreedySamplingPicks) {
  std::vector<float> x(1000, 0.0f);
  x[421] = 3.0f;
  x[700] = 3.0f;
  SamplingParams greedy;
  Sampler sampler(greedy);
  EXPECT_EQ(sampler.Sample(x, 5), 421);
  std::vector<TokenLogprob> top;
  // The log softmax is taken against the row's maximum: two entries of 3 and 998 of 0.
  const float lp = LogSoftmaxAt(x, 421, 2, &top);
  EXPECT_NEAR(lp, 3.0 - std::log(2 * std::exp(3.0) + 998.0), 1e-5);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].id, 421);
  EXPECT_EQ(top[1].id, 700);
}

}  // namespace
}  // namespace swarm::model
