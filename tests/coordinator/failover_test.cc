// The pieces of the scheduler's fail-over that the process tests (tests/integration/
// failover_process_test.cc) only reach slowly: the step deadline (StepDeadlines), the choice of
// a replacement (PickReplica, over candidates and through a WorkerSet of fake workers that answer
// Info only), the load a moved request counts (WorkerSet::MovePlans) and the replay's steps
// (ReplayGroups). Every expected value is worked out by hand in the comments.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/scheduler.h"
#include "coordinator/step_deadline.h"
#include "coordinator/worker_plan.h"
#include "coordinator/worker_set.h"
#include "swarm/v1/worker.grpc.pb.h"

namespace swarm::coordinator {
namespace {

// ---- StepDeadlines: max(factor × p99, min), at most the step timeout.

FailoverOptions Options(double factor) {
  FailoverOptions o;
  o.step_deadline_min = absl::Seconds(2);
  o.step_deadline_factor = factor;
  return o;
}

void NoteN(StepDeadlines& d, int n, absl::Duration latency) {
  for (int i = 0; i < n; ++i) d.Note(latency);
}

TEST(StepDeadlineTest, StepTimeoutUntilSixteenStepsThenTheMinimum) {
  StepDeadlines d(Options(10), absl::Seconds(60));
  EXPECT_EQ(d.Deadline(), absl::Seconds(60));  // No step seen.
  NoteN(d, 15, absl::Milliseconds(100));
  EXPECT_EQ(d.Deadline(), absl::Seconds(60));  // 15 < 16.
  d.Note(absl::Milliseconds(100));
  // 16 samples of 0.1 s: p99 = sorted[min(15, 16·99/100 = 15)] = 0.1 s; 10 × 0.1 s = 1 s < 2 s.
  EXPECT_EQ(d.p99(), absl::Seconds(0.1));
  EXPECT_EQ(d.Deadline(), absl::Seconds(2));
}

TEST(StepDeadlineTest, FollowsTheP99EverySixteenStepsAndIsCappedByTheStepTimeout) {
  StepDeadlines d(Options(10), absl::Seconds(60));
  NoteN(d, 16, absl::Milliseconds(100));
  d.Note(absl::Milliseconds(500));
  // 17 noted, 17 % 16 != 0: not recomputed.
  EXPECT_EQ(d.p99(), absl::Seconds(0.1));
  EXPECT_EQ(d.Deadline(), absl::Seconds(2));
  NoteN(d, 15, absl::Milliseconds(500));
  // 32 noted: 16 × 0.1 s, 16 × 0.5 s; sorted[min(31, 32·99/100 = 31)] = 0.5 s → 5 s.
  EXPECT_EQ(d.p99(), absl::Seconds(0.5));
  EXPECT_EQ(d.Deadline(), absl::Seconds(5));
  NoteN(d, 16, absl::Seconds(10));
  // 48 noted: sorted[min(47, 47)] = 10 s → 100 s, capped at the 60 s step timeout.
  EXPECT_EQ(d.p99(), absl::Seconds(10));
  EXPECT_EQ(d.Deadline(), absl::Seconds(60));
}

TEST(StepDeadlineTest, TheWindowForgetsOldSteps) {
  StepDeadlines d(Options(10), absl::Seconds(60));
  NoteN(d, 256, absl::Seconds(1));
  EXPECT_EQ(d.Deadline(), absl::Seconds(10));  // 10 × 1 s.
  // 240 fast steps replace 240 of the 256 in the window: 16 × 1 s left, sorted[min(255,
  // 256·99/100 = 253)] is one of them.
  NoteN(d, 240, absl::Milliseconds(10));
  EXPECT_EQ(d.p99(), absl::Seconds(1));
  NoteN(d, 16, absl::Milliseconds(10));
  // 512 noted: every sample in the window is 0.01 s → 0.1 s, raised to the 2 s minimum.
  EXPECT_EQ(d.p99(), absl::Seconds(0.01));
  EXPECT_EQ(d.Deadline(), absl::Seconds(2));
}

TEST(StepDeadlineTest, FactorZeroMeansTheStepTimeout) {
  StepDeadlines d(Options(0), absl::Seconds(60));
  NoteN(d, 64, absl::Milliseconds(1));
  EXPECT_EQ(d.Deadline(), absl::Seconds(60));
}

// ---- PickReplica over candidates (WorkerSet::PickReplica's policy).

WorkerCandidate W(std::vector<int> layers, int load, bool usable = true) {
  WorkerCandidate c;
  c.layers = std::move(layers);
  c.load = load;
  c.usable = usable;
  return c;
}

TEST(PickReplicaTest, LeastLoadedUsableHostOfEveryLayer) {
  std::vector<WorkerCandidate> w = {
      W({0, 1, 2, 3}, 2),   // 0
      W({0, 1}, 1),         // 1
      W({2, 3}, 0),         // 2
      W({0, 1}, 0, false),  // 3: least loaded, but down or draining.
      W({0, 1}, 1),         // 4: as loaded as 1.
  };
  EXPECT_EQ(PickReplica(std::vector<int>{0, 1}, w), 1);  // 1 and 4 at load 1: the lower index.
  EXPECT_EQ(PickReplica(std::vector<int>{2, 3}, w), 2);
  EXPECT_EQ(PickReplica(std::vector<int>{1, 2}, w), 0);  // Only 0 hosts both.
  EXPECT_EQ(PickReplica(std::vector<int>{4}, w), -1);
  w[3].usable = true;
  EXPECT_EQ(PickReplica(std::vector<int>{0, 1}, w), 3);
  w[4].load = 0;  // 3 and 4 at load 0.
  EXPECT_EQ(PickReplica(std::vector<int>{0, 1}, w), 3);
  w[3].usable = w[1].usable = w[4].usable = false;
  EXPECT_EQ(PickReplica(std::vector<int>{0, 1}, w), 0);
  w[0].usable = false;
  EXPECT_EQ(PickReplica(std::vector<int>{0, 1}, w), -1);
}

// ---- Through a WorkerSet: workers that answer Info as told.

class FakeWorker final : public v1::WorkerService::Service {
 public:
  FakeWorker(std::vector<int> layers, bool draining) {
    info_.set_model_fingerprint("fp");
    info_.set_num_layers(4);
    info_.mutable_layers()->Assign(layers.begin(), layers.end());
    info_.set_ready(!draining);  // As a draining swarm-worker answers.
    info_.set_draining(draining);
    info_.set_invariant_rows(16);
    info_.set_sessions(3);
    info_.set_kv_used_bytes(4096);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeWorker() override { Stop(); }
  void Stop() {
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::Status Info(grpc::ServerContext* /*ctx*/, const v1::InfoRequest* /*req*/,
                    v1::InfoResponse* resp) override {
    *resp = info_;
    return grpc::Status::OK;
  }

 private:
  v1::InfoResponse info_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

std::vector<int> Loads(const WorkerSet& set) {
  std::vector<int> loads;
  for (const WorkerState& s : set.Snapshot()) loads.push_back(s.active_requests);
  return loads;
}

// A worker that stops answering keeps its layers in the status, not the sessions and KV it held
// at its last answer (a drained worker's last sessions would otherwise show forever).
TEST(WorkerSetFailoverTest, AWorkerDownShowsNoLiveCounters) {
  FakeWorker a({0, 1}, false), b({2, 3}, false);
  WorkerSet set({a.address(), b.address()}, "fp", 4);
  set.Refresh(absl::Seconds(10));
  ASSERT_TRUE(set.usable(0) && set.usable(1));
  EXPECT_EQ(set.Snapshot()[0].info.sessions(), 3);
  a.Stop();
  set.Refresh(absl::Seconds(10));
  set.MarkUnreachable(1, absl::UnavailableError("killed"));
  for (const WorkerState& s : set.Snapshot()) {
    SCOPED_TRACE(s.address);
    EXPECT_FALSE(s.reachable);
    EXPECT_EQ(s.info.sessions(), 0);
    EXPECT_EQ(s.info.kv_used_bytes(), 0);
    EXPECT_EQ(s.info.layers_size(), 2);  // What it hosts is still known.
  }
}

TEST(WorkerSetFailoverTest, PickReplicaSkipsDownAndDrainingWorkers) {
  FakeWorker a({0, 1}, false), b({0, 1}, false), c({0, 1}, true), d({2, 3}, false);
  WorkerSet set({a.address(), b.address(), c.address(), d.address()}, "fp", 4);
  set.Refresh(absl::Seconds(10));
  ASSERT_TRUE(set.usable(0) && set.usable(1) && set.usable(3));
  EXPECT_FALSE(set.usable(2));
  EXPECT_TRUE(set.draining(2));
  EXPECT_EQ(set.invariant_rows(0), 16);
  EXPECT_EQ(set.PickReplica({0, 1}), 0);                  // 0 and 1 at load 0: the lower index.
  set.MovePlans({}, {{Hop{0, {0, 1}}, Hop{3, {2, 3}}}});  // One request through 0 and 3.
  EXPECT_EQ(Loads(set), (std::vector<int>{1, 0, 0, 1}));
  // 1 (load 0), not the draining 2 (load 0 too) nor 0 (load 1).
  EXPECT_EQ(set.PickReplica({0, 1}), 1);
  EXPECT_EQ(set.PickReplica({2, 3}), 3);
  EXPECT_EQ(set.PickReplica({1, 2}), -1);  // No worker hosts both.
  set.MarkUnreachable(1, absl::UnavailableError("killed"));
  EXPECT_EQ(set.PickReplica({0, 1}), 0);
  EXPECT_EQ(set.invariant_rows(1), 0);  // Not reachable: nothing promised.
  set.MarkUnreachable(0, absl::UnavailableError("killed"));
  EXPECT_EQ(set.PickReplica({0, 1}), -1);  // Only the draining one is left.
  // A fail-over waiting for layers 0-1 asks the hosts that are down (0, 1 and the draining 2),
  // not 3; 0 and 1 answer again.
  EXPECT_EQ(set.ProbeHosts({0, 1}, absl::Seconds(10)), 3);
  EXPECT_EQ(set.PickReplica({0, 1}), 1);
  EXPECT_EQ(set.ProbeHosts({0, 1}, absl::Seconds(10)), 1);  // Only the draining one is down.
}

TEST(WorkerSetFailoverTest, MovePlansCountsEachRequestOncePerWorker) {
  // No worker is contacted: the load is the coordinator's own count.
  WorkerSet set({"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, "fp", 4);
  // A sparse request: two layer sets, worker 0 in both.
  const std::vector<std::vector<Hop>> plans = {{Hop{0, {0, 1}}, Hop{1, {2, 3}}}, {Hop{0, {0, 1}}}};
  set.MovePlans({}, plans);
  EXPECT_EQ(Loads(set), (std::vector<int>{1, 1, 0}));
  // The first set's hop on 0 fails over to 2: 0 still serves the second set.
  const std::vector<std::vector<Hop>> moved = {{Hop{2, {0, 1}}, Hop{1, {2, 3}}}, {Hop{0, {0, 1}}}};
  set.MovePlans(plans, moved);
  EXPECT_EQ(Loads(set), (std::vector<int>{1, 1, 1}));
  // Then the second's: 0 serves nothing of it any more.
  const std::vector<std::vector<Hop>> moved2 = {{Hop{2, {0, 1}}, Hop{1, {2, 3}}}, {Hop{2, {0, 1}}}};
  set.MovePlans(moved, moved2);
  EXPECT_EQ(Loads(set), (std::vector<int>{0, 1, 1}));
  // A second request through 1 only; then the first ends (its load as last moved).
  set.MovePlans({}, {{Hop{1, {0, 1, 2, 3}}}});
  EXPECT_EQ(Loads(set), (std::vector<int>{0, 2, 1}));
  set.MovePlans(moved2, {});
  EXPECT_EQ(Loads(set), (std::vector<int>{0, 1, 0}));
  // A hop without a worker (-1) counts against none.
  set.MovePlans({}, {{Hop{-1, {0}}}});
  EXPECT_EQ(Loads(set), (std::vector<int>{0, 1, 0}));
}

// ---- ReplayGroups: which steps a replay sends as one.

using Steps = std::vector<std::pair<int64_t, int64_t>>;

// A 20-row prefill chunk, a 3-row chunk at 20, then 30 decode rows at 23..52: 32 steps.
Steps Mixed() {
  Steps s = {{0, 20}, {20, 3}};
  for (int64_t p = 23; p < 53; ++p) s.push_back({p, 1});
  return s;
}

std::vector<std::vector<int64_t>> Flat(const std::vector<ReplayGroup>& groups) {
  std::vector<std::vector<int64_t>> out;
  for (const ReplayGroup& g : groups) out.push_back({g.first_step, g.steps, g.start, g.rows});
  return out;
}

TEST(ReplayGroupsTest, ShortStepsMergeUpToTheRowLimitPrefillChunksKeepTheirs) {
  const Steps steps = Mixed();
  const std::vector<int> done = {32};
  // The 20-row chunk alone; 3 + 13 decode rows (steps 1..14, positions 20..35); 16 decode rows
  // (steps 15..30, 36..51); the last (step 31, 52).
  EXPECT_EQ(Flat(ReplayGroups(steps, done, 16)),
            (std::vector<std::vector<int64_t>>{
                {0, 1, 0, 20}, {1, 14, 20, 16}, {15, 16, 36, 16}, {31, 1, 52, 1}}));
  // Limit 4: the 3-row chunk and one decode row (steps 1..2, 20..23); then 4 decode rows at a
  // time (steps 3..30, 24..51: 7 groups); the last alone.
  std::vector<std::vector<int64_t>> want = {{0, 1, 0, 20}, {1, 2, 20, 4}};
  for (int64_t k = 0; k < 7; ++k) want.push_back({3 + 4 * k, 4, 24 + 4 * k, 4});
  want.push_back({31, 1, 52, 1});
  EXPECT_EQ(Flat(ReplayGroups(steps, done, 4)), want);
}

TEST(ReplayGroupsTest, WithoutAPromiseEveryStepAlone) {
  const Steps steps = Mixed();
  for (int64_t limit : {0, 1}) {
    const std::vector<ReplayGroup> groups = ReplayGroups(steps, std::vector<int>{32}, limit);
    ASSERT_EQ(groups.size(), steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_EQ(Flat({groups[i]})[0], (std::vector<int64_t>{static_cast<int64_t>(i), 1,
                                                            steps[i].first, steps[i].second}));
    }
  }
}

TEST(ReplayGroupsTest, AGroupGoesToOneSetOfHops) {
  // Two moved hops: the first took all 32 steps, the second 20 (steps 0..19).
  EXPECT_EQ(Flat(ReplayGroups(Mixed(), std::vector<int>{32, 20}, 16)),
            (std::vector<std::vector<int64_t>>{
                {0, 1, 0, 20}, {1, 14, 20, 16}, {15, 5, 36, 5}, {20, 12, 41, 12}}));
}

TEST(ReplayGroupsTest, LongStepsAndGapsBreakAGroup) {
  const Steps steps = {{0, 1}, {1, 1}, {2, 17}, {19, 1}, {21, 1}, {22, 1}};
  EXPECT_EQ(Flat(ReplayGroups(steps, std::vector<int>{6}, 16)),
            (std::vector<std::vector<int64_t>>{
                {0, 2, 0, 2}, {2, 1, 2, 17}, {3, 1, 19, 1}, {4, 2, 21, 2}}));
}

}  // namespace
}  // namespace swarm::coordinator
