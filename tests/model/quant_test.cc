// q8 and q4 weights end to end (model/cpu_qmatmul.h behind Linear(), quantized at load): their
// quality against Hugging Face's f32 logits on every fixture model's golden sequences (KL(f32 ‖
// quantized) and top-1 agreement, the figures docs/quality.md quotes), stories260K's greedy
// continuation, and the gemm path of long chunks (blocks dequantized) against the row kernel's
// incremental decoding.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/weight_format.h"
#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "model/sampler.h"
#include "model/weights.h"
#include "tests/model/fixtures.h"

namespace swarm::model {
namespace {

std::vector<Fixture> QuantFixtures() {
  std::vector<Fixture> f = Fixtures();
  f.push_back({"stories-distill-12L", kShared + "/models/stories-distill-12L", {"long"}});
  return f;
}

std::string GoldenPath(const Fixture& fx) {
  return fx.name == "stories-distill-12L"
             ? fx.model_dir + "/golden.safetensors"
             : kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors";
}

LoadOptions Quantized(WeightQuant q) {
  LoadOptions o;
  o.quant = q;
  return o;
}

// A reference top-2 margin under this fraction of the standard deviation of the reference's
// logits is a near tie: the random-weight fixtures have a few (their logits are nearly flat),
// where any perturbation of the weights at the 1e-3 level may swap the two — bf16 weights flip
// some of them too (docs/quality.md). Measured: the q8 flips have margins of 0.003-0.066.
constexpr double kNearTie = 0.1;

struct Agreement {
  double mean_kl = 0;  // Mean over positions of KL(reference ‖ candidate), nats.
  double top1 = 0;     // Fraction of positions whose argmax agrees.
  int decided = 0;     // Positions that are not near ties, and how many of them agree.
  int decided_agree = 0;
  double worst_flip = 0;  // The largest reference margin (in standard deviations) of a flip.
  double DecidedTop1() const {
    return decided > 0 ? static_cast<double>(decided_agree) / decided : 1;
  }
};

// Rows of [T, V] logits: KL(softmax(ref) ‖ softmax(got)) in double, and argmax agreement.
Agreement Compare(const std::vector<float>& ref, const std::vector<float>& got, int64_t V) {
  const int64_t T = static_cast<int64_t>(ref.size()) / V;
  Agreement a;
  for (int64_t t = 0; t < T; ++t) {
    const float* p = ref.data() + t * V;
    const float* q = got.data() + t * V;
    double mp = p[0], mq = q[0];
    int64_t ap = 0, aq = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (p[v] > mp) mp = p[v], ap = v;
      if (q[v] > mq) mq = q[v], aq = v;
    }
    double zp = 0, zq = 0;
    for (int64_t v = 0; v < V; ++v) {
      zp += std::exp(p[v] - mp);
      zq += std::exp(q[v] - mq);
    }
    const double lzp = std::log(zp) + mp, lzq = std::log(zq) + mq;
    double kl = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double lp = p[v] - lzp, lq = q[v] - lzq;
      kl += std::exp(lp) * (lp - lq);
    }
    a.mean_kl += kl / T;
    a.top1 += (ap == aq ? 1.0 : 0.0) / T;
    // The reference's margin between its top two, against the spread of its logits.
    double second = -1e30, mean = 0, var = 0;
    for (int64_t v = 0; v < V; ++v) {
      if (v != ap) second = std::max(second, static_cast<double>(p[v]));
      mean += p[v] / static_cast<double>(V);
    }
    for (int64_t v = 0; v < V; ++v) var += (p[v] - mean) * (p[v] - mean) / static_cast<double>(V);
    const double margin = (p[ap] - second) / std::sqrt(var);
    if (ap != aq) a.worst_flip = std::max(a.worst_flip, margin);
    if (margin >= kNearTie) {
      ++a.decided;
      a.decided_agree += ap == aq;
    }
  }
  return a;
}

class QuantGoldenTest : public ::testing::TestWithParam<Fixture> {};

