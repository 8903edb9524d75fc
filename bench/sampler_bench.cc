// sampler_bench: greedy decoding's pick over whole logits rows — FirstArgmax (model/sampler.h),
// what Sampler::Sample and LogSoftmaxAt use, against std::max_element, the reference it equals,
// taking turns in one run. One row per sequence per decode step, on the scheduler's thread, so at
// 32 sequences of a 32,000-entry vocabulary it is a serial part of every step.
//
//   sampler_bench [--vocab 32000] [--rows 32] [--reps 9]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/types/span.h"
#include "common/lock_checks.h"
#include "model/sampler.h"

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  int64_t vocab = 32000, rows = 32, reps = 9;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    int64_t* out = flag == "--vocab"  ? &vocab
                   : flag == "--rows" ? &rows
                   : flag == "--reps" ? &reps
                                      : nullptr;
    if (out == nullptr || i + 1 >= argc || !absl::SimpleAtoi(argv[i + 1], out) || *out < 1 ||
        *out > 10000000) {
      std::fprintf(stderr, "usage: sampler_bench [--vocab 32000] [--rows 32] [--reps 9]\n");
      return 2;
    }
  }
  std::vector<float> logits(static_cast<size_t>(vocab * rows));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (float& x : logits) x = normal(rng);
  using Clock = std::chrono::steady_clock;
  double best[2] = {1e30, 1e30};
  int64_t picks[2] = {0, 0};
  for (int64_t rep = 0; rep <= reps; ++rep) {  // Repetition 0 warms up.
    for (int way = 0; way < 2; ++way) {
      int64_t sum = 0;
      const auto t0 = Clock::now();
      for (int64_t r = 0; r < rows; ++r) {
        const absl::Span<const float> row(logits.data() + r * vocab, static_cast<size_t>(vocab));
        sum += way == 0 ? swarm::model::FirstArgmax(row)
                        : std::max_element(row.begin(), row.end()) - row.begin();
      }
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (rep > 0) best[way] = std::min(best[way], s);
      picks[way] = sum;
    }
  }
  if (picks[0] != picks[1]) {
    std::fprintf(stderr, "sampler_bench: FirstArgmax and std::max_element disagree\n");
    return 1;
  }
  std::printf("greedy pick over %lld rows of %lld logits (best of %lld):\n",
              static_cast<long long>(rows), static_cast<long long>(vocab),
              static_cast<long long>(reps));
  std::printf("  FirstArgmax       %8.1f us (%.2f us a row)\n", best[0] * 1e6,
              best[0] * 1e6 / rows);
  std::printf("  std::max_element  %8.1f us (%.2f us a row)  %.2fx FirstArgmax's time\n",
              best[1] * 1e6, best[1] * 1e6 / rows, best[1] / best[0]);
  return 0;
}
