#include "router/calibration/fit.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace swarm::router {
namespace {

TEST(Fit, PcaFindsTheDirectionOfLargestVariance) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> big(0, 3), small(0, 0.1f);
  const int P = 200, D = 3;
  std::vector<float> x(P * D);
  for (int p = 0; p < P; ++p) {
    float a = big(rng), b = small(rng), c = small(rng);
    x[p * D + 0] = (a + b) / std::sqrt(2.0f);
    x[p * D + 1] = (a - b) / std::sqrt(2.0f);
    x[p * D + 2] = c;
  }
  std::vector<float> mean(D, 0);
  for (int p = 0; p < P; ++p) {
    for (int i = 0; i < D; ++i) mean[i] += x[p * D + i] / P;
  }
  for (int p = 0; p < P; ++p) {
    for (int i = 0; i < D; ++i) x[p * D + i] -= mean[i];
  }
  auto basis = FitPcaBasis(x, P, D, 2);
  ASSERT_TRUE(basis.ok()) << basis.status();
  ASSERT_EQ(basis->size(), 6u);
  EXPECT_NEAR((*basis)[0], 1 / std::sqrt(2.0), 0.02);  // Sign fixed: largest entry positive.
  EXPECT_NEAR((*basis)[1], 1 / std::sqrt(2.0), 0.02);
  EXPECT_NEAR((*basis)[2], 0, 0.05);
  double dot = 0, n0 = 0, n1 = 0;
  for (int i = 0; i < 3; ++i) {
    dot += (*basis)[i] * (*basis)[3 + i];
    n0 += (*basis)[i] * (*basis)[i];
    n1 += (*basis)[3 + i] * (*basis)[3 + i];
  }
  EXPECT_NEAR(dot, 0, 1e-5);
  EXPECT_NEAR(n0, 1, 1e-5);
  EXPECT_NEAR(n1, 1, 1e-5);
  EXPECT_FALSE(FitPcaBasis(x, P, D, 4).ok());
  EXPECT_FALSE(FitPcaBasis({}, 0, D, 1).ok());
}

TEST(Fit, GateLearnsAFeatureDependentChoiceAndStartsAtThePrior) {
  // Two subsets; which one is better depends on the sign of the first feature.
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n(0, 1), noise(0, 0.01f);
  const int P = 300, R = 2;
  std::vector<float> x(P * R);
  GateGroup g;
  g.columns = {0, 1};
  g.scale = 0.1;
  g.index = 3;
  for (int p = 0; p < P; ++p) {
    float a = n(rng), b = n(rng), norm = std::sqrt(a * a + b * b);
    x[p * R] = a / norm;
    x[p * R + 1] = b / norm;
    bool first = a > 0;
    g.values.push_back((first ? 0.1f : 0.3f) + noise(rng));
    g.values.push_back((first ? 0.3f : 0.1f) + 0.01f + noise(rng));  // Prior: subset 0.
  }
  GateFitOptions o;
  o.epochs = 300;
  o.seed = 5;
  std::vector<float> temps(5, 1.0f);
  GateFitStats stats;
  auto w = FitGate(x, P, R, 2, {g}, o, &temps, &stats);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(stats.validation_rows, 60);
  EXPECT_GT(stats.best_epoch, 0);
  EXPECT_LT(stats.best_score, 0.8 * stats.start_score);
  EXPECT_NEAR(temps[3], o.t_end * 0.1, 1e-6);
  int right = 0;
  for (int i = 0; i < 100; ++i) {
    float a = n(rng), b = n(rng), norm = std::sqrt(a * a + b * b);
    float f[2] = {a / norm, b / norm};
    std::vector<float> logits = w->Forward(f);
    right += (logits[0] > logits[1]) == (a > 0);
  }
  EXPECT_GE(right, 90);

  // Untrained (0 epochs) the gate prefers the prior's subset for every input.
  o.epochs = 0;
  auto w0 = FitGate(x, P, R, 2, {g}, o, &temps, &stats);
  ASSERT_TRUE(w0.ok());
  EXPECT_EQ(stats.best_epoch, 0);
  for (int i = 0; i < 20; ++i) {
    float f[2] = {n(rng), n(rng)};
    std::vector<float> logits = w0->Forward(f);
    EXPECT_GT(logits[0], logits[1]);
  }
  EXPECT_FALSE(FitGate(x, P + 1, R, 2, {g}, o, &temps).ok());
}

}  // namespace
}  // namespace swarm::router
