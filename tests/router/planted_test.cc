// The router's positive control: on a planted model (swarm synth --planted), where which blocks
// matter depends on the prompt's token range by construction, the router must beat the
// strongest static subset by a wide margin. Also: the strongest-static search, near-duplicate
// removal and the block0 feature on the same model. Fixed seeds; a few seconds.
#include <filesystem>
#include <map>

#include "gtest/gtest.h"
#include "model/generate.h"
#include "router/calibration/calibrate.h"
#include "router/calibration/evaluate.h"
#include "router/calibration/probe.h"
#include "router/router.h"
#include "tests/util/files.h"
#include "tools/synth.h"

namespace swarm::router {
namespace {

constexpr int kLayers = 10;  // Blocks 0 and 9 kept, 8 free: 2 per token range.
constexpr int kGroups = 4;
constexpr int kTopK = 4;  // 2 kept + 2: exactly one range's layers.

struct Planted {
  std::string dir;
  std::unique_ptr<model::Engine> engine;
  std::vector<Sample> calibration, test;
};

SampleOptions PlantedSamples(int count, uint64_t stream) {
  SampleOptions o;
  o.count = count;
  o.seed = 3;
  o.stream = stream;
  o.min_prompt_tokens = 4;
  o.max_prompt_tokens = 12;
  o.continuation_tokens = 8;
  return o;
}

const Planted& PlantedModel() {
  static Planted* planted = [] {
    auto* p = new Planted();
    p->dir = test_util::MakeTempDir("swarm_planted", "model");
    tools::SynthOptions s;
    s.layers = kLayers;
    s.hidden = 48;
    s.intermediate = 16;
    s.heads = 4;
    s.vocab = 3 + kGroups * 16;
    s.max_position = 64;
    s.seed = 1;
    s.planted_groups = kGroups;
    s.out_dir = p->dir;
    absl::StatusOr<tools::SynthResult> written = tools::WriteSynthModel(s);
    EXPECT_TRUE(written.ok()) << written.status();
    auto engine = model::Engine::Create(p->dir);
    EXPECT_TRUE(engine.ok()) << engine.status();
    p->engine = std::move(*engine);
    p->calibration = *SampleFromModel(*p->engine, PlantedSamples(64, 1));
    p->test = *SampleFromModel(*p->engine, PlantedSamples(48, 2));
    return p;
  }();
  return *planted;
}

CalibrationOptions PlantedCalibration() {
  CalibrationOptions o;
  o.num_blocks = kLayers;
  o.top_ks = {kTopK};
  o.seed = 3;
  o.search_prompts = 32;
  // C(8, 2) = 28 subsets: fewer than 28 allowed forces the measured-candidate path.
  o.max_subsets_per_k = 8;
  return o;
}

// The prompt's token range (ids 3.. in kGroups equal ranges), -1 when mixed.
int RangeOf(const std::vector<int64_t>& prompt) {
  int range = -1;
  for (size_t i = 1; i < prompt.size(); ++i) {
    if (prompt[i] < 3) return -1;
    int r = static_cast<int>((prompt[i] - 3) * kGroups / (kGroups * 16));
    if (range >= 0 && r != range) return -1;
    range = r;
  }
  return range;
}

TEST(Planted, SampledTextStaysInItsFirstTokensRange) {
  const Planted& p = PlantedModel();
  int pure = 0;
  std::map<int, int> ranges;
  for (const Sample& s : p.calibration) {
    int r = RangeOf(s.prompt);
    if (r >= 0) ++pure, ++ranges[r];
  }
  EXPECT_GE(pure, 48);           // Nearly every prompt is from one range ...
  EXPECT_EQ(ranges.size(), 4u);  // ... and every range occurs.
}

TEST(Planted, SkipDamageDependsOnThePromptsRange) {
  const Planted& p = PlantedModel();
  ASSERT_TRUE(p.engine != nullptr);
  auto layout = BlockLayout::Create(kLayers, kLayers);
  ASSERT_TRUE(layout.ok());
  // A layer of the prompt's own range costs far more to skip than one of another range.
  int checked = 0;
  for (const Sample& s : p.calibration) {
    int r = RangeOf(s.prompt);
    if (r < 0) continue;
    const BlockMask full = FullMask(kLayers);
    int own = 1 + r, other = 1 + (r + 1) % kGroups;
    auto m = MeasureSubsets(*p.engine, *layout, s,
                            {full & ~(BlockMask{1} << own), full & ~(BlockMask{1} << other)});
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_GT(m->at(full & ~(BlockMask{1} << own)).kl,
              10 * m->at(full & ~(BlockMask{1} << other)).kl + 1e-3);
    if (++checked == 8) break;
  }
  EXPECT_EQ(checked, 8);
}

TEST(Planted, RouterBeatsTheStrongestStaticSubsetByAWideMargin) {
  const Planted& p = PlantedModel();
  ASSERT_TRUE(p.engine != nullptr);
  CalibrationReport cr;
  auto data = Calibrate(*p.engine, p.calibration, PlantedCalibration(), &cr);
  ASSERT_TRUE(data.ok()) << data.status();
  // Not enumerated: a measured candidate list instead.
  const LooSummary* loo = nullptr;
  for (const LooSummary& l : cr.loo) {
    if (l.top_k == kTopK) loo = &l;
  }
  ASSERT_NE(loo, nullptr);
  EXPECT_FALSE(loo->additive);
  EXPECT_FALSE(loo->enumerated);
  EXPECT_GE(loo->candidates, 4);
  EXPECT_GT(loo->correlation, 0.5);  // The embedding feature's neighbours share damages.
  EXPECT_LE(loo->router_kl, 0.7 * loo->static_kl);
  auto router = Router::Create(*data, p.engine->checkpoint());
  ASSERT_TRUE(router.ok()) << router.status();
  int dropped = 0, near = 0;
  std::vector<Sample> test = DisjointFromCalibration(**router, p.test, &dropped, {}, &near);
  ASSERT_GE(test.size(), 32u);
  EvalOptions o;
  o.top_ks = {kTopK};
  o.greedy_tokens = 0;
  o.bootstrap_samples = 1000;
  o.balance = false;
  o.seed = 3;
  auto report = Evaluate(*p.engine, **router, test, o);
  ASSERT_TRUE(report.ok()) << report.status();
  const BootstrapCi* ci = nullptr;
  for (const BootstrapCi& c : report->cis) {
    if (c.strategy == "router: neighbours") ci = &c;
  }
  ASSERT_NE(ci, nullptr);
  // The reference is the strongest static row on the test set (best static or drop-deepest).
  double strongest = 1e300;
  for (const StrategyRow& r : report->rows) {
    if (r.strategy == "best static" || r.strategy == "drop-deepest") {
      strongest = std::min(strongest, r.mean_kl);
    }
  }
  EXPECT_DOUBLE_EQ(ci->static_mean, strongest);
  EXPECT_LE(ci->mean, 0.7 * ci->static_mean) << ci->mean << " vs " << ci->static_mean;
  std::printf(
      "planted: router %.4f, strongest static (%s) %.4f, reduction %.1f%% [%.1f%%, %.1f%%]\n",
      ci->mean, ci->reference.c_str(), ci->static_mean, 100 * ci->reduction, 100 * ci->lo,
      100 * ci->hi);
  EXPECT_GT(ci->lo, 0.0) << "[" << ci->lo << ", " << ci->hi << "]";
}

TEST(Planted, Block0FeatureRoutesAsWellAndServingRefusesIt) {
  const Planted& p = PlantedModel();
  ASSERT_TRUE(p.engine != nullptr);
  CalibrationOptions co = PlantedCalibration();
  co.feature = kFeatureBlock0;
  auto data = Calibrate(*p.engine, p.calibration, co);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->feature, kFeatureBlock0);
  auto refused = Router::Create(*data, p.engine->checkpoint());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  RouterOptions ro;
  ro.allow_block0_feature = true;
  auto router = Router::Create(*data, p.engine->checkpoint(), ro);
  ASSERT_TRUE(router.ok()) << router.status();
  EXPECT_EQ((*router)->Features(p.test[0].prompt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EvalOptions o;
  o.top_ks = {kTopK};
  o.greedy_tokens = 0;
  o.bootstrap_samples = 500;
  o.balance = false;
  std::vector<Sample> test = DisjointFromCalibration(**router, p.test, nullptr);
  auto report = Evaluate(*p.engine, **router, test, o);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_FALSE(report->cis.empty());
  EXPECT_LE(report->cis[0].mean, 0.7 * report->cis[0].static_mean);
  // The file round-trips with its feature and calibration prompts.
  std::string path = p.dir + "/block0_router.safetensors";
  ASSERT_TRUE(SaveRouterData(path, *data).ok());
  auto loaded = LoadRouterData(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->feature, kFeatureBlock0);
  EXPECT_EQ(loaded->prompt_offsets, data->prompt_offsets);
  EXPECT_EQ(loaded->prompt_ids, data->prompt_ids);
}

TEST(Planted, SynthRefusesBadPlantedShapes) {
  tools::SynthOptions s;
  s.layers = 2;
  s.hidden = 48;
  s.intermediate = 16;
  s.heads = 4;
  s.vocab = 67;
  s.planted_groups = 4;
  s.out_dir = "/tmp/unused";
  EXPECT_EQ(tools::ValidateSynthOptions(s).code(), absl::StatusCode::kInvalidArgument);
  s.layers = 8;
  s.hidden = 12;
  EXPECT_EQ(tools::ValidateSynthOptions(s).code(), absl::StatusCode::kInvalidArgument);
  s.hidden = 48;
  s.tie_embeddings = true;
  EXPECT_EQ(tools::ValidateSynthOptions(s).code(), absl::StatusCode::kInvalidArgument);
  s.tie_embeddings = false;
  EXPECT_TRUE(tools::ValidateSynthOptions(s).ok());
}

TEST(NearDuplicates, JaccardIndexOfNgrams) {
  // BOS (first id) is left out; 4-grams of [5,6,7,8,9] are {5678, 6789}.
  EXPECT_DOUBLE_EQ(NgramOverlap({1, 5, 6, 7, 8, 9}, {1, 5, 6, 7, 8, 9}, 4), 1.0);
  EXPECT_DOUBLE_EQ(NgramOverlap({1, 5, 6, 7, 8, 9}, {1, 5, 6, 7, 8, 9, 10, 11, 12}, 4), 0.4);
  EXPECT_DOUBLE_EQ(NgramOverlap({1, 5, 6, 7, 8, 9}, {1, 5, 6, 7, 8, 4}, 4), 1.0 / 3);
  EXPECT_DOUBLE_EQ(NgramOverlap({1, 5, 6, 7, 8, 9}, {1, 9, 8, 7, 6, 5}, 4), 0.0);
  EXPECT_DOUBLE_EQ(NgramOverlap({1, 5, 6}, {1, 5, 6}, 4), 1.0);     // Shorter than n: 2-grams.
  EXPECT_DOUBLE_EQ(NgramOverlap({1, 5, 6}, {1, 5, 6, 7}, 4), 0.5);  // {56} vs {56, 67}.
}

TEST(NearDuplicates, NearTwinsOfCalibrationPromptsAreDropped) {
  const Planted& p = PlantedModel();
  ASSERT_TRUE(p.engine != nullptr);
  CalibrationOptions co = PlantedCalibration();
  co.search_beam = 0;
  auto data = Calibrate(*p.engine, p.calibration, co);
  ASSERT_TRUE(data.ok()) << data.status();
  auto router = Router::Create(*data, p.engine->checkpoint());
  ASSERT_TRUE(router.ok());
  std::vector<Sample> mixed;
  Sample twin = p.calibration[0];
  twin.prompt.push_back(twin.prompt.back());  // A near-twin: one token longer.
  mixed.push_back(twin);
  mixed.push_back(p.calibration[1]);  // An exact repeat.
  Sample unrelated;
  unrelated.prompt = {1, 3, 60, 4, 59, 5, 58};
  unrelated.continuation = p.calibration[2].continuation;
  mixed.push_back(unrelated);
  int dropped = 0, near = 0;
  std::vector<Sample> kept = DisjointFromCalibration(**router, mixed, &dropped, {}, &near);
  EXPECT_EQ(dropped, 1);
  EXPECT_EQ(near, 1);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].prompt, unrelated.prompt);
  // Only exact repeats when the threshold is above 1.
  OverlapOptions exact;
  exact.max_overlap = 2;
  kept = DisjointFromCalibration(**router, mixed, &dropped, exact, &near);
  EXPECT_EQ(near, 0);
  EXPECT_EQ(kept.size(), 2u);
}

}  // namespace
}  // namespace swarm::router
