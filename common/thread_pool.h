// A fixed set of threads running queued closures: the executor gRPC handlers hand long work to
// (a worker's Forward, a coordinator's generation), so that gRPC's own callback threads never
// block on model compute. The queue is bounded: TrySchedule refuses work beyond it, and the
// caller answers RESOURCE_EXHAUSTED. Thread-safe. The destructor runs what is queued, then joins
// every thread (no detached threads).
#ifndef SWARM_COMMON_THREAD_POOL_H_
#define SWARM_COMMON_THREAD_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace swarm {

class ThreadPool {
 public:
  // `num_threads` >= 1; at most `max_queued` closures wait for a thread.
  ThreadPool(int num_threads, size_t max_queued);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `fn`; false (and `fn` is dropped) when the queue is full or the pool is stopping.
  bool TrySchedule(std::function<void()> fn);

  int num_threads() const { return static_cast<int>(threads_.size()); }
  // Closures running or queued now.
  size_t pending() const;

 private:
  void Loop();

  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace swarm

#endif  // SWARM_COMMON_THREAD_POOL_H_