// The acceptance figures: q8 within mean KL 0.01 of Hugging Face's f32 logits on every golden
// sequence, top-1 agreement >= 0.98 on the trained models' sequences (stories260K and its distilled
// student) and on every model's positions that are not near ties (kNearTie; on the random-weight
// fixtures a handful of near-tie positions flip, so the agreement over all positions is below
// 0.98 there: printed, and quoted in docs/quality.md). q4's figures printed,
// held to looser bounds so that a broken q4 still fails.
TEST_P(QuantGoldenTest, QuantizedLogitsAgreeWithHuggingFace) {
  const Fixture& fx = GetParam();
  auto golden = SafetensorsFile::Open(GoldenPath(fx));
  ASSERT_TRUE(golden.ok()) << golden.status();
  for (WeightQuant q : {WeightQuant::kQ8, WeightQuant::kQ4}) {
    auto engine = Engine::Create(fx.model_dir, Quantized(q));
    ASSERT_TRUE(engine.ok()) << engine.status();
    const int64_t V = (*engine)->config().vocab_size;
    for (const std::string& seq : fx.sequences) {
      SCOPED_TRACE(fx.name + "/" + seq + " " + WeightQuantName(q));
      auto logits = (*engine)->Logits(ReadIds(**golden, seq + ".input_ids"));
      ASSERT_TRUE(logits.ok()) << logits.status();
      const Agreement a = Compare(ReadFloats(**golden, seq + ".logits"), logits->ToFloats(), V);
      std::printf(
          "quality %s %s/%s: mean KL %.6f, top-1 %.4f, top-1 outside near ties %.4f (%d), "
          "largest margin flipped %.4f sd\n",
          WeightQuantName(q), fx.name.c_str(), seq.c_str(), a.mean_kl, a.top1, a.DecidedTop1(),
          a.decided, a.worst_flip);
      const bool trained = fx.name == "stories260K" || fx.name == "stories-distill-12L";
      if (q == WeightQuant::kQ8) {
        EXPECT_LE(a.mean_kl, 0.01);
        EXPECT_GE(a.DecidedTop1(), 0.98);
        if (trained) {
          EXPECT_GE(a.top1, 0.98);
        }
      } else {
        EXPECT_LE(a.mean_kl, 0.1);
        if (trained) {
          EXPECT_GE(a.top1, 0.85);
        }
      }
    }
  }
}

// A long chunk goes through gemm over dequantized blocks, a decode step through the row kernel:
// the same weights, so the same logits to f32 rounding.
TEST_P(QuantGoldenTest, GemmPathMatchesRowKernelDecoding) {
  const Fixture& fx = GetParam();
  auto golden = SafetensorsFile::Open(GoldenPath(fx));
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto engine = Engine::Create(fx.model_dir, Quantized(WeightQuant::kQ8));
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<int64_t> ids = ReadIds(**golden, fx.sequences[0] + ".input_ids");
  ASSERT_GT(ids.size(), static_cast<size_t>(kInvariantMaxRows));
  auto full = (*engine)->Logits(ids);
  ASSERT_TRUE(full.ok()) << full.status();
  const std::vector<float> want = full->ToFloats();
  const int64_t V = (*engine)->config().vocab_size;
  LocalExecutor exec(&(*engine)->layers());
  std::vector<float> got;
  for (size_t t = 0; t < ids.size(); ++t) {
    const int64_t id[1] = {ids[t]};
    auto h = (*engine)->ends().Embed(id, static_cast<int64_t>(t));
    ASSERT_TRUE(h.ok()) << h.status();
    auto out = exec.Run(*h, static_cast<int64_t>(t));
    ASSERT_TRUE(out.ok()) << out.status();
    auto logits = (*engine)->ends().Logits(*out, /*last_only=*/true);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const std::vector<float> row = logits->ToFloats();
    got.insert(got.end(), row.begin(), row.end());
  }
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(MaxAbsDiff(got, want), 1e-4) << V;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantGoldenTest, ::testing::ValuesIn(QuantFixtures()),
                         FixtureTestName);

// stories260K from BOS, greedy: q8 continues exactly as f32 (Hugging Face's golden greedy
// sequence, BOS + 47 tokens) for at least the first 32 tokens.
TEST(QuantGreedyTest, Stories260KQ8ContinuesAsF32FromBos) {
  auto golden = SafetensorsFile::Open(kShared + "/fixtures/golden/stories260K/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  const std::vector<int64_t> f32 = ReadIds(**golden, "greedy.input_ids");  // BOS + 47 greedy.
  auto engine = Engine::Create(kShared + "/models/stories260K", Quantized(WeightQuant::kQ8));
  ASSERT_TRUE(engine.ok()) << engine.status();
  SamplingParams p;
  p.max_new_tokens = static_cast<int64_t>(f32.size()) - 1;
  p.stop_at_eos = false;
  auto result = (*engine)->Generate({f32[0]}, p);
  ASSERT_TRUE(result.ok()) << result.status();
  size_t same = 0;
  while (same < result->ids.size() && same + 1 < f32.size() && result->ids[same] == f32[same + 1])
    ++same;
  std::printf("q8 greedy from BOS: first %zu of %zu tokens as f32\n", same, f32.size() - 1);
  EXPECT_GE(same, 32u);
}

}  // namespace
}  // namespace swarm::model
