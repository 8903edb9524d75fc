// The batch-invariant row kernel (model/cpu_matmul.h) on its own: every implementation (scalar
// and, where the CPU has them, AVX2+FMA and AVX-512) and every layout of W (row-major,
// column-major, panel-major) against a double-precision reference, against each other, and
// batch-invariant bit for bit: a row's output is the same bytes computed alone, among other rows
// at any place, whichever column range a call (or thread) covers, and on teams of any size; bf16
// weights give the bits of their f32 widening.
#include "model/cpu_matmul.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace swarm::model {
namespace {

enum Layout {
  kRow,    // W stored as [n, k].
  kCol,    // W stored as [k, n] (a transposed view), as GPT-2's Conv1D weights.
  kPanel,  // Panel-major (kMatmulPanel), as the loader builds them.
};

struct Problem {
  int64_t n, k;
  Layout layout;
  bool bias;
};

std::string Name(const Problem& p) {
  const char* layout[] = {" row", " col", " panel"};
  return std::to_string(p.n) + "x" + std::to_string(p.k) + layout[p.layout] +
         (p.bias ? " bias" : "");
}

class Data {
 public:
  Data(const Problem& p, int64_t rows) : p_(p) {
    std::mt19937 rng(static_cast<uint32_t>(p.n * 131 + p.k * 7 + rows));
    std::normal_distribution<float> normal;
    x_.resize(rows * p.k);
    for (float& v : x_) v = normal(rng);
    w_.assign(p.layout == kPanel ? PanelElements(p.n, p.k) : p.n * p.k, 0.0f);
    for (int64_t j = 0; j < p.n; ++j) {
      for (int64_t i = 0; i < p.k; ++i) w_[Index(j, i)] = normal(rng) * 0.1f;
    }
    if (p.bias) {
      bias_.resize(p.n);
      for (float& v : bias_) v = normal(rng);
    }
  }

  // Where W[j][i] is in the storage.
  int64_t Index(int64_t j, int64_t i) const {
    switch (p_.layout) {
      case kRow:
        return j * p_.k + i;
      case kCol:
        return i * p_.n + j;
      default:
        return j / kMatmulPanel * kMatmulPanel * p_.k + i * kMatmulPanel + j % kMatmulPanel;
    }
  }
  float W(int64_t j, int64_t i) const { return w_[Index(j, i)]; }
  int64_t elements() const { return static_cast<int64_t>(w_.size()); }
  // Columns [j0, j0 + n) (for panels, j0 a multiple of kMatmulPanel).
  MatrixView View(int64_t j0 = 0, int64_t n = -1) const {
    MatrixView v;
    v.n = n < 0 ? p_.n : n;
    v.k = p_.k;
    if (p_.layout == kPanel) {
      v.data = w_.data() + j0 * p_.k;  // Panel j0 / 64 starts at (j0 / 64) · 64k.
      v.panel = kMatmulPanel;
    } else if (p_.layout == kCol) {
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
  if (CpuHasAvx512()) isas.push_back(MatmulIsa::kAvx512);
  return isas;
}

const char* IsaName(MatmulIsa isa) { return MatmulIsaName(isa); }

// Odd sizes on purpose: partial vectors in k (row-major) and in n (column-major, panel-major),
// odd output counts (the single-output tile), row counts that are not multiples of the 4-row
// tile; panels: a partial one alone, pairs with an odd one after them, a wide k. kRows rows take
// several row tiles of a panel, and the subsets of EachRowIsBitIdenticalAloneAndInAnyBatch every
// other tiling (pairs up to 6 rows, half panels for 7 and 8).
const Problem kProblems[] = {
    {37, 53, kRow, true},   {64, 2048, kRow, false},  {5, 3, kRow, true},
    {37, 53, kCol, true},   {200, 64, kCol, false},   {7, 19, kCol, false},
    {37, 53, kPanel, true}, {200, 64, kPanel, false}, {130, 2048, kPanel, true},
    {5, 3, kPanel, false},
};
constexpr int64_t kRows = 19;

// At row counts that take every tiling (panels: pairs at 1 and 3 rows, half panels at 8, row
// tiles at kRows).
TEST(CpuMatmul, MatchesADoublePrecisionReference) {
  for (const Problem& p : kProblems) {
    Data d(p, kRows);
    for (MatmulIsa isa : Isas()) {
      for (int64_t rows : {int64_t{1}, int64_t{3}, int64_t{8}, kRows}) {
        SCOPED_TRACE(Name(p) + " " + IsaName(isa) + " rows " + std::to_string(rows));
        std::vector<float> y = d.Run(0, rows, isa);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < p.n; ++j) {
            double want, scale;
            d.Reference(r, j, &want, &scale);
            ASSERT_LE(std::abs(y[r * p.n + j] - want), 1e-5 * scale + 1e-30) << r << "," << j;
          }
        }
      }
    }
  }
}

TEST(CpuMatmul, EveryIsaAgreesWithScalarToRounding) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "this CPU has no AVX2+FMA";
  for (const Problem& p : kProblems) {
    Data d(p, kRows);
    std::vector<float> a = d.Run(0, kRows, MatmulIsa::kScalar);
    std::vector<float> autod = d.Run(0, kRows, MatmulIsa::kAuto);
    std::vector<float> best = d.Run(0, kRows, ResolveIsa(MatmulIsa::kAuto));
    EXPECT_EQ(std::memcmp(autod.data(), best.data(), best.size() * sizeof(float)), 0)
        << "kAuto is " << MatmulIsaName(ResolveIsa(MatmulIsa::kAuto)) << " on this CPU";
    // Panel-major W: AVX2 and AVX-512 do the same FMAs in the same order, so the same bits.
    if (p.layout == kPanel && CpuHasAvx512()) {
      std::vector<float> avx2 = d.Run(0, kRows, MatmulIsa::kAvx2);
      std::vector<float> avx512 = d.Run(0, kRows, MatmulIsa::kAvx512);
      EXPECT_EQ(std::memcmp(avx2.data(), avx512.data(), avx2.size() * sizeof(float)), 0) << Name(p);
    }
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE(Name(p) + " " + IsaName(isa));
      std::vector<float> b = d.Run(0, kRows, isa);
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t j = 0; j < p.n; ++j) {
          double want, scale;
          d.Reference(r, j, &want, &scale);
          ASSERT_LE(std::abs(a[r * p.n + j] - b[r * p.n + j]), 1e-5 * scale + 1e-30)
              << r << "," << j;
        }
      }
    }
  }
}

