// matmul_bench: the row kernel alone (model/cpu_matmul.h, MatmulRows) over the products of a Llama
// layer stack, at a few row counts, so that a kernel change is measured without the rest of a
// decode step (attention, norms, the team's hand-offs around them, the LM head).
//
//   matmul_bench [--hidden 2048] [--intermediate 5632] [--kv-dim 512] [--layers 8]
//                [--rows 1,8,16] [--reps 9] [--isa auto|avx512|avx2|scalar]
//                [--layouts panel,row]
//
// Per layer: q and o (hidden × hidden), k and v (kv-dim × hidden), gate and up (intermediate ×
// hidden), down (hidden × intermediate), f32, each its own allocation on transparent huge pages
// (as the engine's weights), once per layout: panel-major (what the loader builds) and row-major
// (a checkpoint's own layout, what zero-copy loads multiply by). Each repetition times the whole
// stack once per layout and row count, all taking turns; prints the median and best of each, the
// ratio of medians to the first one's, and the weights' read rate at the median.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/lock_checks.h"
#include "model/cpu_matmul.h"

namespace {

struct Matrix {
  float* data = nullptr;
  int64_t n = 0, k = 0;
  bool panels = false;
};

float* AllocateOnHugePages(size_t floats) {
  constexpr size_t kHuge = 2 << 20;
  const size_t bytes = (floats * sizeof(float) + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, bytes);
  if (p != nullptr) madvise(p, bytes, MADV_HUGEPAGE);
  return static_cast<float*>(p);
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "matmul_bench: %s\nusage: matmul_bench [--hidden N] [--intermediate N] "
               "[--kv-dim N] [--layers N] [--rows 1,8,16] [--reps N] [--isa "
               "auto|avx512|avx2|scalar] [--layouts panel,row]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  using swarm::model::MatmulIsa;
  int64_t hidden = 2048, intermediate = 5632, kv_dim = 512, layers = 8, reps = 9;
  std::vector<int64_t> row_counts = {1, 8, 16};
  std::vector<bool> layouts = {true, false};  // Panel-major, row-major.
  MatmulIsa isa = MatmulIsa::kAuto;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage(("missing value for " + flag).c_str());
    const std::string value = argv[++i];
    bool ok = true;
    if (flag == "--hidden") {
      ok = absl::SimpleAtoi(value, &hidden) && hidden > 0;
    } else if (flag == "--intermediate") {
      ok = absl::SimpleAtoi(value, &intermediate) && intermediate > 0;
    } else if (flag == "--kv-dim") {
      ok = absl::SimpleAtoi(value, &kv_dim) && kv_dim > 0;
    } else if (flag == "--layers") {
      ok = absl::SimpleAtoi(value, &layers) && layers > 0;
    } else if (flag == "--reps") {
      ok = absl::SimpleAtoi(value, &reps) && reps > 0;
    } else if (flag == "--rows") {
      row_counts.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        int64_t r = 0;
        ok = ok && absl::SimpleAtoi(part, &r) && r > 0 && r <= 256;
        row_counts.push_back(r);
      }
    } else if (flag == "--layouts") {
      layouts.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        ok = ok && (part == "panel" || part == "row");
        layouts.push_back(part == "panel");
      }
    } else if (flag == "--isa") {
      if (value == "auto") {
        isa = MatmulIsa::kAuto;
      } else if (value == "avx512" && swarm::model::CpuHasAvx512()) {
        isa = MatmulIsa::kAvx512;
      } else if (value == "avx2" && swarm::model::CpuHasAvx2Fma()) {
        isa = MatmulIsa::kAvx2;
      } else if (value == "scalar") {
        isa = MatmulIsa::kScalar;
      } else {
        ok = false;
      }
    } else {
      return Usage(("unknown flag " + flag).c_str());
    }
    if (!ok) return Usage(("bad value for " + flag + ": " + value).c_str());
  }

  std::vector<std::vector<Matrix>> stacks(layouts.size());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  double bytes = 0;
  for (int64_t l = 0; l < layers; ++l) {
    for (auto [n, k] : {std::pair{hidden, hidden},
                        {kv_dim, hidden},
                        {kv_dim, hidden},
                        {hidden, hidden},
                        {intermediate, hidden},
                        {intermediate, hidden},
                        {hidden, intermediate}}) {
      std::vector<float> values(static_cast<size_t>(n * k));
      for (float& v : values) v = dist(rng);
      bytes += 4.0 * static_cast<double>(n * k);
      for (size_t s = 0; s < layouts.size(); ++s) {
        const bool panels = layouts[s];
        Matrix m{AllocateOnHugePages(
                     static_cast<size_t>(panels ? swarm::model::PanelElements(n, k) : n * k)),
                 n, k, panels};
        if (m.data == nullptr) return Usage("out of memory for the weights");
        if (panels) {  // W[j][i] at (j / 64) · 64k + 64i + j % 64, the padding zero.
          constexpr int64_t kP = swarm::model::kMatmulPanel;
          std::fill(m.data, m.data + swarm::model::PanelElements(n, k), 0.0f);
          for (int64_t j = 0; j < n; ++j) {
            for (int64_t i = 0; i < k; ++i)
              m.data[j / kP * kP * k + i * kP + j % kP] = values[j * k + i];
          }
        } else {
          std::copy(values.begin(), values.end(), m.data);
        }
        stacks[s].push_back(m);
      }
    }
  }
  const int64_t max_rows = *std::max_element(row_counts.begin(), row_counts.end());
  const int64_t width = std::max(hidden, intermediate);
  std::vector<float> x(static_cast<size_t>(max_rows * width)),
      y(static_cast<size_t>(max_rows * width));
  for (float& v : x) v = dist(rng);

  auto run_stack = [&](const std::vector<Matrix>& stack, int64_t rows) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const Matrix& m : stack) {
      swarm::model::MatrixView w;
      w.data = m.data;
      w.n = m.n;
      w.k = m.k;
      w.row_stride = m.k;
      if (m.panels) w.panel = swarm::model::kMatmulPanel;
      swarm::model::MatmulRows(x.data(), rows, width, w, nullptr, y.data(), width, isa);
    }
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  // Warm-up (pages, the team's threads), then every (layout, row count) in turn.
  for (const auto& stack : stacks) {
    for (int64_t rows : row_counts) run_stack(stack, rows);
  }
  std::vector<std::vector<double>> ms(layouts.size() * row_counts.size());
  for (int64_t rep = 0; rep < reps; ++rep) {
    for (size_t s = 0; s < layouts.size(); ++s) {
      for (size_t i = 0; i < row_counts.size(); ++i) {
        ms[s * row_counts.size() + i].push_back(run_stack(stacks[s], row_counts[i]));
      }
    }
  }
  std::printf(
      "row kernel (%s) over %lld layers of products (hidden %lld, kv %lld, intermediate "
      "%lld): %.1f MB of f32 weights; median of %lld\n",
      swarm::model::MatmulIsaName(swarm::model::ResolveIsa(isa)), static_cast<long long>(layers),
      static_cast<long long>(hidden), static_cast<long long>(kv_dim),
      static_cast<long long>(intermediate), bytes / 1e6, static_cast<long long>(reps));
  const double base = swarm::bench::Percentile(ms[0], 0.5);
  for (size_t s = 0; s < layouts.size(); ++s) {
    for (size_t i = 0; i < row_counts.size(); ++i) {
      const auto& t = ms[s * row_counts.size() + i];
      const double med = swarm::bench::Percentile(t, 0.5);
      std::printf("  %-5s rows %3lld  %8.2f ms (best %8.2f)  %.2fx the first  %.2f GB/s\n",
                  layouts[s] ? "panel" : "row", static_cast<long long>(row_counts[i]), med,
                  *std::min_element(t.begin(), t.end()), med / base, bytes / med / 1e6);
    }
  }
  return 0;
}
