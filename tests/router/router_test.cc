// Calibration, the router file and the router on stories260K with a tiny calibration set.
#include "router/router.h"

#include <chrono>
#include <cmath>
#include <fstream>

#include "common/block_layout.h"
#include "gtest/gtest.h"
#include "router/calibration/calibrate.h"
#include "router/calibration/divergence.h"
#include "router/router_file.h"
#include "router_test_util.h"

namespace swarm::router {
namespace {

using testing::kShared;
using testing::kStories;
using testing::Stories;
using testing::Tiny;
using testing::TinyCalibration;

std::shared_ptr<const model::Checkpoint> StoriesCheckpoint() { return Stories().checkpoint(); }

TEST(Calibration, MeasuresEveryAdmissibleSubset) {
  const RouterData& d = TinyCalibration().data;
  EXPECT_EQ(d.num_blocks, 5);
  EXPECT_EQ(d.num_layers, 5);
  EXPECT_EQ(d.keep, BlocksToMask({0, 4}));
  EXPECT_EQ(d.num_prompts, 24);
  EXPECT_EQ(d.fingerprint, Stories().config().Fingerprint());
  // k = 2: {0,4}; k = 3: three subsets; k = 4: three subsets.
  ASSERT_EQ(d.num_subsets(), 7);
  EXPECT_EQ(d.subsets[0], BlocksToMask({0, 4}));
  for (int p = 0; p < d.num_prompts; ++p) {
    for (int s = 0; s < d.num_subsets(); ++s) {
      EXPECT_GT(d.subset_damage[p * 7 + s], 0.0f);
      EXPECT_TRUE(std::isfinite(d.subset_damage[p * 7 + s]));
    }
    // Skipping only block b is the k = 4 subset without b.
    for (int s = 4; s < 7; ++s) {
      int skipped = MaskToBlocks(FullMask(5) & ~d.subsets[s])[0];
      EXPECT_FLOAT_EQ(d.subset_damage[p * 7 + s], d.skip_damage[p * 5 + skipped]);
    }
  }
  // Running fewer blocks costs more on average: the prior of {0,4} exceeds every k = 3 subset.
  for (int s = 1; s < 4; ++s) EXPECT_GT(d.subset_prior[0], d.subset_prior[s]);
  for (int k = 0; k <= 5; ++k) {
    EXPECT_GE(d.blend[k], 0.0f);
    EXPECT_LE(d.blend[k], 1.0f);
  }
  EXPECT_GT(d.damage_scale[3], 0.0f);
  EXPECT_TRUE(d.gate.has_value());
  EXPECT_EQ(d.space.dim, 64);
  EXPECT_EQ(d.space.rank, 16);
  // Calibration features are unit vectors.
  for (int p = 0; p < d.num_prompts; ++p) {
    double n = 0;
    for (int i = 0; i < 16; ++i) n += d.features[p * 16 + i] * d.features[p * 16 + i];
    EXPECT_NEAR(n, 1.0, 1e-4);
  }
}

TEST(Calibration, DamageIsMeanKlOfTheContinuation) {
  // Recompute one prompt's damage for {0, 2, 4} by hand from two full forward passes.
  const Tiny& t = TinyCalibration();
  const Sample& s = t.samples[3];
  std::vector<int64_t> ids = s.prompt;
  ids.insert(ids.end(), s.continuation.begin(), s.continuation.end());
  auto full = Stories().Logits(ids);
  ASSERT_TRUE(full.ok());
  auto layout = BlockLayout::Create(5, 5);
  SparsePlan plan;
  plan.blocks = {0, 2, 4};
  auto exec = SparseExecutor::Create(&Stories().layers(), *layout, plan);
  ASSERT_TRUE(exec.ok());
  auto h = Stories().ends().Embed(ids, 0);
  auto out = (*exec)->Run(*h, 0);
  ASSERT_TRUE(out.ok());
  auto sparse = Stories().ends().Logits(*out, false);
  ASSERT_TRUE(sparse.ok());
  auto d = CompareLogits(*full, *sparse, ids, static_cast<int64_t>(s.prompt.size()) - 1);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->positions, 8);
  int col = -1;
  for (int i = 0; i < t.data.num_subsets(); ++i) {
    if (t.data.subsets[i] == BlocksToMask({0, 2, 4})) col = i;
  }
  ASSERT_GE(col, 0);
  EXPECT_NEAR(t.data.subset_damage[3 * 7 + col], d->kl, 1e-5);
}

TEST(Calibration, SameSeedSameFile) {
  auto samples = SampleFromModel(Stories(), testing::TinySampleOptions(6, 1));
  ASSERT_TRUE(samples.ok());
  CalibrationOptions o = testing::TinyCalibrationOptions();
  o.gate.epochs = 20;
  auto a = Calibrate(Stories(), *samples, o);
  auto b = Calibrate(Stories(), *samples, o);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(a->subset_damage, b->subset_damage);
  EXPECT_EQ(a->features, b->features);
  EXPECT_EQ(a->gate->w2, b->gate->w2);
  // The first six prompts of the tiny set are the same draws (seeds are per index).
  for (int i = 0; i < 6; ++i) EXPECT_EQ((*samples)[i].prompt, TinyCalibration().samples[i].prompt);
}

TEST(Calibration, BadInputsGiveClearErrors) {
  const Tiny& t = TinyCalibration();
  CalibrationOptions o = testing::TinyCalibrationOptions();
  auto empty = Calibrate(Stories(), {}, o);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("calibration set is empty"), std::string::npos);

