// Load balancing in serving (coordinator/admission_balance.h): pressure from the workers' load,
// no harm by default (serving routes the toll-free choice, the old uncapped tolls did not), and
// the congestion game on a simulated 4-worker cluster under skewed load: Jain's index of worker
// busy time ≥ 0.9 at ≤ 5 % KL cost, measured with the calibration's measured damages.
#include "coordinator/admission_balance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>

#include "client/client.h"
#include "router/balance.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/router/router_test_util.h"

namespace swarm {
namespace {

using coordinator::AdmissionBalancer;
using coordinator::BalanceOptions;
using coordinator::BlockPressure;
using coordinator::WorkerLoad;
using coordinator::WorkerPressure;
using ::swarm::testing::ModelDir;

TEST(WorkerPressureTest, OnlyAWorkerBusierThanTheRestIsPressed) {
  auto w = [](double busy, int queued = 0, bool usable = true) {
    WorkerLoad l;
    l.usable = usable;
    l.busy_fraction = busy;
    l.queued = queued;
    return l;
  };
  EXPECT_EQ(WorkerPressure({w(0.5), w(0.5)}), (std::vector<double>{0, 0}));
  EXPECT_EQ(WorkerPressure({w(1), w(1)}), (std::vector<double>{0, 0}));  // All saturated.
  // Mean 0.6, headroom 0.4: (0.9 − 0.6) / 0.4.
  std::vector<double> p = WorkerPressure({w(0.9), w(0.3)});
  EXPECT_NEAR(p[0], 0.75, 1e-12);
  EXPECT_EQ(p[1], 0);
  // An unusable worker counts for nothing.
  p = WorkerPressure({w(0.9), w(0.3), w(0.0, 0, false)});
  EXPECT_NEAR(p[0], 0.75, 1e-12);
  EXPECT_EQ(p[2], 0);
  // No busy time measured yet: the queue stands in.
  p = WorkerPressure({w(0, 4), w(0, 0)});
  EXPECT_NEAR(p[0], 1.0, 1e-12);
  EXPECT_EQ(p[1], 0);
  EXPECT_EQ(WorkerPressure({w(0), w(0)}), (std::vector<double>{0, 0}));
}

TEST(WorkerPressureTest, ABlockIsPressedOnlyWhenEveryReplicaOfALayerIs) {
  auto layout = BlockLayout::Create(4, 2);  // Blocks [0, 2) and [2, 4).
  ASSERT_TRUE(layout.ok());
  auto w = [](std::vector<int> layers, double busy) {
    WorkerLoad l;
    l.layers = std::move(layers);
    l.usable = true;
    l.busy_fraction = busy;
    return l;
  };
  // Block 0's layers on a hot worker and an idle replica: the planner takes the idle one.
  std::vector<double> b = BlockPressure(*layout, {w({0, 1}, 0.9), w({0, 1}, 0.1), w({2, 3}, 0.2)});
  EXPECT_EQ(b, (std::vector<double>{0, 0}));
  // Without the replica, block 0 is pressed.
  b = BlockPressure(*layout, {w({0, 1}, 0.9), w({2, 3}, 0.1)});
  EXPECT_NEAR(b[0], (0.9 - 0.5) / 0.5, 1e-12);
  EXPECT_EQ(b[1], 0);
}

TEST(WorkerPressureTest, BlocksOnTheSameWorkersShareAResource) {
  auto layout = BlockLayout::Create(5, 5);
  ASSERT_TRUE(layout.ok());
  auto w = [](std::vector<int> layers) {
    WorkerLoad l;
    l.layers = std::move(layers);
    l.usable = true;
    return l;
  };
  EXPECT_EQ(
      coordinator::BlockResources(*layout, {w({0, 1, 2}), w({0, 1, 2}), w({3, 4}), w({3, 4})}),
      (std::vector<int>{0, 0, 0, 3, 3}));
  EXPECT_EQ(coordinator::BlockResources(*layout, {w({0, 1, 2, 3, 4})}),
            (std::vector<int>{0, 0, 0, 0, 0}));
}

// The tiny calibration's prompts as a stream, with their measured damages (in-sample: what
// the stream costs is measured, not estimated).
struct Stream {
  std::unique_ptr<router::Router> router;
  std::vector<std::vector<int64_t>> prompts;  // Calibration prompt p.
  std::vector<int> order;                     // The skewed stream: indices into prompts.
  // Measured damage of prompt p running `mask`.
  double Damage(int p, BlockMask mask) const {
    const router::RouterData& d = router->data();
    for (int s = 0; s < d.num_subsets(); ++s) {
      if (d.subsets[s] == mask)
        return d.subset_damage[static_cast<int64_t>(p) * d.num_subsets() + s];
    }
    ADD_FAILURE() << "no measured damage for mask " << mask;
    return 0;
  }
};

constexpr int kTopK = 3;

// eval's skewed stream (router/calibration/evaluate.h): 4 passes, prompts whose toll-free choice
// is the most common one 4× likelier.
Stream MakeStream() {
  const router::testing::Tiny& tiny = router::testing::TinyCalibration();
  Stream s;
  auto r = router::Router::Create(tiny.data, router::testing::Stories().checkpoint());
  EXPECT_TRUE(r.ok()) << r.status();
  s.router = std::move(*r);
  EXPECT_EQ(tiny.data.num_prompts, static_cast<int>(tiny.samples.size()));
  for (const router::Sample& x : tiny.samples) s.prompts.push_back(x.prompt);
  std::vector<BlockMask> free(s.prompts.size());
  for (size_t p = 0; p < s.prompts.size(); ++p) {
    auto pred = s.router->Predict(s.prompts[p], kTopK);
    EXPECT_TRUE(pred.ok());
    free[p] = BlocksToMask(pred->blocks);
  }
  s.order = router::SkewedStream(free, 4.0, 11, 4 * s.prompts.size());
  return s;
}

TEST(ServingNoHarmTest, DefaultServingRoutesTheTollFreeChoice) {
  Stream s = MakeStream();
  auto worker = testing::StartWorker(ModelDir("stories260K"), {0, 1, 2, 3, 4});
  coordinator::CoordinatorOptions options;
  options.router_path = router::testing::TinyCalibration().path;  // No --balance.
  auto coordinator = testing::StartCoordinator(ModelDir("stories260K"), {worker->address()},
                                               /*wait_serving=*/true, options);
  ASSERT_NE(coordinator, nullptr);
  auto client = Client::Connect(coordinator->address());
  ASSERT_TRUE(client.ok());
  double served_kl = 0, free_kl = 0;
  for (int p : s.order) {
    GenerateRequest req;
    req.prompt_ids = s.prompts[p];
    req.max_new_tokens = 1;
    req.mode = "sparse";
    req.top_k_blocks = kTopK;
    auto got = (*client)->Generate(req);
    ASSERT_TRUE(got.ok()) << got.status();
    auto free = s.router->Predict(s.prompts[p], kTopK);
    ASSERT_TRUE(free.ok());
    served_kl += s.Damage(p, BlocksToMask(got->blocks));
    free_kl += s.Damage(p, BlocksToMask(free->blocks));
    // Predict says the same: what serving runs, and the toll-free choice.
    auto shown = (*client)->Predict("", s.prompts[p], kTopK);
    ASSERT_TRUE(shown.ok());
    EXPECT_FALSE(shown->balance);
    EXPECT_EQ(shown->toll_free_blocks, got->blocks);
  }
  const double cost = served_kl / free_kl - 1;
  std::printf("default serving on the skewed stream (%zu requests): KL %+.2f %% vs toll-free\n",
              s.order.size(), 100 * cost);
  EXPECT_LE(std::fabs(cost), 0.01);

  // What serving did before: every request through the uncapped tolls (Router::Route), here on
  // the stream repeated 8 times (the tolls build up over requests; eval's stream is 1536 long).
  double routed_kl = 0, routed_free_kl = 0;
  for (int pass = 0; pass < 8; ++pass) {
    for (int p : s.order) {
      auto r = s.router->Route(s.prompts[p], kTopK);
      ASSERT_TRUE(r.ok());
      routed_kl += s.Damage(p, BlocksToMask(r->blocks));
      routed_free_kl += s.Damage(p, BlocksToMask(s.router->Predict(s.prompts[p], kTopK)->blocks));
    }
  }
  std::printf("uncapped tolls on that stream x 8: KL %+.2f %% vs toll-free\n",
              100 * (routed_kl / routed_free_kl - 1));
  EXPECT_GT(routed_kl / routed_free_kl - 1, 0.01);  // The harm the default no longer does.
}

// A simulated cluster: workers 0, 1 host layers 0-2 (blocks 0-2), workers 2, 3 layers 3-4
// (blocks 3, 4); a request's layers on a range go to the replica with less busy time. Busy
// fraction = work over the last `memory` windows / capacity, at most 1. `slow` multiplies the
// cost of a layer on workers 0, 1.
struct SimResult {
  double jain = 1;     // Of the workers' total busy time over the run.
  double kl = 0;       // Mean measured damage of the routed choices.
  double max_gap = 0;  // Largest toll-free gap of a window (damage-scale units).
  // Equilibrium gap of each window's previous choices at its prices, by window.
  std::vector<double> gaps;
};

// Records the balancing windows (thread-safe; read `windows` once no request runs).
class RecordWindows : public coordinator::CoordinatorObserver {
 public:
  void OnBalanceWindow(const BalanceWindow& w) override {
    absl::MutexLock lock(&mu_);
    windows.push_back(w);
  }
  std::vector<BalanceWindow> windows;

