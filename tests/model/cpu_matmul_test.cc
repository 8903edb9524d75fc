// The batch-invariant row kernel (model/cpu_matmul.h) on its own: both implementations (scalar
// and, where the CPU has it, AVX2+FMA) against a double-precision reference, against each other,
// and batch-invariant bit for bit: a row's output is the same bytes computed alone, among other
// rows at any place, and whichever column range a call (or thread) covers.
#include "model/cpu_matmul.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace swarm::model {
namespace {

struct Problem {
  int64_t n, k;
  bool column_major;  // W stored as [k, n] (a transposed view), as GPT-2's Conv1D weights.
  bool bias;
};

std::string Name(const Problem& p) {
  return std::to_string(p.n) + "x" + std::to_string(p.k) + (p.column_major ? " col" : " row") +
         (p.bias ? " bias" : "");
}

class Data {
 public:
  Data(const Problem& p, int64_t rows) : p_(p) {
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
  }

  // W[j][i] in either storage.
  float W(int64_t j, int64_t i) const {
    return p_.column_major ? w_[i * p_.n + j] : w_[j * p_.k + i];
  }
  MatrixView View(int64_t j0 = 0, int64_t n = -1) const {
    MatrixView v;
    v.n = n < 0 ? p_.n : n;
    v.k = p_.k;
    if (p_.column_major) {
      v.data = w_.data() + j0;
      v.row_stride = 1;
      v.col_stride = p_.n;
    } else {
      v.data = w_.data() + j0 * p_.k;
      v.row_stride = p_.k;
      v.col_stride = 1;
    }
    return v;
  }
  const float* bias(int64_t j0 = 0) const { return p_.bias ? bias_.data() + j0 : nullptr; }
  const float* x(int64_t r) const { return x_.data() + r * p_.k; }

  // Rows [r0, r0 + rows) of x times W → rows × n.
  std::vector<float> Run(int64_t r0, int64_t rows, MatmulIsa isa) const {
    std::vector<float> y(rows * p_.n, -1.0f);
    MatmulRows(x(r0), rows, p_.k, View(), bias(), y.data(), p_.n, isa);
    return y;
  }

  // Σ x·W in double, and Σ |x·W| (the scale rounding errors are relative to).
  void Reference(int64_t r, int64_t j, double* value, double* scale) const {
    double s = p_.bias ? bias_[j] : 0.0, a = p_.bias ? std::abs(bias_[j]) : 0.0;
    for (int64_t i = 0; i < p_.k; ++i) {
      s += static_cast<double>(x(r)[i]) * W(j, i);
      a += std::abs(static_cast<double>(x(r)[i]) * W(j, i));
    }
    *value = s;
    *scale = a;
  }

 private:
  Problem p_;
  std::vector<float> x_, w_, bias_;
};

std::vector<MatmulIsa> Isas() {
  std::vector<MatmulIsa> isas = {MatmulIsa::kScalar};
  if (CpuHasAvx2Fma()) isas.push_back(MatmulIsa::kAvx2);
  return isas;
}

const char* IsaName(MatmulIsa isa) { return isa == MatmulIsa::kAvx2 ? "avx2" : "scalar"; }

// Odd sizes on purpose: partial vectors in k (row-major) and in n (column-major), odd output
// counts (the single-output tile), row counts that are not multiples of the 4-row tile.
const Problem kProblems[] = {
    {37, 53, false, true}, {64, 2048, false, false}, {5, 3, false, true},
    {37, 53, true, true},  {200, 64, true, false},   {7, 19, true, false},
};
constexpr int64_t kRows = 19;

TEST(CpuMatmul, MatchesADoublePrecisionReference) {
  for (const Problem& p : kProblems) {
    Data d(p, kRows);
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE(Name(p) + " " + IsaName(isa));
      std::vector<float> y = d.Run(0, kRows, isa);
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t j = 0; j < p.n; ++j) {
          double want, scale;
          d.Reference(r, j, &want, &scale);
          ASSERT_LE(std::abs(y[r * p.n + j] - want), 1e-5 * scale + 1e-30) << r << "," << j;
        }
      }
    }
  }
}

TEST(CpuMatmul, ScalarAndAvx2AgreeToRounding) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "this CPU has no AVX2+FMA";
  for (const Problem& p : kProblems) {
    SCOPED_TRACE(Name(p));
    Data d(p, kRows);
    std::vector<float> a = d.Run(0, kRows, MatmulIsa::kScalar);
    std::vector<float> b = d.Run(0, kRows, MatmulIsa::kAvx2);
    std::vector<float> autod = d.Run(0, kRows, MatmulIsa::kAuto);
    EXPECT_EQ(std::memcmp(autod.data(), b.data(), b.size() * sizeof(float)), 0)
        << "kAuto is AVX2 on this CPU";
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t j = 0; j < p.n; ++j) {
        double want, scale;
        d.Reference(r, j, &want, &scale);
        ASSERT_LE(std::abs(a[r * p.n + j] - b[r * p.n + j]), 1e-5 * scale + 1e-30) << r << "," << j;
      }
    }
  }
}

// The property: row r's bytes are the same alone, in every batch of rows around it (each place in
// the 4-row tiles, more than kInvariantMaxRows rows), and in a call covering only some columns.
TEST(CpuMatmul, EachRowIsBitIdenticalAloneAndInAnyBatch) {
  for (const Problem& p : kProblems) {
    Data d(p, kRows);
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE(Name(p) + " " + IsaName(isa));
      std::vector<float> all = d.Run(0, kRows, isa);
      for (int64_t r = 0; r < kRows; ++r) {
        std::vector<float> alone = d.Run(r, 1, isa);
        ASSERT_EQ(std::memcmp(alone.data(), all.data() + r * p.n, p.n * sizeof(float)), 0)
            << "row " << r << " alone vs among " << kRows;
        for (int64_t r0 = std::max<int64_t>(0, r - 5); r0 <= r; ++r0) {
          for (int64_t rows : {r - r0 + 1, r - r0 + 2, r - r0 + 3, r - r0 + 6}) {
            if (r0 + rows > kRows) continue;
            std::vector<float> y = d.Run(r0, rows, isa);
            ASSERT_EQ(std::memcmp(alone.data(), y.data() + (r - r0) * p.n, p.n * sizeof(float)), 0)
                << "row " << r << " in rows " << r0 << ".." << r0 + rows - 1;
          }
        }
      }
      // A call for columns [j0, j0 + n) only (what one thread's share is): the same bytes.
      for (int64_t j0 : {int64_t{1}, int64_t{3}, p.n / 2}) {
        const int64_t n = std::min<int64_t>(p.n - j0, 9);
        if (n <= 0) continue;
        std::vector<float> part(kRows * n);
        MatmulRows(d.x(0), kRows, p.k, d.View(j0, n), d.bias(j0), part.data(), n, isa);
        for (int64_t r = 0; r < kRows; ++r) {
          ASSERT_EQ(std::memcmp(part.data() + r * n, all.data() + r * p.n + j0, n * sizeof(float)),
                    0)
              << "row " << r << " columns from " << j0;
        }
      }
    }
  }
}

}  // namespace
}  // namespace swarm::model
