// The model library against Hugging Face's own numbers (../shared/fixtures/golden): every hidden
// state, the logits and the greedy ids for each fixture model; incremental decoding through the KV
// cache against one full forward.
#include <cmath>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "model/sampler.h"
#include "model/weights.h"
#include "tests/model/fixtures.h"

namespace swarm::model {
namespace {

class GoldenTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(GoldenTest, HiddenStatesAndLogitsMatchHuggingFace) {
  const Fixture& fx = GetParam();
  auto golden =
      SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto engine = Engine::Create(fx.model_dir);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const ModelConfig& c = (*engine)->config();
  for (const std::string& seq : fx.sequences) {
    SCOPED_TRACE(fx.name + "/" + seq);
    std::vector<int64_t> ids = ReadIds(**golden, seq + ".input_ids");
    auto h = (*engine)->ends().Embed(ids, 0);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_LT(MaxAbsDiff(h->ToFloats(), ReadFloats(**golden, seq + ".hidden.0")), 1e-4);
    // One layer at a time so every intermediate hidden state is checked.
    auto cache = (*engine)->layers().NewCache();
    HostTensor x = *h;
    for (int l = 0; l < c.num_layers; ++l) {
      const int layer[1] = {l};
      auto next = (*engine)->layers().Forward(x, 0, layer, cache.get());
      ASSERT_TRUE(next.ok()) << next.status();
      x = std::move(*next);
      if (l + 1 < c.num_layers) {
        EXPECT_LT(MaxAbsDiff(x.ToFloats(),
                             ReadFloats(**golden, seq + ".hidden." + std::to_string(l + 1))),
                  1e-4)
            << "layer " << l;
      }
    }
    auto normed = (*engine)->ends().FinalNorm(x);
    ASSERT_TRUE(normed.ok()) << normed.status();
    EXPECT_LT(MaxAbsDiff(normed->ToFloats(),
                         ReadFloats(**golden, seq + ".hidden." + std::to_string(c.num_layers))),
              1e-4);
    auto logits = (*engine)->Logits(ids);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_EQ(logits->shape,
              (std::vector<int64_t>{static_cast<int64_t>(ids.size()), c.vocab_size}));
    EXPECT_LT(MaxAbsDiff(logits->ToFloats(), ReadFloats(**golden, seq + ".logits")), 1e-4);
  }
}

TEST_P(GoldenTest, GreedyIdsMatchHuggingFace) {
  const Fixture& fx = GetParam();
  auto golden =
      SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto engine = Engine::Create(fx.model_dir);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (const std::string& seq : fx.sequences) {
    if (!(*golden)->Has(seq + ".greedy")) continue;
    SCOPED_TRACE(fx.name + "/" + seq);
    std::vector<int64_t> ids = ReadIds(**golden, seq + ".input_ids");
    std::vector<int64_t> want = ReadIds(**golden, seq + ".greedy");
    SamplingParams p;
    p.max_new_tokens = static_cast<int64_t>(want.size());
    p.stop_at_eos = false;
    auto result = (*engine)->Generate(ids, p);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids, want);
  }
}

// Zero-copy loading keeps q/k/v and gate/up as separate views of the mapping instead of fused
// copies: a different code path that must give the same numbers.
TEST_P(GoldenTest, ZeroCopyWeightsMatchHuggingFace) {
  const Fixture& fx = GetParam();
  auto golden =
      SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  LoadOptions options;
  options.copy_weights = false;
  auto engine = Engine::Create(fx.model_dir, options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::string seq = fx.sequences[0];
  auto logits = (*engine)->Logits(ReadIds(**golden, seq + ".input_ids"));
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LT(MaxAbsDiff(logits->ToFloats(), ReadFloats(**golden, seq + ".logits")), 1e-4);
}

// Both layouts of CPU weight copies (panel-major, row-major; forced, whatever this CPU would
// choose) through both CPU paths (the fused layers, and LibTorch's with SWARM_FUSED_LAYERS=0: a
// prefill through at::matmul on the panels, decode rows through the row kernel): the full
// forward's logits and a few decode steps' against Hugging Face's.
TEST_P(GoldenTest, EveryCpuWeightLayoutMatchesHuggingFace) {
  const Fixture& fx = GetParam();
  auto golden =
      SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  const std::string seq = fx.sequences[0];
  const std::vector<int64_t> ids = ReadIds(**golden, seq + ".input_ids");
  const std::vector<float> want = ReadFloats(**golden, seq + ".logits");
  for (CpuWeightLayout layout : {CpuWeightLayout::kPanels, CpuWeightLayout::kRows}) {
    for (const char* fused : {"1", "0"}) {
      SCOPED_TRACE(std::string(layout == CpuWeightLayout::kPanels ? "panels" : "rows") + " fused " +
                   fused);
      ScopedEnv env("SWARM_FUSED_LAYERS", fused);
      LoadOptions options;
      options.layout = layout;
      auto engine = Engine::Create(fx.model_dir, options);
      ASSERT_TRUE(engine.ok()) << engine.status();
      auto logits = (*engine)->Logits(ids);
      ASSERT_TRUE(logits.ok()) << logits.status();
      EXPECT_LT(MaxAbsDiff(logits->ToFloats(), want), 1e-4);
      // The first half as one prefill, then decode steps of one token.
      const int64_t T = static_cast<int64_t>(ids.size()), V = (*engine)->config().vocab_size;
      LocalExecutor exec(&(*engine)->layers());
      for (int64_t pos = 0; pos < T;) {
        const int64_t n = pos == 0 ? T / 2 : 1;
        auto h = (*engine)->ends().Embed(
            std::vector<int64_t>(ids.begin() + pos, ids.begin() + pos + n), pos);
        ASSERT_TRUE(h.ok()) << h.status();
        auto out = exec.Run(*h, pos);
        ASSERT_TRUE(out.ok()) << out.status();
        auto l = (*engine)->ends().Logits(*out, false);
        ASSERT_TRUE(l.ok()) << l.status();
        EXPECT_LT(MaxAbsDiff(l->ToFloats(), std::vector<float>(want.begin() + pos * V,
                                                               want.begin() + (pos + n) * V)),
                  1e-4)
            << "rows " << pos << ".." << pos + n - 1;
        pos += n;
      }
    }
  }
}

// Prefill part of the sequence, then one token at a time through the KV cache: every logits row
// must equal the full forward's. The Mistral model's 40-token sequence crosses its 16-token window.
TEST_P(GoldenTest, IncrementalDecodingMatchesFullForward) {
  const Fixture& fx = GetParam();
  auto golden =
      SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto engine = Engine::Create(fx.model_dir);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::string seq = fx.sequences[0];
  std::vector<int64_t> ids = ReadIds(**golden, seq + ".input_ids");
  std::vector<float> want = ReadFloats(**golden, seq + ".logits");
  const int64_t V = (*engine)->config().vocab_size;
  const int64_t T = static_cast<int64_t>(ids.size());
  for (int64_t prefill : {int64_t{1}, T / 3}) {
    SCOPED_TRACE("prefill " + std::to_string(prefill));
    LocalExecutor exec(&(*engine)->layers());
    std::vector<float> got;
    for (int64_t pos = 0; pos < T;) {
      const int64_t n = pos == 0 ? prefill : 1;
      std::vector<int64_t> chunk(ids.begin() + pos, ids.begin() + pos + n);
      auto h = (*engine)->ends().Embed(chunk, pos);
      ASSERT_TRUE(h.ok()) << h.status();
      auto out = exec.Run(*h, pos);
      ASSERT_TRUE(out.ok()) << out.status();
      auto logits = (*engine)->ends().Logits(*out, false);
      ASSERT_TRUE(logits.ok()) << logits.status();
      std::vector<float> rows = logits->ToFloats();
      got.insert(got.end(), rows.begin(), rows.end());
      pos += n;
    }
    ASSERT_EQ(static_cast<int64_t>(got.size()), T * V);
    EXPECT_LT(MaxAbsDiff(got, want), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, GoldenTest, ::testing::ValuesIn(Fixtures()), FixtureTestName);

// stories260K from BOS: llama2.c's run.c ids and the TinyStories text.
TEST(Stories260K, GreedyStoryFromBos) {
  auto engine = Engine::Create(kShared + "/models/stories260K");
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto golden = SafetensorsFile::Open(kShared + "/fixtures/golden/stories260K/golden.safetensors");
  ASSERT_TRUE(golden.ok());
  std::vector<int64_t> input = ReadIds(**golden, "greedy.input_ids");
  SamplingParams p;
  p.max_new_tokens = static_cast<int64_t>(input.size()) - 1;
  p.stop_at_eos = false;
  auto result = (*engine)->Generate({1}, p);
  ASSERT_TRUE(result.ok()) << result.status();
  // greedy.input_ids is BOS followed by the greedy continuation that run.c produces.
  EXPECT_EQ(result->ids, std::vector<int64_t>(input.begin() + 1, input.end()));
  ASSERT_NE((*engine)->tokenizer(), nullptr);
  EXPECT_EQ(result->text.rfind("Once upon a time, there was a little girl named Lily. She loved "
                               "to play outside",
                               0),
            0u)
      << result->text;
}

TEST(Sampler, SeedIsReproducibleAndTopKRestricts) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.5f, 2.5f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  Sampler a(p), b(p);
  // A pure function of (seed, position): the same in any order, from any Sampler.
  std::set<int64_t> seen;
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.Sample(logits, i), b.Sample(logits, i));
    seen.insert(a.Sample(logits, i));
  }
  for (int i = 49; i >= 0; --i) EXPECT_EQ(b.Sample(logits, i), a.Sample(logits, i));
  EXPECT_GT(seen.size(), 2u) << "the draws must vary with the position";
  SamplingParams other = p;
  other.seed = 43;
  Sampler c(other);
  int differ = 0;
  for (int i = 0; i < 50; ++i) differ += c.Sample(logits, i) != a.Sample(logits, i);
  EXPECT_GT(differ, 0) << "the draws must depend on the seed";
  p.top_k = 2;
  Sampler k(p);
  for (int i = 0; i < 200; ++i) {
    int64_t id = k.Sample(logits, i);
    EXPECT_TRUE(id == 1 || id == 4) << id;
  }
  p.top_k = 0;
  p.top_p = 0.3f;  // The top token alone holds more than 30 % of the mass.
  Sampler nucleus(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(nucleus.Sample(logits, i), 1);
  SamplingParams greedy;
  EXPECT_EQ(Sampler(greedy).Sample(logits, 0), 1);
}

TEST(Sampler, RejectsBadParams) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.temperature = -1.0f;
  EXPECT_FALSE(p.Validate().ok());
  p = {};
  p.top_k = -3;
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace swarm::model
