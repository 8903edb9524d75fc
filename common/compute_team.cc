#include "common/compute_team.h"

#ifdef __linux__
#include <sched.h>
#endif

#include <chrono>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SWARM_PAUSE() _mm_pause()
#else
#define SWARM_PAUSE() std::this_thread::yield()
#endif

namespace swarm {
namespace {

// How long a member spins for the next Run before it sleeps: longer than the gaps between the
// loops of one decode step (microseconds), short enough not to hold a shared core between steps.
constexpr std::chrono::microseconds kSpin{200};

// The CPUs this process may run on: its affinity mask (`taskset`, a cpuset), else every
// hardware thread. A team larger than that would spin its members against each other on the
// same cores.
int UsableCpus() {
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  return static_cast<int>(std::thread::hardware_concurrency());
}

}  // namespace

ComputeTeam::ComputeTeam(int threads) : size_(threads < 1 ? 1 : threads) {
  threads_.reserve(size_ - 1);
  for (int t = 1; t < size_; ++t) threads_.emplace_back([this, t] { Loop(t); });
}

ComputeTeam::~ComputeTeam() {
  {
    absl::MutexLock lock(&mu_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    wake_.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
}

void ComputeTeam::Work(Job& job, int member) {
  for (int64_t t = job.next.fetch_add(1); t < job.tasks; t = job.next.fetch_add(1)) {
    job.fn(t, member);
    job.done.fetch_add(1, std::memory_order_release);
  }
}

void ComputeTeam::Loop(int member) {
  uint64_t seen = 0;
  while (true) {
    auto spin_until = std::chrono::steady_clock::now() + kSpin;
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      SWARM_PAUSE();
      if (++spins % 64 == 0 && std::chrono::steady_clock::now() > spin_until) {
        absl::MutexLock lock(&mu_);
        while (generation_.load(std::memory_order_acquire) == seen) wake_.Wait(&mu_);
        break;
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    // Announce before looking: Run does not return (its job leaves the stack) while active_ > 0,
    // and a job it has withdrawn is never seen (sequentially consistent order of the two).
    active_.fetch_add(1);
    if (Job* job = job_.load()) Work(*job, member);
    active_.fetch_sub(1);
  }
}

void ComputeTeam::Run(int64_t tasks, absl::FunctionRef<void(int64_t, int)> fn) {
  if (tasks <= 0) return;
  if (size_ == 1 || tasks == 1 || !run_mu_.TryLock()) {
    for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  Job job{fn, tasks};
  job_.store(&job);
  {
    absl::MutexLock lock(&mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    wake_.SignalAll();
  }
  Work(job, 0);
  int spins = 0;
  while (job.done.load(std::memory_order_acquire) != tasks) {
    SWARM_PAUSE();
    // A member descheduled in the middle of a task (a loaded machine): let it have the core.
    if (++spins % 256 == 0) std::this_thread::yield();
  }
  job_.store(nullptr);
  while (active_.load() != 0) SWARM_PAUSE();
  run_mu_.Unlock();
}

std::shared_ptr<ComputeTeam> SharedComputeTeam() {
  static absl::Mutex mu(absl::kConstInit);
  // Not owning: the team lives while someone holds it, and its threads are joined after.
  static std::weak_ptr<ComputeTeam>* current = new std::weak_ptr<ComputeTeam>();
  absl::MutexLock lock(&mu);
  std::shared_ptr<ComputeTeam> team = current->lock();
  if (team == nullptr) {
    int n = UsableCpus();
    if (const char* env = std::getenv("SWARM_CPU_THREADS")) {
      const int v = std::atoi(env);
      if (v >= 1 && v <= 1024) n = v;
    }
    team = std::make_shared<ComputeTeam>(n < 1 ? 1 : n);
    *current = team;
  }
  return team;
}

}  // namespace swarm