// SWARM_CPU_ISA caps kAuto (what the tests of the fused layers use to run each implementation).
TEST(CpuMatmul, TheEnvironmentCapsTheIsa) {
  const char* old = std::getenv("SWARM_CPU_ISA");
  const std::string saved = old != nullptr ? old : "";
  setenv("SWARM_CPU_ISA", "scalar", 1);
  EXPECT_EQ(ResolveIsa(MatmulIsa::kAuto), MatmulIsa::kScalar);
  setenv("SWARM_CPU_ISA", "avx2", 1);
  EXPECT_EQ(ResolveIsa(MatmulIsa::kAuto), CpuHasAvx2Fma() ? MatmulIsa::kAvx2 : MatmulIsa::kScalar);
  EXPECT_EQ(ResolveIsa(MatmulIsa::kScalar), MatmulIsa::kScalar);
  if (old != nullptr) {
    setenv("SWARM_CPU_ISA", saved.c_str(), 1);
  } else {
    unsetenv("SWARM_CPU_ISA");
  }
}

// bf16 weights are widened exactly: the product is the bits of the f32 product with the widened
// weights, for every implementation and layout (bias included).
TEST(CpuMatmul, Bf16WeightsGiveTheBitsOfTheirF32Widening) {
  for (const Problem& p : kProblems) {
    Data d(p, kRows);
    MatrixView f32 = d.View();
    const int64_t elements = d.elements();
    const auto* src = static_cast<const float*>(f32.data);
    std::vector<uint16_t> bf16(elements);
    std::vector<float> widened(elements);
    for (int64_t i = 0; i < elements; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &src[i], sizeof bits);
      bf16[i] = static_cast<uint16_t>(bits >> 16);  // Truncation: any bf16 value will do.
      bits = static_cast<uint32_t>(bf16[i]) << 16;
      std::memcpy(&widened[i], &bits, sizeof bits);
    }
    MatrixView wb = f32, wf = f32;
    wb.data = bf16.data();
    wb.type = WeightType::kBf16;
    wf.data = widened.data();
    for (MatmulIsa isa : Isas()) {
      SCOPED_TRACE(Name(p) + " " + IsaName(isa));
      std::vector<float> a(kRows * p.n), b(kRows * p.n);
      MatmulRows(d.x(0), kRows, p.k, wb, d.bias(), a.data(), p.n, isa);
      MatmulRows(d.x(0), kRows, p.k, wf, d.bias(), b.data(), p.n, isa);
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
    }
  }
}

// A product split over teams of 1, 2 and 3 members: the same bytes (each output's reduction is
// one thread's, whichever), for row counts that split panel-major W in 4 ranges per member (5
// rows) and in one (12).
TEST(CpuMatmul, TheTeamSizeDoesNotChangeTheBits) {
  for (const Problem& p : {Problem{300, 1030, kRow, true}, Problem{300, 1030, kPanel, true}}) {
    for (int64_t rows : {5, 12}) {
      Data d(p, rows);
      for (MatmulIsa isa : Isas()) {
        SCOPED_TRACE(Name(p) + " " + IsaName(isa) + " rows " + std::to_string(rows));
        std::vector<std::vector<float>> outs;
        for (int threads : {1, 2, 3}) {
          ComputeTeam team(threads);
          std::vector<float> y(rows * p.n);
          MatmulRows(d.x(0), rows, p.k, d.View(), d.bias(), y.data(), p.n, isa, &team);
          outs.push_back(std::move(y));
        }
        EXPECT_EQ(outs[0], outs[1]);
        EXPECT_EQ(outs[0], outs[2]);
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
      std::vector<int64_t> starts = {1, 3, p.n / 2};
      if (p.layout == kPanel) starts = {kMatmulPanel, 2 * kMatmulPanel};  // Panel boundaries.
      for (int64_t j0 : starts) {
        const int64_t n = std::min<int64_t>(p.n - j0, p.layout == kPanel ? 70 : 9);
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
