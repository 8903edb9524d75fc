#include "router/balance.h"

#include <cmath>

#include "gtest/gtest.h"

namespace swarm::router {
namespace {

TEST(Balance, JainAndMaxOverMean) {
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{1, 1, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{4, 0, 0, 0}), 0.25);
  EXPECT_NEAR(JainIndex(std::vector<double>{3, 1}), 16.0 / 20.0, 1e-12);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{}), 1.0);
  EXPECT_DOUBLE_EQ(MaxOverMean(std::vector<double>{4, 0, 0, 0}), 4.0);
  EXPECT_DOUBLE_EQ(MaxOverMean(std::vector<double>{2, 2}), 1.0);
}

Candidates Explicit(std::vector<double> costs) {
  // N = 5, kept {0, 4}, k = 3: subsets {0,1,4}, {0,2,4}, {0,3,4}.
  Candidates c;
  c.num_blocks = 5;
  c.top_k = 3;
  c.keep = BlocksToMask({0, 4});
  c.masks = EnumerateAdmissible(5, c.keep, 3);
  c.cost = std::move(costs);
  return c;
}

TEST(Balance, ChooseBestExplicitAndAdditive) {
  Candidates c = Explicit({0.3, 0.1, 0.2});
  Choice best = ChooseBest(c, {});
  EXPECT_EQ(best.mask, BlocksToMask({0, 2, 4}));
  EXPECT_DOUBLE_EQ(best.base_cost, 0.1);
  // A toll of 0.15 on block 2 makes {0,3,4} cheaper.
  std::vector<double> tolls = {0, 0, 0.15, 0, 0};
  best = ChooseBest(c, tolls);
  EXPECT_EQ(best.mask, BlocksToMask({0, 3, 4}));
  EXPECT_DOUBLE_EQ(best.total_cost, 0.2);

  Candidates a;
  a.num_blocks = 5;
  a.top_k = 4;
  a.keep = BlocksToMask({0, 4});
  a.importance = {9, 0.5, 0.1, 0.3, 9};
  best = ChooseBest(a, {});
  EXPECT_EQ(best.mask, BlocksToMask({0, 1, 3, 4}));
  EXPECT_NEAR(best.base_cost, 0.1, 1e-12);  // Skipping block 2 only.
}

TEST(Balance, CongestionGameSpreadsIdenticalRequests) {
  // Nine identical requests that all prefer {0,2,4} slightly: without congestion everyone piles
  // on block 2; with congestion the equilibrium spreads them.
  std::vector<Candidates> requests(9, Explicit({0.11, 0.10, 0.12}));
  GameOptions none;
  GameResult alone = SolveCongestionGame(requests, {}, none);
  EXPECT_TRUE(alone.converged);
  EXPECT_DOUBLE_EQ(alone.usage[2], 9);
  EXPECT_NEAR(alone.jain, 1.0 / 3.0, 1e-9);

  GameOptions options;
  options.congestion = 0.05;
  options.t_start = 0.05;
  options.seed = 3;
  GameResult eq = SolveCongestionGame(requests, {}, options);
  EXPECT_TRUE(eq.converged);
  EXPECT_LE(eq.equilibrium_gap, 1e-12);
  EXPECT_DOUBLE_EQ(eq.usage[1] + eq.usage[2] + eq.usage[3], 9);
  EXPECT_GT(eq.jain, 0.95);
  // At a Nash equilibrium nobody gains by moving: check directly.
  for (size_t r = 0; r < requests.size(); ++r) {
    std::vector<double> count = eq.usage;
    for (int b : MaskToBlocks(eq.choices[r].mask)) count[b] -= 1;
    std::vector<double> extra(5, 0);
    for (int b = 1; b <= 3; ++b) extra[b] = options.congestion * (count[b] + 1);
    EXPECT_GE(ChooseBest(requests[r], extra).total_cost, eq.choices[r].total_cost - 1e-12);
  }
}

