// CoordinatorMetricsObserver: how requests' blocks become per-block series (steps, selections,
// share, Jain, max/mean) and how the monitor's worker view becomes block replicas. The live
// cluster version (real processes, a real Prometheus) is tests/deploy/cluster_metrics_test.sh.
#include "coordinator/coordinator_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/block_layout.h"
#include "common/metrics_server.h"
#include "tests/util/metric_samples.h"

namespace swarm::coordinator {
namespace {

// The samples of an observer's metric set.
std::map<std::string, double> Samples(CoordinatorMetricsObserver& m) {
  return test_util::Samples(*m.metrics().registry());
}
using test_util::Value;

std::string Block(const std::string& name, int b) {
  return name + "{block=\"" + std::to_string(b) + "\"}";
}

std::unique_ptr<CoordinatorMetricsObserver> New(int num_layers, int num_blocks) {
  CoordinatorMetricsObserver::Options o;
  o.listen = "127.0.0.1:0";
  o.num_layers = num_layers;
  o.num_blocks = num_blocks;
  o.workers = {"w0:1", "w1:1"};
  o.model = "test";
  auto m = CoordinatorMetricsObserver::Start(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

TEST(CoordinatorMetricsTest, BlocksDefaultToOnePerLayer) {
  auto m = New(5, 0);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->num_blocks(), 5);
  EXPECT_NE(m->address().find("127.0.0.1:"), std::string::npos);
  auto layout = BlockLayout::Create(5, m->num_blocks());
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(BlocksTouched(*layout, {0, 2, 4}), (std::vector<int>{0, 2, 4}));
}

TEST(CoordinatorMetricsTest, BadBlockCounts) {
  CoordinatorMetricsObserver::Options o;
  o.listen = "127.0.0.1:0";
  o.num_layers = 4;
  o.num_blocks = 5;
  EXPECT_FALSE(CoordinatorMetricsObserver::Start(o).ok());
  o.num_layers = 0;
  o.num_blocks = 0;
  EXPECT_FALSE(CoordinatorMetricsObserver::Start(o).ok());
}

TEST(CoordinatorMetricsTest, StepsCountOnEveryBlockTheyTouch) {
  auto m = New(6, 3);  // Blocks {0,1} {2,3} {4,5}.
  ASSERT_NE(m, nullptr);
  auto layout = BlockLayout::Create(6, 3);
  ASSERT_TRUE(layout.ok());
  // The blocks the pipeline passes: those the request's layers touch.
  const std::vector<int> all = BlocksTouched(*layout, {0, 1, 2, 3, 4, 5});
  const std::vector<int> first_and_part_of_last = BlocksTouched(*layout, {0, 1, 4});
  EXPECT_EQ(all, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(first_and_part_of_last, (std::vector<int>{0, 2}));
  m->OnBlocksChosen("exact", all, {});
  for (int i = 0; i < 3; ++i) m->OnStep(all);
  m->OnBlocksChosen("sparse", first_and_part_of_last, {});
  for (int i = 0; i < 2; ++i) m->OnStep(first_and_part_of_last);
  auto s = Samples(*m);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_steps_total", 0)), 5);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_steps_total", 1)), 3);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_steps_total", 2)), 5);
  // Only the sparse request selects blocks.
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_selections_total", 0)), 1);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_selections_total", 1)), 0);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_selections_total", 2)), 1);
  EXPECT_NEAR(Value(s, Block("swarm_coordinator_block_load_share_ratio", 1)), 3.0 / 13, 1e-12);
  // Jain of {5,3,5}: 169 / (3 * 59).
  EXPECT_NEAR(Value(s, "swarm_coordinator_block_load_jain_ratio"), 169.0 / 177, 1e-12);
  EXPECT_NEAR(Value(s, "swarm_coordinator_block_load_max_mean_ratio"), 5 / (13.0 / 3), 1e-12);
}

WorkerState Worker(const std::string& address, std::vector<int> layers, bool usable = true) {
  WorkerState w;
  w.address = address;
  w.reachable = w.compatible = true;
  w.ready = usable;
  for (int l : layers) w.info.add_layers(l);
  return w;
}

