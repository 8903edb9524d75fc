// One (row, head) of the fused path's attention (model/cpu_attention.h) on its own: every
// implementation (scalar and, where the CPU has them, AVX2+FMA and AVX-512) against a
// double-precision softmax-weighted sum, over head sizes with partial vectors, heads wider than
// the vector versions keep in registers, windows that start past position 0, and bf16 caches (whose
// values are the bits of their f32 widening); and the same bits on every call.
#include "model/cpu_attention.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/host_tensor.h"
#include "gtest/gtest.h"

namespace swarm::model {
namespace {

std::vector<MatmulIsa> Isas() {
  std::vector<MatmulIsa> isas = {MatmulIsa::kScalar};
  if (CpuHasAvx2Fma()) isas.push_back(MatmulIsa::kAvx2);
  if (CpuHasAvx512()) isas.push_back(MatmulIsa::kAvx512);
  return isas;
}

struct Cache {
  int64_t hd, positions;
  std::vector<float> q, k, v;
  std::vector<uint16_t> k16, v16;  // bf16 of k and v; k and v hold their widening.

  Cache(int64_t head_dim, int64_t n) : hd(head_dim), positions(n) {
    std::mt19937 rng(static_cast<uint32_t>(hd * 977 + n));
    std::normal_distribution<float> normal;
    q.resize(hd);
    for (float& x : q) x = normal(rng);
    for (auto* f : {&k, &v}) {
      f->resize(hd * n);
      for (float& x : *f) x = Bf16ToFloat(FloatToBf16(normal(rng)));
    }
    for (float x : k) k16.push_back(FloatToBf16(x));
    for (float x : v) v16.push_back(FloatToBf16(x));
  }

  std::vector<float> Run(MatmulIsa isa, KvType type, int64_t lo, int64_t hi) const {
    std::vector<float> out(hd, -1.0f), scores(hi - lo + 1);
    const void* keys = type == KvType::kBf16 ? static_cast<const void*>(k16.data()) : k.data();
    const void* values = type == KvType::kBf16 ? static_cast<const void*>(v16.data()) : v.data();
    AttendRow(isa, type, q.data(), keys, values, lo, hi, hd, Scale(), scores.data(), out.data());
    return out;
  }

  float Scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }

  // The attention output in double, and for each element Σ_p w_p·|v_p[i]| (the scale its rounding
  // error is relative to).
  void Reference(int64_t lo, int64_t hi, std::vector<double>* out, std::vector<double>* mag) const {
    std::vector<double> s;
    double max = -1e300;
    for (int64_t p = lo; p <= hi; ++p) {
      double dot = 0;
      for (int64_t i = 0; i < hd; ++i) dot += static_cast<double>(q[i]) * k[p * hd + i];
      s.push_back(dot * Scale());
      max = std::max(max, s.back());
    }
    double sum = 0;
    for (double& x : s) sum += (x = std::exp(x - max));
    out->assign(hd, 0.0);
    mag->assign(hd, 0.0);
    for (int64_t p = lo; p <= hi; ++p) {
      for (int64_t i = 0; i < hd; ++i) {
        (*out)[i] += s[p - lo] / sum * v[p * hd + i];
        (*mag)[i] += s[p - lo] / sum * std::abs(v[p * hd + i]);
      }
    }
  }
};

// Head sizes: GPT-2's and Llama's 64 and 128, stories260K's 8, partial vectors of every ISA, and
// heads wider than AVX2's (128) and AVX-512's (256) register versions.
const int64_t kHeadDims[] = {1, 8, 13, 64, 72, 128, 136, 200, 256, 264};

TEST(CpuAttention, EveryIsaMatchesADoublePrecisionReference) {
  for (int64_t hd : kHeadDims) {
    Cache c(hd, 70);
    for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 0}, {0, 69}, {23, 57}}) {
      std::vector<double> want, mag;
      c.Reference(lo, hi, &want, &mag);
      for (MatmulIsa isa : Isas()) {
        for (KvType type : {KvType::kF32, KvType::kBf16}) {
          SCOPED_TRACE("hd " + std::to_string(hd) + " positions " + std::to_string(lo) + ".." +
                       std::to_string(hi) + " " + MatmulIsaName(isa) +
                       (type == KvType::kBf16 ? " bf16" : " f32"));
          const std::vector<float> got = c.Run(isa, type, lo, hi);
          for (int64_t i = 0; i < hd; ++i) {
            // The scores' rounding (relative 1e-6 of |q|·|k|, a few units) moves the weights by
            // ~1e-5 relative; the sums of the values add their own.
            ASSERT_LE(std::abs(got[i] - want[i]), 2e-5 * (mag[i] + 1.0)) << i;
          }
        }
      }
    }
  }
}

TEST(CpuAttention, TheSameBitsOnEveryCallAndForEitherCacheType) {
  for (int64_t hd : kHeadDims) {
    Cache c(hd, 40);
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE("hd " + std::to_string(hd) + " " + MatmulIsaName(isa));
      const std::vector<float> a = c.Run(isa, KvType::kF32, 3, 39);
      const std::vector<float> b = c.Run(isa, KvType::kF32, 3, 39);
      const std::vector<float> bf = c.Run(isa, KvType::kBf16, 3, 39);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
      // k and v are exactly representable in bf16, so the bf16 cache gives the f32 cache's bits.
      EXPECT_EQ(std::memcmp(a.data(), bf.data(), a.size() * sizeof(float)), 0);
    }
  }
}

}  // namespace
}  // namespace swarm::model
