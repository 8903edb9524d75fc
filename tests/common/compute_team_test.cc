// ComputeTeam: every task of a Run runs exactly once, whatever the team size, the number of tasks
// or how many threads call Run at once (a busy team runs the caller's tasks on the caller); Run
// returns only after every task has returned; a team is destroyed with its members joined.
#include "common/compute_team.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace swarm {
namespace {

TEST(ComputeTeam, EveryTaskRunsExactlyOnceBeforeRunReturns) {
  for (int size : {1, 2, 3, 5}) {
    ComputeTeam team(size);
    EXPECT_EQ(team.size(), size);
    for (int64_t tasks : {0, 1, 2, 7, 64, 1000}) {
      std::vector<std::atomic<int>> hits(tasks);
      std::atomic<bool> bad_member{false};
      team.Run(tasks, [&](int64_t t, int member) {
        if (member < 0 || member >= size) bad_member = true;
        hits[t].fetch_add(1);
      });
      for (int64_t t = 0; t < tasks; ++t) {
        ASSERT_EQ(hits[t].load(), 1) << "size " << size << ", " << tasks << " tasks, task " << t;
      }
      EXPECT_FALSE(bad_member.load());
    }
  }
}

TEST(ComputeTeam, ConcurrentRunsEachCompleteTheirOwnTasks) {
  ComputeTeam team(2);
  constexpr int kThreads = 4, kRuns = 200, kTasks = 16;
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int c = 0; c < kThreads; ++c) {
    callers.emplace_back([&] {
      for (int r = 0; r < kRuns; ++r) {
        std::vector<int> hits(kTasks, 0);
        team.Run(kTasks, [&](int64_t t, int) { ++hits[t]; });  // Disjoint: no race.
        for (int h : hits) wrong += h != 1;
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(ComputeTeam, TheSharedTeamIsOneWhileHeld) {
  std::shared_ptr<ComputeTeam> a = SharedComputeTeam();
  std::shared_ptr<ComputeTeam> b = SharedComputeTeam();
  EXPECT_EQ(a.get(), b.get());
  EXPECT_GE(a->size(), 1);
}

}  // namespace
}  // namespace swarm
