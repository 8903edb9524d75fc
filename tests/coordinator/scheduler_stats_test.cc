// SchedulerStats: the scheduler's hooks become the recent figures `swarm status` shows (means per
// step, busy fractions over the sliding window), and every hook reaches the next observer.
#include "coordinator/scheduler_stats.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace swarm::coordinator {
namespace {

// Records which hooks arrived, to check the forwarding.
class Recorder : public CoordinatorObserver {
 public:
  void OnBatchStep(int sequences, int64_t tokens) override {
    calls.push_back("step " + std::to_string(sequences) + " " + std::to_string(tokens));
  }
  void OnAdmitted(absl::Duration queued) override {
    calls.push_back("admitted " + absl::FormatDuration(queued));
  }
  void OnSchedulerState(int running, int waiting) override {
    calls.push_back("state " + std::to_string(running) + " " + std::to_string(waiting));
  }
  void OnWorkerBusy(int worker, absl::Duration busy) override {
    calls.push_back("busy " + std::to_string(worker) + " " + absl::FormatDuration(busy));
  }
  void OnRequestStart(absl::string_view mode) override {
    calls.push_back("start " + std::string(mode));
  }
  void SetReady(bool ready) override { calls.push_back(ready ? "ready" : "not ready"); }
  void OnWorkerStep(absl::string_view worker, double, absl::StatusCode) override {
    calls.push_back("worker step " + std::string(worker));
  }
  std::vector<std::string> calls;
};

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1000);
};

SchedulerStats::Options Options(FakeClock* clock, CoordinatorObserver* next = nullptr) {
  SchedulerStats::Options o;
  o.next = next;
  o.num_workers = 2;
  o.window = absl::Seconds(10);
  o.clock = [clock] { return clock->now; };
  return o;
}

TEST(SchedulerStatsTest, NothingReportedReadsAsZero) {
  FakeClock clock;
  SchedulerStats stats(Options(&clock));
  SchedulerStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.running_requests, 0);
  EXPECT_EQ(s.waiting_requests, 0);
  EXPECT_EQ(s.steps, 0);
  EXPECT_EQ(s.sequences_per_step, 0);
  EXPECT_EQ(s.tokens_per_step, 0);
  EXPECT_EQ(s.worker_busy_fraction, (std::vector<double>{0, 0}));
  EXPECT_EQ(s.window_seconds, 1);  // At least one slice, not ~0.
}

TEST(SchedulerStatsTest, MeansPerStepAndBusyFractionsOverTheWindow) {
  FakeClock clock;
  SchedulerStats stats(Options(&clock));
  clock.now += absl::Seconds(4);
  stats.OnSchedulerState(6, 2);
  stats.OnBatchStep(2, 2);
  stats.OnBatchStep(6, 70);  // Two decoding + four prefilling 17 rows each.
  stats.OnAdmitted(absl::Milliseconds(100));
  stats.OnAdmitted(absl::Milliseconds(300));
  stats.OnWorkerBusy(0, absl::Seconds(1));
  stats.OnWorkerBusy(1, absl::Milliseconds(500));
  stats.OnWorkerBusy(5, absl::Seconds(3));  // Not a worker: ignored.
  clock.now += absl::Seconds(1);
  SchedulerStats::Snapshot s = stats.Get();
  EXPECT_EQ(s.running_requests, 6);
  EXPECT_EQ(s.waiting_requests, 2);
  EXPECT_EQ(s.window_seconds, 5);  // Since start-up: shorter than the window.
  EXPECT_EQ(s.steps, 2);
  EXPECT_EQ(s.sequences_per_step, 4);
  EXPECT_EQ(s.tokens_per_step, 36);
  EXPECT_EQ(s.admitted, 2);
  EXPECT_NEAR(s.queue_seconds_mean, 0.2, 1e-12);
  ASSERT_EQ(s.worker_busy_fraction.size(), 2u);
  EXPECT_NEAR(s.worker_busy_fraction[0], 0.2, 1e-12);
  EXPECT_NEAR(s.worker_busy_fraction[1], 0.1, 1e-12);

  // 20 s later the window (the 9 slices before this one and half of this one) holds only what
  // came since: one step, worker 1 busy 4.75 of 9.5 s.
  clock.now += absl::Seconds(20);
  stats.OnBatchStep(1, 1);
  stats.OnWorkerBusy(1, absl::Milliseconds(4750));
  clock.now += absl::Milliseconds(500);
  s = stats.Get();
  EXPECT_EQ(s.window_seconds, 9.5);
  EXPECT_EQ(s.steps, 1);
  EXPECT_EQ(s.tokens_per_step, 1);
  EXPECT_EQ(s.admitted, 0);
  EXPECT_EQ(s.queue_seconds_mean, 0);
  EXPECT_NEAR(s.worker_busy_fraction[0], 0, 1e-12);
  EXPECT_NEAR(s.worker_busy_fraction[1], 0.5, 1e-12);
  EXPECT_EQ(s.running_requests, 6);  // Occupancy is "now", not windowed.

  // Overlapping hops of one worker cannot make it more than fully busy.
  stats.OnWorkerBusy(0, absl::Seconds(25));
  EXPECT_EQ(stats.Get().worker_busy_fraction[0], 1);
}

TEST(SchedulerStatsTest, SlicesAgeOutOneByOne) {
  FakeClock clock;
  SchedulerStats stats(Options(&clock));
  clock.now += absl::Seconds(30);
  stats.OnBatchStep(1, 1);  // In the slice [1030 s, 1031 s).
  clock.now += absl::Seconds(9);
  stats.OnBatchStep(3, 3);  // [1039 s, 1040 s)
  EXPECT_EQ(stats.Get().steps, 2);
  EXPECT_EQ(stats.Get().sequences_per_step, 2);
  clock.now += absl::Seconds(1);  // 1040 s: the first slice left the window.
  EXPECT_EQ(stats.Get().steps, 1);
  EXPECT_EQ(stats.Get().sequences_per_step, 3);
  clock.now += absl::Seconds(9);
  EXPECT_EQ(stats.Get().steps, 0);
}

TEST(SchedulerStatsTest, EveryHookReachesTheNextObserver) {
  FakeClock clock;
  Recorder next;
  SchedulerStats stats(Options(&clock, &next));
  stats.OnRequestStart("exact");
  stats.OnBatchStep(3, 5);
  stats.OnAdmitted(absl::Milliseconds(7));
  stats.OnSchedulerState(1, 4);
  stats.OnWorkerBusy(1, absl::Milliseconds(2));
  stats.OnWorkerBusy(9, absl::Milliseconds(2));
  stats.OnWorkerStep("w:1", 0.1, absl::StatusCode::kOk);
  stats.SetReady(true);
  EXPECT_EQ(next.calls,
            (std::vector<std::string>{"start exact", "step 3 5", "admitted 7ms", "state 1 4",
                                      "busy 1 2ms", "busy 9 2ms", "worker step w:1", "ready"}));
}

}  // namespace
}  // namespace swarm::coordinator
