// WorkerMetricsObserver: the hosted layers become `layers` label values, the WorkerObserver hooks
// land on the right series. The live version is tests/deploy/cluster_metrics_test.sh.
#include "worker/worker_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <map>
#include <sstream>
#include <string>

#include "common/metrics_server.h"
#include "tests/util/metric_samples.h"

namespace swarm::worker {
namespace {

// The samples of an observer's metric set.
std::map<std::string, double> Samples(WorkerMetricsObserver& m) {
  return test_util::Samples(*m.metrics().registry());
}
using test_util::Value;

TEST(WorkerMetricsTest, HooksLandOnTheirSeries) {
  WorkerMetricsObserver::Options o;
  o.listen = "127.0.0.1:0";
  o.layers = {0, 1, 2, 6, 7};
  o.model = "m";
  o.kv_budget_bytes = 4096;
  auto m = WorkerMetricsObserver::Start(o);
  ASSERT_TRUE(m.ok()) << m.status();
  WorkerObserver& obs = **m;
  obs.SetReady(true);
  obs.OnForward(std::vector<int>{0, 1, 2}, 5, 0.01, absl::StatusCode::kOk);
  obs.OnForward(std::vector<int>{6, 7}, 1, 0.01, absl::StatusCode::kOk);
  // Counts under its first layer's range.
  obs.OnForward(std::vector<int>{1, 2, 6, 7}, 1, 0.01, absl::StatusCode::kOk);
  obs.OnForward(std::vector<int>{0, 1, 2}, 1, 0.01, absl::StatusCode::kNotFound);
  obs.OnError("OpenSession", absl::StatusCode::kResourceExhausted);
  WorkerStats stats;
  stats.sessions = 3;
  stats.kv_used_bytes = 1000;
  stats.kv_reserved_bytes = 3000;
  obs.SetSessions(stats, 4096);
  obs.OnSessionEvicted("idle_ttl");
  obs.OnBlockLoad(0.002);
  obs.OnBlockEviction();
  obs.SetBlocksResident(2, 123456);
  obs.OnBlockHit();
  obs.OnBlockHit();
  obs.OnBatch(3, 40);
  obs.OnBatch(1, 1);
  obs.OnBusy(0.25);
  obs.OnBusy(0.5);
  auto s = Samples(**m);
  EXPECT_EQ(Value(s, "swarm_worker_batch_rows_count"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_batch_rows_sum"), 41);
  EXPECT_EQ(Value(s, "swarm_worker_batch_rows_bucket{le=\"1\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_batch_rows_bucket{le=\"64\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_batch_sequences_sum"), 4);
  EXPECT_EQ(Value(s, "swarm_worker_batch_sequences_bucket{le=\"2\"}"), 1);
  EXPECT_DOUBLE_EQ(Value(s, "swarm_worker_busy_seconds_total"), 0.75);
  EXPECT_EQ(Value(s, "swarm_worker_block_loads_total"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_block_evictions_total"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_blocks_resident"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_resident_weight_bytes"), 123456);
  EXPECT_EQ(Value(s, "swarm_worker_block_hits_total"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_ready"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-2\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_forward_tokens_total{layers=\"0-2\"}"), 6);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"6-7\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_errors_total{code=\"not_found\",method=\"Forward\"}"), 1);
  EXPECT_EQ(
      Value(s, "swarm_worker_errors_total{code=\"resource_exhausted\",method=\"OpenSession\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_active_sessions"), 3);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_bytes"), 1000);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_reserved_bytes"), 3000);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_budget_bytes"), 4096);
  EXPECT_EQ(Value(s, "swarm_worker_session_evictions_total{reason=\"idle_ttl\"}"), 1);
  EXPECT_NE((*m)->address().find("127.0.0.1:"), std::string::npos);
}

}  // namespace
}  // namespace swarm::worker