  std::vector<Sample> two(t.samples.begin(), t.samples.begin() + 2);
  o.top_k = 6;
  auto big = Calibrate(Stories(), two, o);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("exceeds the number of blocks"), std::string::npos);
  o.top_k = 0;
  o.num_blocks = 6;
  auto bad_n = Calibrate(Stories(), two, o);
  ASSERT_FALSE(bad_n.ok());
  EXPECT_NE(bad_n.status().message().find("number of blocks 6"), std::string::npos)
      << bad_n.status();

  SampleOptions so = testing::TinySampleOptions(0, 1);
  auto none = SampleFromModel(Stories(), so);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("empty"), std::string::npos);
  std::string empty_file = testing::TempPath("empty_prompts.txt");
  std::ofstream(empty_file) << "\n   \n";
  auto lines = ReadPromptLines(empty_file);
  ASSERT_FALSE(lines.ok());
  EXPECT_NE(lines.status().message().find("prompt set is empty"), std::string::npos);
}

TEST(Calibration, TextPromptsAndOtherKeptBlocks) {
  auto samples = SamplesFromTexts(Stories(), {"Once upon a time", "The cat sat on the mat."},
                                  testing::TinySampleOptions(2, 1));
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 2u);
  EXPECT_EQ((*samples)[0].prompt[0], 1);  // BOS.
  EXPECT_EQ((*samples)[0].continuation.size(), 8u);
  CalibrationOptions o = testing::TinyCalibrationOptions();
  o.fit_gate = false;
  o.default_keep = false;
  o.keep_blocks = {};
  o.top_k = 2;
  auto d = Calibrate(Stories(), *samples, o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->keep, 0u);
  EXPECT_EQ(d->num_subsets(), 10);  // C(5, 2).
  EXPECT_FALSE(d->gate.has_value());
}

TEST(RouterFile, RoundTripsThroughSafetensors) {
  const Tiny& t = TinyCalibration();
  auto loaded = LoadRouterData(t.path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->fingerprint, t.data.fingerprint);
  EXPECT_EQ(loaded->subsets, t.data.subsets);
  EXPECT_EQ(loaded->subset_damage, t.data.subset_damage);
  EXPECT_EQ(loaded->skip_damage, t.data.skip_damage);
  EXPECT_EQ(loaded->features, t.data.features);
  EXPECT_EQ(loaded->idf, t.data.idf);
  EXPECT_EQ(loaded->blend, t.data.blend);
  EXPECT_EQ(loaded->prompt_hashes, t.data.prompt_hashes);
  EXPECT_EQ(loaded->keep, t.data.keep);
  EXPECT_EQ(loaded->neighbours, 7);
  ASSERT_TRUE(loaded->gate.has_value());
  EXPECT_EQ(loaded->gate->w1, t.data.gate->w1);
  EXPECT_EQ(loaded->gate_temperature, t.data.gate_temperature);
}