 private:
  absl::Mutex mu_;
};

SimResult Simulate(const Stream& s, bool balance, double slow, int window_size,
                   BalanceOptions o = {}) {
  const std::vector<std::vector<int>> hosted = {{0, 1, 2}, {0, 1, 2}, {3, 4}, {3, 4}};
  const int memory = 4;
  std::vector<std::vector<double>> recent;  // Per window: work per worker.
  std::vector<double> total(4, 0.0);
  // A window's capacity of one worker: what a replica of layers 0-2 gets when every request runs
  // two of its layers there (toll-free routing on the skewed mix): those workers saturate.
  const double capacity = window_size / 2 * 2 * slow;
  auto loads = [&] {
    std::vector<WorkerLoad> out(4);
    for (int w = 0; w < 4; ++w) {
      out[w].layers = hosted[w];
      out[w].usable = true;
      double sum = 0;
      for (const auto& r : recent) sum += r[w];
      out[w].busy_fraction = recent.empty() ? 0 : std::min(1.0, sum / (recent.size() * capacity));
    }
    return out;
  };
  RecordWindows record;
  o.enabled = true;
  // A window a second: the equilibrium gap prices again the windows the load still shows.
  absl::Time now = absl::UnixEpoch();
  o.clock = [&now] { return now; };
  o.gap_horizon = absl::Seconds(memory);
  AdmissionBalancer balancer(s.router.get(), 5, o, loads, &record);
  SimResult out;
  std::vector<double> busy_alt(4, 0.0);
  // The skewed stream 4 times over (48 windows of 8), so that the first windows, routed before
  // any load is measured, do not dominate the totals.
  std::vector<int> order;
  for (int pass = 0; pass < 4; ++pass) order.insert(order.end(), s.order.begin(), s.order.end());
  for (size_t i = 0; i < order.size(); i += window_size) {
    std::vector<int> ps(order.begin() + i, order.begin() + std::min(order.size(), i + window_size));
    std::vector<std::vector<int64_t>> prompts;
    for (int p : ps) prompts.push_back(s.prompts[p]);
    std::vector<BlockMask> masks;
    now += absl::Seconds(1);
    if (balance) {
      auto routed = balancer.RouteWindow(prompts, kTopK);
      EXPECT_TRUE(routed.ok()) << routed.status();
      for (const auto& r : *routed) masks.push_back(BlocksToMask(r.blocks));
    } else {
      for (const auto& p : prompts)
        masks.push_back(BlocksToMask(s.router->Predict(p, kTopK)->blocks));
    }
    std::vector<double> work(4, 0.0);
    for (size_t j = 0; j < masks.size(); ++j) {
      out.kl += s.Damage(ps[j], masks[j]);
      double a = 0, b = 0;  // Layers on each range.
      for (int blk : MaskToBlocks(masks[j])) (blk <= 2 ? a : b) += 1;
      const int ra = busy_alt[0] <= busy_alt[1] ? 0 : 1;
      const int rb = busy_alt[2] <= busy_alt[3] ? 2 : 3;
      work[ra] += a * slow;
      work[rb] += b;
      busy_alt[ra] += a * slow;
      busy_alt[rb] += b;
    }
    for (int w = 0; w < 4; ++w) total[w] += work[w];
    recent.push_back(work);
    if (static_cast<int>(recent.size()) > memory) recent.erase(recent.begin());
  }
  out.kl /= order.size();
  out.jain = router::JainIndex(total);
  for (const auto& w : record.windows) out.max_gap = std::max(out.max_gap, w.gap_toll_free);
  for (const auto& w : record.windows) out.gaps.push_back(w.gap);
  return out;
}

TEST(BalanceGameTest, SkewedLoadOnFourWorkersBalancesAtSmallKlCost) {
  Stream s = MakeStream();
  // Two shapes of load: the skewed prompt mix on equal workers, and the same with the workers
  // of layers 0-2 twice as slow.
  for (double slow : {1.0, 2.0}) {
    const SimResult off = Simulate(s, false, slow, 8);
    const SimResult on = Simulate(s, true, slow, 8);
    const double cost = on.kl / off.kl - 1;
    std::printf(
        "slow %.0fx: worker busy Jain %.3f -> %.3f, KL %.4f -> %.4f (%+.2f %%), toll-free gap "
        "up to %.3f\n",
        slow, off.jain, on.jain, off.kl, on.kl, 100 * cost, on.max_gap);
    std::printf("  equilibrium gap by window:");
    for (double g : on.gaps) std::printf(" %.3f", g);
    std::printf("\n");
    EXPECT_GE(on.jain, 0.9) << "slow " << slow;
    EXPECT_LE(cost, 0.05) << "slow " << slow;
    EXPECT_GT(on.max_gap, 0) << "the gap is exported and non-zero while load is skewed";
    // The equilibrium gap: the previous window's choices at the prices of now. The first window
    // is routed before any load is measured, so the second prices it at the load it caused.
    ASSERT_EQ(on.gaps.size(), 48u);
    EXPECT_GT(on.gaps[1], 0) << "slow " << slow << ": non-zero while the loop converges";
    if (slow == 2.0) {
      // With the slow workers saturated the tolls settle, and from then on each window's choices
      // are still best responses at the load they caused: converged. (On equal workers the loop
      // cycles with the 4-window memory of the load, and the gap with it: printed above.)
      const double late = *std::max_element(on.gaps.begin() + 24, on.gaps.end());
      EXPECT_EQ(late, 0) << "slow " << slow << ": converged";
    }
  }
}

TEST(BalanceGameTest, NoLoadMeansTheTollFreeChoice) {
  Stream s = MakeStream();
  RecordWindows record;
  BalanceOptions o;
  o.enabled = true;
  AdmissionBalancer idle(
      s.router.get(), 5, o, [] { return std::vector<WorkerLoad>(); }, &record);
  std::vector<std::vector<int64_t>> window;
  for (int i = 0; i < 8; ++i) window.push_back(s.prompts[s.order[i]]);
  auto routed = idle.RouteWindow(window, kTopK);
  ASSERT_TRUE(routed.ok()) << routed.status();
  for (size_t i = 0; i < window.size(); ++i) {
    EXPECT_EQ((*routed)[i].blocks, s.router->Predict(window[i], kTopK)->blocks);
  }
  ASSERT_EQ(record.windows.size(), 1u);
  EXPECT_EQ(record.windows[0].requests, 8);
  EXPECT_EQ(record.windows[0].gap, 0);
  // Route: a lone request is a window of one.
  auto one = idle.Route(window[0], kTopK);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(record.windows.size(), 2u);
  EXPECT_EQ(record.windows[1].requests, 1);
  // Without load the first window's toll-free choices stay best responses: at equilibrium.
  EXPECT_EQ(record.windows[1].gap, 0);
  EXPECT_EQ(idle.Route(window[0], 9).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ServingBalanceTest, BalanceRoutesConcurrentRequestsInWindows) {
  Stream s = MakeStream();
  auto worker = testing::StartWorker(ModelDir("stories260K"), {0, 1, 2, 3, 4});
  RecordWindows record;
  coordinator::CoordinatorOptions options;
  options.router_path = router::testing::TinyCalibration().path;
  options.balance.enabled = true;
  options.balance.window = absl::Milliseconds(50);
  options.observer = &record;
  auto coordinator = testing::StartCoordinator(ModelDir("stories260K"), {worker->address()},
                                               /*wait_serving=*/true, options);
  ASSERT_NE(coordinator, nullptr);
  auto client = Client::Connect(coordinator->address());
  ASSERT_TRUE(client.ok());
  // Predict: with --balance it says so; one idle worker presses nothing: the toll-free choice.
  auto shown = (*client)->Predict("", s.prompts[0], kTopK);
  ASSERT_TRUE(shown.ok()) << shown.status();
  EXPECT_TRUE(shown->balance);
  std::vector<int> blocks;
  for (const BlockChoice& b : shown->blocks) blocks.push_back(b.block);
  EXPECT_EQ(blocks, shown->toll_free_blocks);
  // Four requests at once: routed in windows, all served.
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      GenerateRequest req;
      req.prompt_ids = s.prompts[s.order[i]];
      req.max_new_tokens = 2;
      req.mode = "sparse";
      req.top_k_blocks = kTopK;
      results[i] = (*client)->Generate(req).status();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& st : results) EXPECT_TRUE(st.ok()) << st;
  coordinator.reset();
  int routed = 0;
  for (const auto& w : record.windows) {
    routed += w.requests;
    EXPECT_EQ(w.gap, 0);  // One idle worker: no load tolls, nothing to regret.
  }
  EXPECT_EQ(routed, 4);  // Every request went through exactly one window.
}

}  // namespace
}  // namespace swarm
