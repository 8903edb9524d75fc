// A team of threads for the fork-join loops of the CPU decode path (model/cpu_matmul.h's products
// split over output columns, model/cpu_layer_torch.h's attention split over heads): Run(n, fn)
// calls fn(task, member) for every task in [0, n) and returns when all have returned. The members
// take tasks from a shared counter, so one that is slow to wake or descheduled (a shared machine)
// leaves its tasks to the others instead of holding the loop up. Decode runs tens of such loops per
// token, microseconds apart, so the members spin briefly between them (a bounded time) before
// sleeping, as llama.cpp's threads do; a queue-based executor (common/thread_pool.h) takes tens of
// microseconds to wake a thread.
//
// One team per process (SharedComputeTeam): every row-kernel product of the process (layers and
// LM head) runs on it, so that two teams never spin against each other on the same cores.
//
// Thread-safe: one Run at a time uses the members; a Run that finds the team busy (another thread
// of the process in its own Run) runs every task itself, in order. Which member runs which task
// varies from call to call: callers make each task's result independent of that. The destructor
// joins every member (no detached threads).
#ifndef SWARM_COMMON_COMPUTE_TEAM_H_
#define SWARM_COMMON_COMPUTE_TEAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace swarm {

class ComputeTeam {
 public:
  // `threads` members (>= 1), the calling thread of Run being member 0.
  explicit ComputeTeam(int threads);
  ~ComputeTeam();
  ComputeTeam(const ComputeTeam&) = delete;
  ComputeTeam& operator=(const ComputeTeam&) = delete;

  int size() const { return size_; }

  // fn(task, member) for every task in [0, tasks), each exactly once, on the calling thread
  // (member 0) and the other members (1..size()-1); returns when every call has returned. fn
  // must not throw and must not call Run on this team.
  void Run(int64_t tasks, absl::FunctionRef<void(int64_t task, int member)> fn);

 private:
  struct Job {
    absl::FunctionRef<void(int64_t, int)> fn;
    int64_t tasks;
    std::atomic<int64_t> next{0};  // The next task to take.
    std::atomic<int64_t> done{0};  // Tasks finished.
  };
  void Loop(int member);
  static void Work(Job& job, int member);

  const int size_;
  absl::Mutex run_mu_;  // Held by the Run that owns the members.
  absl::Mutex mu_;      // Guards sleeping and waking.
  absl::CondVar wake_;
  std::atomic<uint64_t> generation_{0};  // Bumped (under mu_) for each Run and at destruction.
  std::atomic<Job*> job_{nullptr};       // The current Run's job (on its caller's stack).
  std::atomic<int> active_{0};           // Members that may be touching *job_.
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// The process's team, shared by whoever holds it (LayerHost, ModelEnds; a product called without
// a team holds it for the call): created when nobody holds one, with SWARM_CPU_THREADS members
// when that variable is set (1..1024), else one per CPU the process may run on (its affinity
// mask: a worker under `taskset -c 0` gets a team of 1); destroyed (its threads
// joined) when the last holder lets go.
std::shared_ptr<ComputeTeam> SharedComputeTeam();

}  // namespace swarm

#endif  // SWARM_COMMON_COMPUTE_TEAM_H_