TEST(RouterFile, RejectsOtherFiles) {
  auto model_file = LoadRouterData(kStories + "/model.safetensors");
  ASSERT_FALSE(model_file.ok());
  EXPECT_NE(model_file.status().message().find("not a router file"), std::string::npos)
      << model_file.status();
  auto missing = LoadRouterData("/nonexistent/router.safetensors");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/router.safetensors"), std::string::npos);
  // A file whose tensors disagree with each other.
  RouterData d = TinyCalibration().data;
  d.skip_damage.pop_back();
  EXPECT_FALSE(SaveRouterData(testing::TempPath("bad.safetensors"), d).ok());
}

TEST(Router, LoadRejectsAnotherModelOrAnotherN) {
  const Tiny& t = TinyCalibration();
  auto other = model::Checkpoint::Open(kShared + "/fixtures/hf-random/llama-gqa");
  ASSERT_TRUE(other.ok()) << other.status();
  auto wrong_model = Router::Load(t.path, *other);
  ASSERT_FALSE(wrong_model.ok());
  EXPECT_EQ(wrong_model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong_model.status().message().find("another model"), std::string::npos)
      << wrong_model.status();
  EXPECT_NE(wrong_model.status().message().find(t.path), std::string::npos);

  RouterOptions o;
  o.expected_num_blocks = 4;
  auto wrong_n = Router::Load(t.path, StoriesCheckpoint(), o);
  ASSERT_FALSE(wrong_n.ok());
  EXPECT_EQ(wrong_n.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong_n.status().message().find("N = 5"), std::string::npos) << wrong_n.status();
  o.expected_num_blocks = 5;
  EXPECT_TRUE(Router::Load(t.path, StoriesCheckpoint(), o).ok());
}

TEST(Router, PredictsAdmissibleBlocksQuickly) {
  const Tiny& t = TinyCalibration();
  auto router = Router::Load(t.path, StoriesCheckpoint());
  ASSERT_TRUE(router.ok()) << router.status();
  std::vector<int64_t> prompt = {1, 403, 407, 261, 378, 10};
  for (int k = 2; k <= 5; ++k) {
    for (Scoring s : {Scoring::kStatic, Scoring::kNeighbours, Scoring::kGate, Scoring::kBoth,
                      Scoring::kDefault}) {
      PredictOptions po;
      po.scoring = s;
      auto p = (*router)->Predict(prompt, k, po);
      ASSERT_TRUE(p.ok()) << p.status();
      ASSERT_EQ(p->blocks.size(), static_cast<size_t>(k));
      EXPECT_EQ(p->blocks.front(), 0);
      EXPECT_EQ(p->blocks.back(), 4);
      EXPECT_EQ(p->weights, std::vector<float>(k, 1.0f));
      EXPECT_TRUE(std::is_sorted(p->blocks.begin(), p->blocks.end()));
      EXPECT_EQ(p->basis, k == 5 ? "blocks" : "subsets");
    }
  }
  // Deterministic. (Decision time is measured by bench/router_bench, not asserted here.)
  auto a = (*router)->Predict(prompt, 3);
  auto b = (*router)->Predict(prompt, 3);
  EXPECT_EQ(a->blocks, b->blocks);
}

TEST(Router, BadTopKAndPromptsGiveClearErrors) {
  auto router = Router::Load(TinyCalibration().path, StoriesCheckpoint());
  ASSERT_TRUE(router.ok());
  std::vector<int64_t> prompt = {1, 403};
  auto big = (*router)->Predict(prompt, 6);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("exceeds the number of blocks N = 5"), std::string::npos);
  auto zero = (*router)->Predict(prompt, 0);
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("at least 1"), std::string::npos);
  auto one = (*router)->Predict(prompt, 1);
  ASSERT_FALSE(one.ok());
  EXPECT_NE(one.status().message().find("always-kept"), std::string::npos);
  EXPECT_FALSE((*router)->Predict(std::vector<int64_t>{}, 3).ok());
  EXPECT_FALSE((*router)->Predict(std::vector<int64_t>{1, 600}, 3).ok());
}

TEST(Router, GateScoringNeedsAGate) {
  RouterData d = TinyCalibration().data;
  d.gate.reset();
  auto router = Router::Create(d, StoriesCheckpoint());
  ASSERT_TRUE(router.ok());
  PredictOptions po;
  po.scoring = Scoring::kGate;
  auto p = (*router)->Predict(std::vector<int64_t>{1, 403}, 3, po);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("--fit-gate"), std::string::npos);
  EXPECT_TRUE((*router)->Predict(std::vector<int64_t>{1, 403}, 3).ok());  // Default: neighbours.
}

