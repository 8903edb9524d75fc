// The one residual combine rule (model/combine.h): h + g·(B(h) − h) and h + Σ w_b·(B_b(h) − h),
// g = 1 being the block's own output to the bit, the result in h's dtype, and the errors.
#include "model/combine.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace swarm::model {
namespace {

HostTensor F32(std::vector<float> v) {
  return HostTensor::FromFloats({1, static_cast<int64_t>(v.size())}, v);
}

HostTensor Bf16(const std::vector<float>& v) {
  HostTensor t;
  t.dtype = DType::kBF16;
  t.shape = {1, static_cast<int64_t>(v.size())};
  for (float x : v) {
    const uint16_t b = FloatToBf16(x);
    t.data.append(reinterpret_cast<const char*>(&b), 2);
  }
  return t;
}

TEST(Combine, GateOneIsTheBlockOutputToTheBit) {
  const HostTensor h = F32({1.0f, -2.0f, 3.5f});
  const HostTensor out = F32({0.1f, 0.2f, 1e-7f});
  auto g = GateResidual(h, out, 1.0f);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->data, out.data);
  EXPECT_EQ(g->shape, out.shape);
}

TEST(Combine, GateScalesTheResidualUpdate) {
  const std::vector<float> h = {1.0f, -2.0f, 3.5f, 0.0f};
  const std::vector<float> o = {2.0f, 2.0f, -0.5f, 8.0f};
  for (float gate : {0.0f, 0.25f, 0.6f, 2.0f}) {
    auto g = GateResidual(F32(h), F32(o), gate);
    ASSERT_TRUE(g.ok()) << g.status();
    const std::vector<float> v = g->ToFloats();
    for (size_t i = 0; i < h.size(); ++i) {
      EXPECT_FLOAT_EQ(v[i], h[i] + gate * (o[i] - h[i])) << "gate " << gate << " at " << i;
    }
  }
  // g = 0 skips the block.
  auto skip = GateResidual(F32(h), F32(o), 0.0f);
  ASSERT_TRUE(skip.ok());
  EXPECT_EQ(skip->ToFloats(), h);
}

TEST(Combine, ParallelIsTheWeightedSumOfResidualsAndOneBlockIsTheGate) {
  const std::vector<float> h = {1.0f, 2.0f, 3.0f};
  const std::vector<float> a = {2.0f, 0.0f, 3.0f}, b = {1.0f, 4.0f, -1.0f};
  auto c = CombineResiduals(F32(h), {F32(a), F32(b)}, {0.5f, 0.25f});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<float> v = c->ToFloats();
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_FLOAT_EQ(v[i], h[i] + 0.5f * (a[i] - h[i]) + 0.25f * (b[i] - h[i]));
  }
  // The sequential gate is the parallel rule with one block: the same bits.
  auto one = CombineResiduals(F32(h), {F32(a)}, {0.7f});
  auto gated = GateResidual(F32(h), F32(a), 0.7f);
  ASSERT_TRUE(one.ok() && gated.ok());
  EXPECT_EQ(one->data, gated->data);
  // No block: h itself.
  auto none = CombineResiduals(F32(h), {}, {});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->ToFloats(), h);
}

TEST(Combine, KeepsTheInputDtype) {
  const std::vector<float> h = {1.0f, -2.0f, 0.5f}, o = {3.0f, 1.0f, 0.25f};
  auto g = GateResidual(Bf16(h), Bf16(o), 0.5f);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->dtype, DType::kBF16);
  ASSERT_EQ(g->data.size(), 6u);
  // Exactly representable results: 2.0, -0.5, 0.375.
  EXPECT_EQ(g->ToFloats(), (std::vector<float>{2.0f, -0.5f, 0.375f}));

  HostTensor h16;
  h16.dtype = DType::kF16;
  h16.shape = {1, 2};
  const uint16_t one = 0x3C00, two = 0x4000;  // 1.0, 2.0
  h16.data.append(reinterpret_cast<const char*>(&one), 2)
      .append(reinterpret_cast<const char*>(&two), 2);
  HostTensor o16 = h16;
  std::memcpy(o16.data.data(), &two, 2);  // 2.0, 2.0
  auto g16 = GateResidual(h16, o16, 0.5f);
  ASSERT_TRUE(g16.ok()) << g16.status();
  EXPECT_EQ(g16->dtype, DType::kF16);
  EXPECT_EQ(g16->ToFloats(), (std::vector<float>{1.5f, 2.0f}));
}

TEST(Combine, MismatchesAreInvalidArgument) {
  const HostTensor h = F32({1.0f, 2.0f});
  EXPECT_EQ(CombineResiduals(h, {h}, {0.5f, 0.5f}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GateResidual(h, F32({1.0f, 2.0f, 3.0f}), 0.5f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GateResidual(h, Bf16({1.0f, 2.0f}), 0.5f).status().code(),
            absl::StatusCode::kInvalidArgument);
  HostTensor short_bytes = h;
  short_bytes.data.pop_back();
  EXPECT_EQ(GateResidual(short_bytes, h, 0.5f).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace swarm::model
