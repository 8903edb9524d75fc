// Worker planning (the hops of a layer set): layer order, fewest hops, least-loaded choice,
// non-contiguous hosts, coverage.
#include "coordinator/worker_plan.h"

#include <gtest/gtest.h>

namespace swarm::coordinator {
namespace {

WorkerCandidate W(std::vector<int> layers, int load = 0, bool usable = true) {
  WorkerCandidate c;
  c.layers = std::move(layers);
  c.load = load;
  c.usable = usable;
  return c;
}

std::vector<std::pair<int, std::vector<int>>> Flat(const std::vector<Hop>& hops) {
  std::vector<std::pair<int, std::vector<int>>> out;
  for (const Hop& h : hops) out.emplace_back(h.worker, h.layers);
  return out;
}

TEST(WorkerPlanTest, ContiguousSplitInLayerOrder) {
  auto r = PlanHops(5, {W({3, 4}), W({0, 1, 2})});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Flat(*r), (std::vector<std::pair<int, std::vector<int>>>{{1, {0, 1, 2}}, {0, {3, 4}}}));
}

TEST(WorkerPlanTest, NonContiguousHostAppearsTwice) {
  auto r = PlanHops(5, {W({0, 1, 3, 4}), W({2})});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Flat(*r),
            (std::vector<std::pair<int, std::vector<int>>>{{0, {0, 1}}, {1, {2}}, {0, {3, 4}}}));
}

TEST(WorkerPlanTest, LeastLoadedReplicaWins) {
  auto r = PlanHops(4, {W({0, 1, 2, 3}, 3), W({0, 1, 2, 3}, 1), W({0, 1, 2, 3}, 2)});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].worker, 1);
}

TEST(WorkerPlanTest, EqualLoadPrefersTheLongerRunThenTheLowerIndex) {
  auto r = PlanHops(4, {W({0, 1}), W({0, 1, 2, 3})});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Flat(*r), (std::vector<std::pair<int, std::vector<int>>>{{1, {0, 1, 2, 3}}}));
  r = PlanHops(2, {W({0, 1}), W({0, 1})});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].worker, 0);
}

TEST(WorkerPlanTest, KeepsTheCurrentWorkerWhileItHostsTheNextLayer) {
  // Worker 1 is less loaded for layers 2-3, but staying on worker 0 saves a hop.
  auto r = PlanHops(4, {W({0, 1, 2, 3}, 1), W({2, 3}, 0)});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 1u);
}

TEST(WorkerPlanTest, UnusableWorkersAreSkippedAndGapsReported) {
  auto r = PlanHops(4, {W({0, 1, 2, 3}, 0, /*usable=*/false), W({0, 1}), W({3})});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("layers 2 of 4"), std::string::npos) << r.status();
  EXPECT_TRUE(CheckCoverage(2, {W({0}), W({1})}).ok());
  EXPECT_FALSE(CheckCoverage(1, {}).ok());
}

}  // namespace
}  // namespace swarm::coordinator
