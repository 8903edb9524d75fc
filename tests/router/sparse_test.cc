// Sparse execution in-process: all blocks = exact (against Hugging Face's logits), the gate and
// the parallel combine behave as the design says, decoding with a fixed block set is consistent.
#include "router/sparse.h"

#include <cmath>

#include "common/block_layout.h"
#include "gtest/gtest.h"
#include "model/safetensors.h"
#include "router/calibration/divergence.h"
#include "router/calibration/probe.h"
#include "router_test_util.h"

namespace swarm::router {
namespace {

using testing::Stories;

BlockLayout Layout(int n) {
  auto l = BlockLayout::Create(5, n);
  EXPECT_TRUE(l.ok());
  return *l;
}

absl::StatusOr<HostTensor> SparseLogits(const std::vector<int64_t>& ids, const SparsePlan& plan,
                                        int num_blocks = 5) {
  const model::Engine& e = Stories();
  auto exec = SparseExecutor::Create(&e.layers(), Layout(num_blocks), plan);
  if (!exec.ok()) return exec.status();
  auto h = e.ends().Embed(ids, 0);
  if (!h.ok()) return h.status();
  auto out = (*exec)->Run(*h, 0);
  if (!out.ok()) return out.status();
  return e.ends().Logits(*out, false);
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

TEST(Sparse, AllBlocksSequentialEqualsExactAndGolden) {
  auto golden = model::SafetensorsFile::Open(testing::kShared +
                                             "/fixtures/golden/stories260K/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto ids_view = (*golden)->Get("prompt.input_ids");
  auto logits_view = (*golden)->Get("prompt.logits");
  ASSERT_TRUE(ids_view.ok() && logits_view.ok());
  const auto* p = reinterpret_cast<const int64_t*>(ids_view->data);
  std::vector<int64_t> ids(p, p + ids_view->NumElements());
  const auto* l = reinterpret_cast<const float*>(logits_view->data);
  std::vector<float> ref(l, l + logits_view->NumElements());
  for (int n : {1, 2, 5}) {
    SparsePlan plan;
    for (int b = 0; b < n; ++b) plan.blocks.push_back(b);
    auto logits = SparseLogits(ids, plan, n);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LT(MaxAbsDiff(logits->ToFloats(), ref), 1e-4) << "N = " << n;
    auto exact = Stories().Logits(ids);
    ASSERT_TRUE(exact.ok());
    EXPECT_EQ(MaxAbsDiff(logits->ToFloats(), exact->ToFloats()), 0.0) << "N = " << n;
  }
}

TEST(Sparse, SkippingABlockChangesTheOutput) {
  std::vector<int64_t> ids = {1, 403, 407, 261, 378};
  auto full = Stories().Logits(ids);
  SparsePlan plan;
  plan.blocks = {0, 1, 3, 4};
  auto sparse = SparseLogits(ids, plan);
  ASSERT_TRUE(full.ok() && sparse.ok());
  EXPECT_GT(MaxAbsDiff(full->ToFloats(), sparse->ToFloats()), 1e-3);
  auto d = CompareLogits(*full, *sparse, ids, 0);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_GT(d->kl, 0);
  auto self = CompareLogits(*full, *full, ids, 0);
  ASSERT_TRUE(self.ok());
  EXPECT_NEAR(self->kl, 0, 1e-9);
  EXPECT_DOUBLE_EQ(self->top1, 1.0);
}

TEST(Sparse, ZeroGateIsASkipAndParallelSingleBlockIsSequential) {
  std::vector<int64_t> ids = {1, 403, 407, 261, 378, 10};
  SparsePlan skip;
  skip.blocks = {0, 2, 4};
  SparsePlan gated;
  gated.blocks = {0, 1, 2, 4};
  gated.weights = {1, 0, 1, 1};
  auto a = SparseLogits(ids, skip);
  auto b = SparseLogits(ids, gated);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_LT(MaxAbsDiff(a->ToFloats(), b->ToFloats()), 1e-5);

  SparsePlan seq;
  seq.blocks = {2};
  seq.weights = {0.7f};
  SparsePlan par = seq;
  par.combine = Combine::kParallel;
  auto s = SparseLogits(ids, seq);
  auto p = SparseLogits(ids, par);
  ASSERT_TRUE(s.ok() && p.ok()) << s.status() << p.status();
  EXPECT_LT(MaxAbsDiff(s->ToFloats(), p->ToFloats()), 1e-5);
}

TEST(Sparse, ParallelCombineIsTheWeightedSumOfResiduals) {
  const model::Engine& e = Stories();
  std::vector<int64_t> ids = {1, 403, 407};
  auto h = e.ends().Embed(ids, 0);
  ASSERT_TRUE(h.ok());
  std::vector<float> h0 = h->ToFloats();
  std::vector<float> expected = h0;
  for (auto [layer, w] : {std::pair<int, float>{1, 0.5f}, {3, 2.0f}}) {
    auto cache = e.layers().NewCache();
    auto out = e.layers().Forward(*h, 0, std::vector<int>{layer}, cache.get());
    ASSERT_TRUE(out.ok());
    std::vector<float> o = out->ToFloats();
    for (size_t i = 0; i < o.size(); ++i) expected[i] += w * (o[i] - h0[i]);
  }
  SparsePlan plan;
  plan.blocks = {3, 1};  // Any order; weights follow the blocks.
  plan.weights = {2.0f, 0.5f};
  plan.combine = Combine::kParallel;
  auto exec = SparseExecutor::Create(&e.layers(), Layout(5), plan);
  ASSERT_TRUE(exec.ok());
  auto out = (*exec)->Run(*h, 0);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LT(MaxAbsDiff(out->ToFloats(), expected), 1e-5);
}

TEST(Sparse, IncrementalDecodingMatchesOneForwardPass) {
  // Prefill then token-by-token through the same executor (one block set per request) gives the
  // logits of one teacher-forced pass over the whole sequence.
  const model::Engine& e = Stories();
  std::vector<int64_t> ids = {1, 403, 407, 261, 378, 10, 41, 77};
  for (Combine combine : {Combine::kSequential, Combine::kParallel}) {
    SparsePlan plan;
    plan.blocks = {0, 2, 4};
    plan.combine = combine;
    auto whole = SparseLogits(ids, plan);
    ASSERT_TRUE(whole.ok());
    auto exec = SparseExecutor::Create(&e.layers(), Layout(5), plan);
    ASSERT_TRUE(exec.ok());
    std::vector<float> rows;
    auto h = e.ends().Embed(std::vector<int64_t>(ids.begin(), ids.begin() + 5), 0);
    ASSERT_TRUE(h.ok());
    auto out = (*exec)->Run(*h, 0);
    ASSERT_TRUE(out.ok()) << out.status();
    auto logits = e.ends().Logits(*out, false);
    ASSERT_TRUE(logits.ok());
    rows = logits->ToFloats();
    for (size_t t = 5; t < ids.size(); ++t) {
      auto ht = e.ends().Embed(std::vector<int64_t>{ids[t]}, t);
      ASSERT_TRUE(ht.ok());
      auto o = (*exec)->Run(*ht, t);
      ASSERT_TRUE(o.ok()) << o.status();
      auto l = e.ends().Logits(*o, false);
      ASSERT_TRUE(l.ok());
      std::vector<float> row = l->ToFloats();
      rows.insert(rows.end(), row.begin(), row.end());
    }
    EXPECT_LT(MaxAbsDiff(rows, whole->ToFloats()), 1e-4) << CombineName(combine);
  }
}

TEST(Sparse, GenerateWithAllBlocksEqualsExactGreedy) {
  const model::Engine& e = Stories();
  std::vector<int64_t> prompt = {1, 403, 407, 261};
  auto exact = GreedyReference(e, prompt, 20);
  ASSERT_TRUE(exact.ok());
  SparsePlan all;
  all.blocks = {0, 1, 2, 3, 4};
  auto d = GreedyDivergence(e, Layout(5), prompt, *exact, all);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, 20);
  SparsePlan few;
  few.blocks = {0, 4};
  auto d2 = GreedyDivergence(e, Layout(5), prompt, *exact, few);
  ASSERT_TRUE(d2.ok());
  EXPECT_LT(*d2, 20);
}

TEST(Sparse, BadPlansAreRejected) {
  const model::Engine& e = Stories();
  SparsePlan empty;
  EXPECT_EQ(SparseExecutor::Create(&e.layers(), Layout(5), empty).status().code(),
            absl::StatusCode::kInvalidArgument);
  SparsePlan out_of_range;
  out_of_range.blocks = {0, 5};
  auto s = SparseExecutor::Create(&e.layers(), Layout(5), out_of_range).status();
  EXPECT_NE(s.message().find("block 5"), std::string::npos) << s;
  SparsePlan twice;
  twice.blocks = {1, 1};
  EXPECT_FALSE(SparseExecutor::Create(&e.layers(), Layout(5), twice).ok());
  SparsePlan mismatch;
  mismatch.blocks = {1, 2};
  mismatch.weights = {1};
  EXPECT_FALSE(SparseExecutor::Create(&e.layers(), Layout(5), mismatch).ok());
  auto partial = model::LayerHost::Create(e.checkpoint(), {0, 1}, {});
  ASSERT_TRUE(partial.ok());
  SparsePlan needs_three;
  needs_three.blocks = {0, 3};
  EXPECT_EQ(SparseExecutor::Create(partial->get(), Layout(5), needs_three).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(ParseCombine("diagonal").ok());
}

}  // namespace
}  // namespace swarm::router