TEST(CoordinatorMetricsTest, ReplicasCountWorkersCoveringEachLayerOfABlock) {
  auto m = New(6, 3);  // Blocks {0,1} {2,3} {4,5}.
  ASSERT_NE(m, nullptr);
  auto s = Samples(*m);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(Value(s, Block("swarm_coordinator_block_replicas", b)), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_ready"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_up{worker=\"w0:1\"}"), 0);

  // Block 1 is split over both workers: covered once. Block 0 is on both: twice. A worker that is
  // not ready counts nowhere.
  m->OnWorkers({Worker("w0:1", {0, 1, 2}), Worker("w1:1", {0, 1, 3, 4, 5}),
                Worker("w2:1", {0, 1, 2, 3, 4, 5}, /*usable=*/false)});
  s = Samples(*m);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_replicas", 0)), 2);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_replicas", 1)), 1);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_replicas", 2)), 1);
  m->OnWorkers({Worker("w0:1", {0, 1, 2})});
  s = Samples(*m);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_replicas", 1)), 0);
  EXPECT_EQ(Value(s, Block("swarm_coordinator_block_replicas", 2)), 0);
}

TEST(CoordinatorMetricsTest, SchedulerHooksFeedBatchQueueOccupancyAndBusySeries) {
  auto m = New(4, 0);
  ASSERT_NE(m, nullptr);
  auto s = Samples(*m);
  // Every series exists before the first step (the dashboard's queries need a zero sample).
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_sequences_count"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_tokens_count"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_queue_time_seconds_count"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_scheduler_running_requests"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_scheduler_waiting_requests"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_busy_seconds_total{worker=\"w0:1\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_busy_seconds_total{worker=\"w1:1\"}"), 0);

  // Two steps: 3 sequences decoding (3 rows), then 5 sequences of which one prefills 60 rows.
  m->OnBatchStep(3, 3);
  m->OnBatchStep(5, 64);
  m->OnAdmitted(absl::Milliseconds(20));
  m->OnAdmitted(absl::Seconds(2));
  m->OnSchedulerState(5, 7);
  m->OnWorkerBusy(0, absl::Milliseconds(250));
  m->OnWorkerBusy(0, absl::Milliseconds(500));
  m->OnWorkerBusy(1, absl::Milliseconds(125));
  m->OnWorkerBusy(9, absl::Seconds(1));  // Not a WorkerSet index of this coordinator.
  s = Samples(*m);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_sequences_count"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_sequences_sum"), 8);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_sequences_bucket{le=\"4\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_sequences_bucket{le=\"8\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_tokens_count"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_tokens_sum"), 67);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_tokens_bucket{le=\"32\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_batch_tokens_bucket{le=\"64\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_queue_time_seconds_count"), 2);
  EXPECT_NEAR(Value(s, "swarm_coordinator_queue_time_seconds_sum"), 2.02, 1e-9);
  EXPECT_EQ(Value(s, "swarm_coordinator_queue_time_seconds_bucket{le=\"0.025\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_scheduler_running_requests"), 5);
  EXPECT_EQ(Value(s, "swarm_coordinator_scheduler_waiting_requests"), 7);
  EXPECT_NEAR(Value(s, "swarm_coordinator_worker_busy_seconds_total{worker=\"w0:1\"}"), 0.75, 1e-9);
  EXPECT_NEAR(Value(s, "swarm_coordinator_worker_busy_seconds_total{worker=\"w1:1\"}"), 0.125,
              1e-9);
  EXPECT_NEAR(Value(s, "swarm_coordinator_worker_busy_seconds_total{worker=\"other\"}"), 1, 1e-9);
  m->OnSchedulerState(0, 0);
  s = Samples(*m);
  EXPECT_EQ(Value(s, "swarm_coordinator_scheduler_running_requests"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_scheduler_waiting_requests"), 0);
}

}  // namespace
}  // namespace swarm::coordinator
