// attention_bench: the fused CPU path's attention kernel alone (model/cpu_attention.h, AttendRow)
// over a decode step's (session, layer, head) tasks, on one thread, so that a change to it is
// measured without the rest of a step.
//
//   attention_bench [--contexts 16,40,144,1024] [--head-dim 64] [--tasks-mb 256]
//                   [--reps 7] [--isa auto|avx512|avx2|scalar] [--kv f32|bf16]
//
// Each task is one query row against its own keys and values ([context, head_dim] each,
// contiguous, as a cache layer's head is): a step of S sessions × L layers × H heads reads S·L·H
// such blocks, each from memory (the blocks of other sessions and layers evict it between
// steps). The tasks' blocks together are far larger than the caches (--tasks-mb, default 256 MB:
// e.g. 8 sessions × 12 layers × 12 heads at 1,024 positions), so every block is read cold, and
// each repetition visits them all in order. The blocks lie once on 4 KiB pages, as a KV cache's
// (a plain allocation, model/kv_cache.cc), and once on transparent huge pages, the two taking
// turns. Prints, per context and page size, the best repetition's time per position and
// read rate, and that rate against one thread's streaming read bandwidth measured in the same run
// (bench/read_bandwidth.h).
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/read_bandwidth.h"
#include "common/lock_checks.h"
#include "model/cpu_attention.h"

namespace {

using swarm::model::AttendRow;
using swarm::model::KvType;
using swarm::model::MatmulIsa;

int Usage() {
  std::fprintf(stderr,
               "usage: attention_bench [--contexts 16,40,144,1024] [--head-dim 64] "
               "[--tasks-mb 256] [--reps 7] [--isa auto|avx512|avx2|scalar] [--kv f32|bf16]\n");
  return 2;
}

uint16_t ToBf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return static_cast<uint16_t>(b >> 16);
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  std::vector<int64_t> contexts = {16, 40, 144, 1024};
  int64_t hd = 64, tasks_mb = 256, reps = 7;
  MatmulIsa isa = MatmulIsa::kAuto;
  KvType kv = KvType::kF32;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return Usage();
    const std::string value = argv[++i];
    if (flag == "--contexts") {
      contexts.clear();
      for (absl::string_view c : absl::StrSplit(value, ',')) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(c, &n) || n < 1 || n > (1 << 20)) return Usage();
        contexts.push_back(n);
      }
    } else if ((flag == "--head-dim" && absl::SimpleAtoi(value, &hd) && hd >= 1 && hd <= 1024) ||
               (flag == "--tasks-mb" && absl::SimpleAtoi(value, &tasks_mb) && tasks_mb >= 1 &&
                tasks_mb <= 16384) ||
               (flag == "--reps" && absl::SimpleAtoi(value, &reps) && reps >= 1 && reps <= 1000)) {
    } else if (flag == "--isa" &&
               (value == "auto" || value == "avx512" || value == "avx2" || value == "scalar")) {
      isa = value == "avx512"   ? MatmulIsa::kAvx512
            : value == "avx2"   ? MatmulIsa::kAvx2
            : value == "scalar" ? MatmulIsa::kScalar
                                : MatmulIsa::kAuto;
    } else if (flag == "--kv" && (value == "f32" || value == "bf16")) {
      kv = value == "bf16" ? KvType::kBf16 : KvType::kF32;
    } else {
      return Usage();
    }
  }
  isa = swarm::model::ResolveIsa(isa);
  const size_t elem = kv == KvType::kBf16 ? 2 : 4;
  const double bandwidth = swarm::bench::ReadBandwidth(size_t{1} << 30, 1);
  std::printf(
      "attention kernel (AttendRow, %s, %s KV, head_dim %lld), one thread, cold blocks "
      "(%lld MB of tasks); one thread's streaming read bandwidth: %.1f GB/s\n",
      swarm::model::MatmulIsaName(isa), kv == KvType::kBf16 ? "bf16" : "f32",
      static_cast<long long>(hd), static_cast<long long>(tasks_mb), bandwidth / 1e9);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> q(hd), out(hd);
  for (float& x : q) x = normal(rng);
  for (int64_t len : contexts) {
    const size_t block = static_cast<size_t>(len * hd) * elem;  // Keys, and again values.
    const int64_t tasks =
        std::max<int64_t>(1, tasks_mb * 1000000 / static_cast<int64_t>(2 * block));
    const size_t bytes = static_cast<size_t>(tasks) * 2 * block;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      std::fprintf(stderr, "attention_bench: cannot map %zu bytes\n", bytes);
      return 1;
    }
    // Two copies of the tasks: the first on huge pages, the second on base pages (the caches').
    void* base_mem =
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base_mem == MAP_FAILED) {
      munmap(mem, bytes);
      std::fprintf(stderr, "attention_bench: cannot map %zu bytes\n", bytes);
      return 1;
    }
    madvise(mem, bytes, MADV_HUGEPAGE);
    madvise(base_mem, bytes, MADV_NOHUGEPAGE);
    auto* base = static_cast<uint8_t*>(mem);
    for (size_t i = 0; i < bytes / elem; ++i) {
      const float x = normal(rng);
      if (kv == KvType::kBf16) {
        const uint16_t b = ToBf16(x);
        std::memcpy(base + i * 2, &b, 2);
      } else {
        std::memcpy(base + i * 4, &x, 4);
      }
    }
    std::memcpy(base_mem, mem, bytes);
    const uint8_t* copies[2] = {base, static_cast<const uint8_t*>(base_mem)};
    std::vector<float> scores(len);
    const float scale = 1.0f / static_cast<float>(hd);
    double best[2] = {1e30, 1e30};
    for (int64_t rep = 0; rep <= reps; ++rep) {  // Repetition 0 warms up.
      for (int c = 0; c < 2; ++c) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t t = 0; t < tasks; ++t) {
          const uint8_t* k = copies[c] + static_cast<size_t>(t) * 2 * block;
          AttendRow(isa, kv, q.data(), k, k + block, 0, len - 1, hd, scale, scores.data(),
                    out.data());
        }
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (rep > 0) best[c] = std::min(best[c], s);
      }
    }
    munmap(mem, bytes);
    munmap(base_mem, bytes);
    for (int c = 0; c < 2; ++c) {
      const double rate = static_cast<double>(bytes) / best[c];
      const std::string versus =
          c == 1 ? absl::StrFormat("  (%.2fx the time on huge pages)", best[1] / best[0]) : "";
      std::printf(
          "  context %5lld  %-10s  %6lld tasks  %6.1f ns/position  %5.1f GB/s  %4.0f %% "
          "of the streaming read%s\n",
          static_cast<long long>(len), c == 0 ? "huge pages" : "4 KiB pages",
          static_cast<long long>(tasks), best[c] * 1e9 / static_cast<double>(tasks * len),
          rate / 1e9, 100.0 * rate / bandwidth, versus.c_str());
    }
  }
  return 0;
}
