// The quantized row kernel (model/cpu_qmatmul.h) on its own, every implementation (scalar and,
// where the CPU has them, AVX2+FMA+F16C and AVX-512): the quantizer's bytes against the format's
// definition, the kernel against an independent dequantize-then-dot in double precision, and
// batch-invariant bit for bit.
#include "model/cpu_qmatmul.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/host_tensor.h"
#include "gtest/gtest.h"

namespace swarm::model {
namespace {

struct Problem {
  WeightQuant format;
  int64_t n, k;
  bool bias;
};

std::string Name(const Problem& p) {
  return std::string(WeightQuantName(p.format)) + " " + std::to_string(p.n) + "x" +
         std::to_string(p.k) + (p.bias ? " bias" : "");
}

std::vector<MatmulIsa> Isas() {
  std::vector<MatmulIsa> isas = {MatmulIsa::kScalar};
  if (CpuHasAvx2Fma()) isas.push_back(MatmulIsa::kAvx2);
  if (CpuHasAvx512()) isas.push_back(MatmulIsa::kAvx512);
  return isas;
}

class QData {
 public:
  QData(const Problem& p, int64_t rows) : p_(p) {
    std::mt19937 rng(static_cast<uint32_t>(p.n * 131 + p.k * 7 + rows));
    std::normal_distribution<float> normal;
    x_.resize(rows * p.k);
    for (float& v : x_) v = normal(rng);
    w_.resize(p.n * p.k);
    for (float& v : w_) v = normal(rng) * 0.1f;
    if (p.bias) {
      bias_.resize(p.n);
      for (float& v : bias_) v = normal(rng);
    }
    data_.resize(p.n * QuantRowBytes(p.format, p.k));
    scales_.resize(p.n * QuantGroups(p.k));
    QuantizeRows(p.format, w_.data(), p.n, p.k, p.k, data_.data(), scales_.data());
  }

  QuantMatrixView View() const {
    QuantMatrixView v;
    v.format = p_.format;
    v.data = data_.data();
    v.scales = scales_.data();
    v.n = p_.n;
    v.k = p_.k;
    return v;
  }
  const float* bias() const { return p_.bias ? bias_.data() : nullptr; }
  const float* x(int64_t r) const { return x_.data() + r * p_.k; }
  float w(int64_t j, int64_t i) const { return w_[j * p_.k + i]; }

  // The test's own decoding of the stored bytes (the format as common/weight_format.h defines it).
  double Decoded(int64_t j, int64_t i) const {
    const int64_t g = i / kQuantGroup, within = i % kQuantGroup;
    const double d = HalfToFloat(scales_[j * QuantGroups(p_.k) + g]);
    const uint8_t* row = data_.data() + j * QuantRowBytes(p_.format, p_.k);
    if (p_.format == WeightQuant::kQ8) return static_cast<int8_t>(row[i]) * d;
    const uint8_t byte = row[g * 16 + within % 16];
    const int q = within < 16 ? (byte & 0x0F) : (byte >> 4);
    return (q - 8) * d;
  }
  double Scale(int64_t j, int64_t i) const {
    return HalfToFloat(scales_[j * QuantGroups(p_.k) + i / kQuantGroup]);
  }

  std::vector<float> Run(int64_t r0, int64_t rows, MatmulIsa isa) const {
    std::vector<float> y(rows * p_.n, -1.0f);
    QMatmulRows(x(r0), rows, p_.k, View(), bias(), y.data(), p_.n, isa);
    return y;
  }

 private:
  Problem p_;
  std::vector<float> x_, w_, bias_;
  std::vector<uint8_t> data_;
  std::vector<uint16_t> scales_;
};

const std::vector<Problem>& Problems() {
  static const std::vector<Problem> problems = {
      {WeightQuant::kQ8, 37, 64, false},  {WeightQuant::kQ8, 33, 172, true},
      {WeightQuant::kQ8, 48, 8, true},    {WeightQuant::kQ8, 17, 1, false},
      {WeightQuant::kQ8, 64, 768, false}, {WeightQuant::kQ4, 37, 64, false},
      {WeightQuant::kQ4, 33, 172, true},  {WeightQuant::kQ4, 48, 8, true},
      {WeightQuant::kQ4, 64, 768, false},
  };
  return problems;
}

TEST(QuantizeTest, HalfCodecRoundTripsEveryFiniteHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;  // Infinities and NaNs.
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);            // Rounds past the largest half.
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3C00);  // A tie rounds to even.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0);    // Half the smallest subnormal: to even (0).
}