TEST(Router, NeighboursReproduceACalibrationPromptsOwnBest) {
  // With K = 1 and no prior, a calibration prompt's nearest neighbour is itself, so the router
  // picks that prompt's measured best subset (the oracle) for it.
  RouterData d = TinyCalibration().data;
  d.neighbours = 1;
  std::fill(d.blend.begin(), d.blend.end(), 0.0f);
  auto router = Router::Create(d, StoriesCheckpoint());
  ASSERT_TRUE(router.ok());
  PredictOptions po;
  po.scoring = Scoring::kNeighbours;
  const std::vector<Sample>& samples = TinyCalibration().samples;
  for (int p = 0; p < d.num_prompts; ++p) {
    auto pred = (*router)->Predict(samples[p].prompt, 3, po);
    ASSERT_TRUE(pred.ok());
    // Identical prompts (possible when sampling short prompts) tie; the lower index wins.
    int q = 0;
    while (samples[q].prompt != samples[p].prompt) ++q;
    int best = 1;
    for (int s = 2; s <= 3; ++s) {
      if (d.subset_damage[q * 7 + s] < d.subset_damage[q * 7 + best]) best = s;
    }
    EXPECT_EQ(BlocksToMask(pred->blocks), d.subsets[best]) << "prompt " << p;
    EXPECT_NEAR(pred->expected_kl, d.subset_damage[q * 7 + best], 1e-6);
  }
}

TEST(Router, StaticScoringPicksTheLowestMeanDamage) {
  const RouterData& d = TinyCalibration().data;
  auto router = Router::Create(d, StoriesCheckpoint());
  ASSERT_TRUE(router.ok());
  int best = 1;
  for (int s = 2; s <= 3; ++s) {
    if (d.subset_prior[s] < d.subset_prior[best]) best = s;
  }
  PredictOptions po;
  po.scoring = Scoring::kStatic;
  for (const Sample& s : TinyCalibration().samples) {
    auto pred = (*router)->Predict(s.prompt, 3, po);
    ASSERT_TRUE(pred.ok());
    EXPECT_EQ(BlocksToMask(pred->blocks), d.subsets[best]);
  }
}

TEST(Router, TollsAndBatchesBalanceLoad) {
  auto router = Router::Load(TinyCalibration().path, StoriesCheckpoint());
  ASSERT_TRUE(router.ok());
  // The same prompt over and over: without tolls one subset takes all the traffic; with tolls
  // the free blocks 1..3 end up near equal use.
  std::vector<int64_t> prompt = TinyCalibration().samples[0].prompt;
  TollOptions to;
  to.rate = 0.2;
  (*router)->SetTollOptions(to);
  for (int i = 0; i < 600; ++i) ASSERT_TRUE((*router)->Route(prompt, 3).ok());
  Router::UsageStats u = (*router)->Usage();
  EXPECT_EQ(u.requests, 600);
  EXPECT_GT(u.jain, 0.9) << u.usage[1] << " " << u.usage[2] << " " << u.usage[3];
  EXPECT_DOUBLE_EQ(u.usage[0], 600);
  EXPECT_DOUBLE_EQ(u.tolls[0], 0);
  (*router)->ResetTolls();
  EXPECT_EQ((*router)->Usage().requests, 0);

  std::vector<std::vector<int64_t>> batch(9, prompt);
  BatchOptions bo;
  bo.congestion = 2.0;
  auto r = (*router)->BalanceBatch(batch, 3, bo);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->game.converged);
  EXPECT_LE(r->game.equilibrium_gap, 1e-9);
  EXPECT_NEAR(r->jain_alone, 1.0 / 3.0, 1e-9);
  EXPECT_GT(r->game.jain, r->jain_alone);
  EXPECT_GE(r->mean_expected_kl, r->mean_expected_kl_alone - 1e-12);
  ASSERT_EQ(r->predictions.size(), 9u);
  EXPECT_FALSE((*router)->BalanceBatch(batch, 7, bo).ok());
}

}  // namespace
}  // namespace swarm::router
