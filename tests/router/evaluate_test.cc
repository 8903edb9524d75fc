#include "router/calibration/evaluate.h"

#include "gtest/gtest.h"
#include "router_test_util.h"

namespace swarm::router {
namespace {

using testing::Stories;
using testing::TinyCalibration;

TEST(Evaluate, TestSetIsDisjointFromCalibration) {
  auto router = Router::Load(TinyCalibration().path, Stories().checkpoint());
  ASSERT_TRUE(router.ok());
  std::vector<Sample> mixed(TinyCalibration().samples.begin(),
                            TinyCalibration().samples.begin() + 3);
  auto fresh = SampleFromModel(Stories(), testing::TinySampleOptions(4, 2));
  ASSERT_TRUE(fresh.ok());
  mixed.insert(mixed.end(), fresh->begin(), fresh->end());
  int dropped = 0;
  std::vector<Sample> test = DisjointFromCalibration(**router, mixed, &dropped);
  EXPECT_GE(dropped, 3);
  for (const Sample& s : test) {
    for (const Sample& c : TinyCalibration().samples) EXPECT_NE(s.prompt, c.prompt);
  }
}

TEST(Evaluate, ProducesEveryStrategyAndTheOracleIsBest) {
  auto router = Router::Load(TinyCalibration().path, Stories().checkpoint());
  ASSERT_TRUE(router.ok());
  auto samples = SampleFromModel(Stories(), testing::TinySampleOptions(10, 2));
  ASSERT_TRUE(samples.ok());
  int dropped = 0;
  // Exact repeats only: these 3–12-token prompts from BOS are nearly all near-twins of some
  // calibration prompt (the planted tests cover near-duplicate removal).
  OverlapOptions exact;
  exact.max_overlap = 2;
  std::vector<Sample> test = DisjointFromCalibration(**router, *samples, &dropped, exact);
  ASSERT_GE(test.size(), 4u);
  EvalOptions o;
  o.greedy_tokens = 8;
  o.bootstrap_samples = 200;
  o.batch_size = 4;
  o.balance_passes = 2;
  auto report = Evaluate(Stories(), **router, test, o);
  ASSERT_TRUE(report.ok()) << report.status();
  std::map<int, std::map<std::string, const StrategyRow*>> rows;
  for (const StrategyRow& r : report->rows) rows[r.top_k][r.strategy] = &r;
  ASSERT_EQ(rows.size(), 2u);  // k = 3 and 4.
  for (int k : {3, 4}) {
    ASSERT_EQ(rows[k].size(), 7u) << k;
    const StrategyRow* oracle = rows[k]["oracle"];
    ASSERT_NE(oracle, nullptr);
    for (const auto& [name, row] : rows[k]) {
      EXPECT_EQ(row->kl.size(), test.size());
      EXPECT_GE(row->mean_kl, oracle->mean_kl - 1e-12) << name;
      for (size_t p = 0; p < test.size(); ++p) EXPECT_GE(row->kl[p], oracle->kl[p] - 1e-12);
      EXPECT_GE(row->top1, 0.0);
      EXPECT_LE(row->top1, 1.0);
      EXPECT_GE(row->ppl_ratio, 0.5);
      EXPECT_LE(row->first_divergence, 8.0);
      EXPECT_GE(row->p95_kl, row->mean_kl * 0.5);
    }
  }
  EXPECT_EQ(report->cis.size(), 6u);  // Three router variants × two k.
  for (const BootstrapCi& ci : report->cis) EXPECT_LE(ci.lo, ci.hi);
  EXPECT_FALSE(report->balance.empty());
  EXPECT_EQ(report->batches.size(), 2u);
  EXPECT_GT(report->decision_us_mean, 0);
  std::string table = FormatReport(*report);
  EXPECT_NE(table.find("| router: both |"), std::string::npos);
  EXPECT_NE(table.find("oracle"), std::string::npos);
}

TEST(Evaluate, EmptyTestSetIsAnError) {
  auto router = Router::Load(TinyCalibration().path, Stories().checkpoint());
  ASSERT_TRUE(router.ok());
  auto r = Evaluate(Stories(), **router, {}, EvalOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("test set is empty"), std::string::npos);
  EvalOptions bad;
  bad.top_ks = {6};
  auto s = SampleFromModel(Stories(), testing::TinySampleOptions(1, 2));
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(Evaluate(Stories(), **router, *s, bad).ok());
}

}  // namespace
}  // namespace swarm::router
