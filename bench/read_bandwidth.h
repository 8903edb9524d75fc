// The machine's streaming read bandwidth, the roofline the CPU benchmarks (model_bench,
// attention_bench) report their reads against, measured in the same run. Header-only.
#ifndef SWARM_BENCH_READ_BANDWIDTH_H_
#define SWARM_BENCH_READ_BANDWIDTH_H_

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/types/span.h"

namespace swarm::bench {

// Streaming read bandwidth: `threads` threads each sum a disjoint slice of a buffer much larger
// than the caches, with SIMD vector accumulators and software prefetch so the loop is bound by
// memory, not by adds or by waiting on the hardware prefetcher;
// best of several passes.
typedef uint64_t V4 __attribute__((vector_size(32)));

inline double ReadBandwidth(size_t bytes, int threads) {
  // Huge pages, like the engine's weights: in a VM 4 KiB pages add nested-paging TLB misses that
  // would understate what the memory system delivers.
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return 0;
  madvise(mem, bytes, MADV_HUGEPAGE);
  absl::Span<V4> buf(static_cast<V4*>(mem), bytes / sizeof(V4));
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = V4{i, i + 1, i + 2, i + 3};
  double best = 0;
  std::atomic<uint64_t> sink{0};
  for (int pass = 0; pass < 5; ++pass) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    const size_t per = buf.size() / threads;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        V4 s0 = {}, s1 = {}, s2 = {}, s3 = {};
        const V4* p = buf.data() + t * per;
        for (size_t i = 0; i + 4 <= per; i += 4) {
          // Software prefetch 1 KiB ahead, as tuned BLAS kernels do.
          __builtin_prefetch(p + i + 64);
          __builtin_prefetch(p + i + 66);
          s0 += p[i];
          s1 += p[i + 1];
          s2 += p[i + 2];
          s3 += p[i + 3];
        }
        V4 s = s0 + s1 + s2 + s3;
        sink += s[0] + s[1] + s[2] + s[3];
      });
    }
    for (auto& th : pool) th.join();
    best = std::max(
        best, static_cast<double>(per * threads * sizeof(V4)) /
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  munmap(mem, bytes);
  return best;
}

}  // namespace swarm::bench

#endif  // SWARM_BENCH_READ_BANDWIDTH_H_