TEST(QuantizeTest, CodesAreWithinHalfAStepOfTheWeights) {
  for (const Problem& p : Problems()) {
    SCOPED_TRACE(Name(p));
    QData d(p, 1);
    for (int64_t j = 0; j < p.n; ++j) {
      for (int64_t i = 0; i < p.k; ++i) {
        // Round to nearest code: within half a step, plus the f16 rounding of the scale.
        // q4 clamps the code 16 (a weight of +8 steps) to 15: one step there.
        const double step = std::abs(d.Scale(j, i)) * (p.format == WeightQuant::kQ4 ? 2 : 1);
        ASSERT_LE(std::abs(d.Decoded(j, i) - d.w(j, i)), 0.5 * step + 1e-3 * std::abs(d.w(j, i)))
            << j << "," << i;
      }
    }
  }
}

TEST(QuantizeTest, KnownGroupIsExact) {
  // A q8 group whose largest magnitude is 127 has scale 1: integer weights come back exactly; q4's
  // largest value -8 has scale 1 as well (d = m / -8 with m = -8).
  std::vector<float> w(32);
  for (int i = 0; i < 32; ++i) w[i] = static_cast<float>(i % 2 == 0 ? i - 16 : 16 - i);
  w[5] = 127;
  std::vector<uint8_t> q(32);
  std::vector<uint16_t> s(1);
  QuantizeRows(WeightQuant::kQ8, w.data(), 1, 32, 32, q.data(), s.data());
  EXPECT_EQ(HalfToFloat(s[0]), 1.0f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(static_cast<int8_t>(q[i]), w[i]) << i;
  std::vector<float> w4(32);
  for (int i = 0; i < 32; ++i) w4[i] = static_cast<float>(i % 16 - 8);
  QuantizeRows(WeightQuant::kQ4, w4.data(), 1, 32, 32, q.data(), s.data());
  EXPECT_EQ(HalfToFloat(s[0]), 1.0f);
  QuantMatrixView v{WeightQuant::kQ4, q.data(), s.data(), 1, 32};
  std::vector<float> back(32);
  DequantizeRows(v, 0, 1, back.data());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(back[i], w4[i]) << i;
}

TEST(QMatmulRowsTest, MatchesDequantizeThenDotReference) {
  for (const Problem& p : Problems()) {
    for (int64_t rows : {1, 3, 4, 9, 16}) {
      QData d(p, rows);
      for (MatmulIsa isa : Isas()) {
        SCOPED_TRACE(Name(p) + " rows " + std::to_string(rows) + " " + MatmulIsaName(isa));
        const std::vector<float> y = d.Run(0, rows, isa);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < p.n; ++j) {
            double s = p.bias ? d.bias()[j] : 0.0, a = std::abs(s);
            for (int64_t i = 0; i < p.k; ++i) {
              s += d.x(r)[i] * d.Decoded(j, i);
              a += std::abs(d.x(r)[i] * d.Decoded(j, i));
            }
            ASSERT_NEAR(y[r * p.n + j], s, 1e-6 * a + 1e-7) << r << "," << j;
          }
        }
      }
    }
  }
}

TEST(QMatmulRowsTest, RowAloneEqualsRowInBatchBitForBit) {
  for (const Problem& p : Problems()) {
    const int64_t batch = 16;
    QData d(p, batch);
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE(Name(p) + " " + MatmulIsaName(isa));
      const std::vector<float> all = d.Run(0, batch, isa);
      for (int64_t r = 0; r < batch; ++r) {
        const std::vector<float> alone = d.Run(r, 1, isa);
        ASSERT_EQ(std::memcmp(alone.data(), all.data() + r * p.n, sizeof(float) * p.n), 0)
            << "row " << r;
      }
      // And inside batches of other sizes, at other places.
      for (int64_t rows : {2, 3, 5, 7}) {
        const std::vector<float> part = d.Run(batch - rows, rows, isa);
        ASSERT_EQ(
            std::memcmp(part.data(), all.data() + (batch - rows) * p.n, sizeof(float) * p.n * rows),
            0)
            << rows << " rows";
      }
    }
  }
}

TEST(QMatmulRowsTest, EveryIsaAgreesWithScalarToRounding) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2+FMA on this CPU";
  for (const Problem& p : Problems()) {
    QData d(p, 4);
    const std::vector<float> a = d.Run(0, 4, MatmulIsa::kScalar);
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE(Name(p) + " " + MatmulIsaName(isa));
      const std::vector<float> b = d.Run(0, 4, isa);
      for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4 * (1 + std::abs(a[i])));
    }
  }
}

}  // namespace
}  // namespace swarm::model