TEST(Balance, CongestionGameAdditiveForm) {
  std::vector<Candidates> requests;
  for (int i = 0; i < 6; ++i) {
    Candidates a;
    a.num_blocks = 6;
    a.top_k = 3;
    a.keep = BlocksToMask({0, 5});
    a.importance = {0, 0.4, 0.3, 0.2, 0.1, 0};
    requests.push_back(a);
  }
  GameOptions options;
  options.congestion = 0.1;
  GameResult eq = SolveCongestionGame(requests, {}, options);
  EXPECT_TRUE(eq.converged);
  EXPECT_LE(eq.equilibrium_gap, 1e-12);
  EXPECT_LT(eq.usage[1], 6);  // Not everyone on the most important block.
}

TEST(Balance, TollsBalanceASkewedStream) {
  // Every request prefers {0,1,4} by a margin of 0.02; tolls should bring usage of the free
  // blocks 1..3 close to equal.
  TollOptions options;
  options.rate = 0.05;
  TollBook book(5, BlocksToMask({0, 4}), options);
  Candidates c = Explicit({0.10, 0.12, 0.12});
  for (int i = 0; i < 3000; ++i) {
    Choice choice = ChooseBest(c, book.tolls());
    book.Observe(choice.mask, 3, /*scale=*/0.01);
  }
  EXPECT_GT(book.Jain(), 0.95);
  EXPECT_LT(book.MaxOverMean(), 1.15);
  EXPECT_EQ(book.requests(), 3000);
  // Capped tolls cannot overcome the margin: block 1 keeps everything.
  options.max_toll = 0.5;  // 0.005 nats < 0.02 margin.
  TollBook capped(5, BlocksToMask({0, 4}), options);
  for (int i = 0; i < 500; ++i) {
    Choice choice = ChooseBest(c, capped.tolls());
    capped.Observe(choice.mask, 3, 0.01);
  }
  EXPECT_NEAR(capped.Jain(), 1.0 / 3.0, 1e-9);
  for (double t : capped.tolls()) EXPECT_LE(std::fabs(t), 0.005 + 1e-12);
}

TEST(Balance, RequestsCongestOnSharedResourcesNotOnBlocks) {
  // Explicit() with costs 0, 0.1, 0.5 for blocks 1, 2, 3; congestion 0.6 per request.
  const std::vector<Candidates> two = {Explicit({0, 0.1, 0.5}), Explicit({0, 0.1, 0.5})};
  GameOptions o;
  o.congestion = 0.6;
  // Each block its own resource: the second request takes block 2 (0.1 + 0.6 < 0 + 1.2).
  GameResult own = SolveCongestionGame(two, {}, o);
  EXPECT_EQ(own.choices[0].mask | own.choices[1].mask, BlocksToMask({0, 1, 2, 4}));
  // Blocks 1 and 2 on one group of workers, block 3 on another: moving to block 2 gains nothing
  // (1.3 against 1.2 on block 1), moving to block 3 does (0.5 + 0.6 = 1.1).
  o.resource = {0, 1, 1, 3, 4};
  GameResult shared = SolveCongestionGame(two, {}, o);
  EXPECT_EQ(shared.choices[0].mask | shared.choices[1].mask, BlocksToMask({0, 1, 3, 4}));
  EXPECT_TRUE(shared.converged);
  EXPECT_LE(shared.equilibrium_gap, 1e-12);
  // The toll-free profile (both on block 1) is off equilibrium by 1.2 − 1.1.
  EXPECT_NEAR(EquilibriumGap(two, {BlocksToMask({0, 1, 4}), BlocksToMask({0, 1, 4})}, {}, o), 0.1,
              1e-12);
  // A lone request at its best choice: gap 0 by definition.
  EXPECT_EQ(EquilibriumGap({two[0]}, {BlocksToMask({0, 1, 4})}, {}, o), 0);
}

}  // namespace
}  // namespace swarm::router
