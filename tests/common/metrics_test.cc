// WorkerMetrics / CoordinatorMetrics: names follow the house convention, every On*/Set* method
// moves the series docs/metrics.md says it moves (read back through the text exposition, as
// Prometheus would see it), labels stay bounded, and the balance helpers match hand-computed
// values.
#include "common/metrics.h"

#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/metrics_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "tests/util/metric_samples.h"

namespace swarm::common {
namespace {

using ::testing::DoubleNear;
using ::testing::HasSubstr;

using test_util::Samples;
using test_util::Value;

std::unique_ptr<WorkerMetrics> NewWorker(std::vector<int> layers = {0, 1, 2, 3, 6, 7}) {
  WorkerMetrics::Options o;
  o.layers = std::move(layers);
  o.model = "stories260K";
  auto m = WorkerMetrics::Create(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

std::unique_ptr<CoordinatorMetrics> NewCoordinator(int blocks = 4) {
  CoordinatorMetrics::Options o;
  o.num_blocks = blocks;
  o.workers = {"w0:7001", "w1:7001"};
  o.model = "stories260K";
  auto m = CoordinatorMetrics::Create(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

// --- Balance helpers -----------------------------------------------------------------------

TEST(BalanceTest, JainIndex) {
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{1, 1, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{4, 0, 0, 0}), 0.25);
  // (1+2+3)² / (3·(1+4+9)) = 36/42.
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{1, 2, 3}), 36.0 / 42.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<int64_t>{10, 20, 30}), 36.0 / 42.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{0, 0}), 1.0);
  EXPECT_DOUBLE_EQ(JainIndex(std::vector<double>{-5, 2}), 0.5);  // Negative counts as 0.
}

TEST(BalanceTest, MaxMeanRatio) {
  EXPECT_DOUBLE_EQ(MaxMeanRatio(std::vector<double>{2, 2}), 1.0);
  EXPECT_DOUBLE_EQ(MaxMeanRatio(std::vector<double>{4, 0, 0, 0}), 4.0);
  EXPECT_DOUBLE_EQ(MaxMeanRatio(std::vector<double>{1, 2, 3}), 1.5);
  EXPECT_DOUBLE_EQ(MaxMeanRatio(std::vector<int64_t>{1, 2, 3}), 1.5);
  EXPECT_DOUBLE_EQ(MaxMeanRatio(std::vector<double>{}), 1.0);
  EXPECT_DOUBLE_EQ(MaxMeanRatio(std::vector<double>{0, 0, 0}), 1.0);
}

TEST(LabelsTest, StatusCodesAndModes) {
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kOk), "ok");
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kResourceExhausted), "resource_exhausted");
  EXPECT_EQ(StatusCodeLabel(absl::StatusCode::kDeadlineExceeded), "deadline_exceeded");
  EXPECT_EQ(StatusCodeLabel(static_cast<absl::StatusCode>(99)), "unknown");
  EXPECT_EQ(ModeLabel("exact"), "exact");
  EXPECT_EQ(ModeLabel("sparse"), "sparse");
  EXPECT_EQ(ModeLabel("Exact"), "other");
  EXPECT_EQ(ModeLabel(""), "other");
}

// --- Naming convention ---------------------------------------------------------------------

TEST(NamingTest, EveryFamilyFollowsTheHouseConvention) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics::Options wo;
  wo.layers = {0, 1};
  wo.registry = registry;
  auto w = WorkerMetrics::Create(wo);
  ASSERT_TRUE(w.ok());
  CoordinatorMetrics::Options co;
  co.num_blocks = 2;
  co.workers = {"w:1"};
  co.registry = registry;
  auto c = CoordinatorMetrics::Create(co);
  ASSERT_TRUE(c.ok());
  // Families whose series appear on first use.
  (*w)->OnError("Forward", absl::StatusCode::kInternal);
  (*c)->OnWorkerStep("w:1", 0.1, absl::StatusCode::kInternal);

  const std::regex name_re("^swarm_(worker|coordinator)_[a-z][a-z0-9_]*[a-z0-9]$");
  const std::set<std::string> allowed_labels = {"layers",  "method", "code",    "reason", "mode",
                                                "outcome", "block",  "worker",  "model",  "device",
                                                "dtype",   "blocks", "requests"};
  int families = 0;
  for (const prometheus::MetricFamily& f : registry->Collect()) {
    ++families;
    SCOPED_TRACE(f.name);
    EXPECT_TRUE(std::regex_match(f.name, name_re));
    EXPECT_FALSE(f.help.empty());
    const bool ends_total = f.name.size() > 6 && f.name.substr(f.name.size() - 6) == "_total";
    EXPECT_EQ(ends_total, f.type == prometheus::MetricType::Counter);
    EXPECT_NE(f.type, prometheus::MetricType::Summary);  // Histograms, not summaries.
    if (f.type == prometheus::MetricType::Histogram) {
      // A time, a size, or (batch sizes) a count of named things.
      EXPECT_TRUE(std::regex_search(f.name, std::regex("_(seconds|bytes|rows|sequences|tokens)$")));
    }
    for (const auto& metric : f.metric) {
      for (const auto& label : metric.label) EXPECT_TRUE(allowed_labels.count(label.name));
    }
  }
  EXPECT_GE(families, 35);
}

// --- WorkerMetrics -------------------------------------------------------------------------

TEST(WorkerMetricsTest, RejectsBadLayerSets) {
  WorkerMetrics::Options o;
  EXPECT_EQ(WorkerMetrics::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::vector<int>& bad : std::vector<std::vector<int>>{{3, 1}, {-1, 2}, {0, 1, 1}}) {
    o.layers = bad;
    auto m = WorkerMetrics::Create(o);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << absl::StrJoin(bad, ",");
  }
  o.layers = {0, 1, 1};
  EXPECT_THAT(std::string(WorkerMetrics::Create(o).status().message()), HasSubstr("[0,1,1]"));
}

TEST(WorkerMetricsTest, EachRunOfLayersIsOneLabel) {
  auto m = NewWorker({0, 1, 2, 6});
  ASSERT_NE(m, nullptr);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-2\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"6-6\"}"), 0);
  m = NewWorker({3});
  ASSERT_NE(m, nullptr);
  s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"3-3\"}"), 0);
}

TEST(WorkerMetricsTest, SeriesExistFromStart) {
  auto m = NewWorker();
  ASSERT_NE(m, nullptr);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-3\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"6-7\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_forward_duration_seconds_count{layers=\"6-7\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_ready"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_reserved_bytes"), 0);
  EXPECT_EQ(Value(s, "swarm_worker_session_evictions_total{reason=\"idle_ttl\"}"), 0);
  // The worker refuses over its budget and never evicts for it: no such series.
  EXPECT_EQ(s.count("swarm_worker_session_evictions_total{reason=\"budget\"}"), 0u);
  EXPECT_EQ(Value(s,
                  "swarm_worker_info{device=\"cpu\",dtype=\"f32\",layers=\"0-3,6-7\","
                  "model=\"stories260K\"}"),
            1);
}

TEST(WorkerMetricsTest, ForwardCountsUnderTheHostedRange) {
  auto m = NewWorker();
  ASSERT_NE(m, nullptr);
  m->OnForward(0, 0.002, absl::StatusCode::kOk, 5);
  m->OnForward(2, 0.004, absl::StatusCode::kOk);  // A step over layers 2-3 counts under 0-3.
  m->OnForward(6, 0.5, absl::StatusCode::kOk, 1);
  m->OnForward(9, 0.001, absl::StatusCode::kOk);  // Not hosted: "other".
  m->OnForward(0, 0.001, absl::StatusCode::kInvalidArgument);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-3\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_forward_tokens_total{layers=\"0-3\"}"), 6);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"6-7\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"other\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_forward_duration_seconds_count{layers=\"0-3\"}"), 2);
  EXPECT_THAT(Value(s, "swarm_worker_forward_duration_seconds_sum{layers=\"0-3\"}"),
              DoubleNear(0.006, 1e-12));
  // 0.002 and 0.004 are both <= 0.005 and > 0.001.
  EXPECT_EQ(Value(s, "swarm_worker_forward_duration_seconds_bucket{layers=\"0-3\",le=\"0.001\"}"),
            0);
  EXPECT_EQ(Value(s, "swarm_worker_forward_duration_seconds_bucket{layers=\"0-3\",le=\"0.005\"}"),
            2);
  EXPECT_EQ(Value(s, "swarm_worker_forward_duration_seconds_bucket{layers=\"6-7\",le=\"+Inf\"}"),
            1);
  EXPECT_EQ(Value(s, "swarm_worker_errors_total{code=\"invalid_argument\",method=\"Forward\"}"), 1);
}

TEST(WorkerMetricsTest, GaugesAndCounters) {
  auto m = NewWorker({0, 1});
  ASSERT_NE(m, nullptr);
  m->SetReady(true);
  m->SetActiveSessions(3);
  m->SetKvCacheBytes(1 << 20);
  m->SetKvCacheReservedBytes(3 << 20);
  m->SetKvCacheBudgetBytes(int64_t{8} << 30);
  m->SetBlocksResident(2);
  m->OnBlockLoad(0.3);
  m->OnBlockLoad(1.5);
  m->OnBlockEviction();
  m->OnSessionEvicted("idle_ttl");
  m->OnSessionEvicted("some reason {x}");
  m->OnSessionEvicted("not valid");
  m->OnError("OpenSession", absl::StatusCode::kResourceExhausted);
  m->OnError("bad method {name}", absl::StatusCode::kInternal);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_worker_ready"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_active_sessions"), 3);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_bytes"), 1 << 20);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_reserved_bytes"), 3 << 20);
  EXPECT_EQ(Value(s, "swarm_worker_kv_cache_budget_bytes"), 8.0 * (1 << 30));
  EXPECT_EQ(Value(s, "swarm_worker_blocks_resident"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_block_loads_total"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_block_load_duration_seconds_count"), 2);
  EXPECT_EQ(Value(s, "swarm_worker_block_evictions_total"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_session_evictions_total{reason=\"idle_ttl\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_session_evictions_total{reason=\"other\"}"), 2);
  EXPECT_EQ(
      Value(s, "swarm_worker_errors_total{code=\"resource_exhausted\",method=\"OpenSession\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_worker_errors_total{code=\"internal\",method=\"other\"}"), 1);
}

// --- CoordinatorMetrics --------------------------------------------------------------------

TEST(CoordinatorMetricsTest, RejectsBadOptions) {
  CoordinatorMetrics::Options o;
  EXPECT_EQ(CoordinatorMetrics::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.num_blocks = 2;
  o.workers = {"a:1", "a:1"};
  EXPECT_EQ(CoordinatorMetrics::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.workers = {""};
  EXPECT_EQ(CoordinatorMetrics::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CoordinatorMetricsTest, RequestLifecycle) {
  auto m = NewCoordinator();
  ASSERT_NE(m, nullptr);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_requests_total{mode=\"exact\",outcome=\"ok\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_requests_total{mode=\"sparse\",outcome=\"ok\"}"), 0);

  m->OnRequestStart("exact");
  m->OnRequestStart("sparse");
  m->OnRequestStart("exact");
  s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_active_requests"), 3);

  m->OnInterToken("exact", 0.01);
  m->OnInterToken("exact", 0.02);
  m->OnRequestDone("exact", absl::StatusCode::kOk, 7, 3, 0.25, 0.05);
  m->OnRequestDone("exact", absl::StatusCode::kCancelled, 4, 0, 0.1, -1);
  m->OnRequestDone("sparse", absl::StatusCode::kOk, 2, 10, 1.0, 0.2);
  s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_active_requests"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_requests_total{mode=\"exact\",outcome=\"ok\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_requests_total{mode=\"exact\",outcome=\"cancelled\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_requests_total{mode=\"sparse\",outcome=\"ok\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_prompt_tokens_total{mode=\"exact\"}"), 11);
  EXPECT_EQ(Value(s, "swarm_coordinator_generated_tokens_total{mode=\"exact\"}"), 3);
  EXPECT_EQ(Value(s, "swarm_coordinator_generated_tokens_total{mode=\"sparse\"}"), 10);
  EXPECT_EQ(Value(s, "swarm_coordinator_request_duration_seconds_count{mode=\"exact\"}"), 2);
  // The cancelled request produced no token: one TTFT observation for exact, not two.
  EXPECT_EQ(Value(s, "swarm_coordinator_time_to_first_token_seconds_count{mode=\"exact\"}"), 1);
  EXPECT_THAT(Value(s, "swarm_coordinator_time_to_first_token_seconds_sum{mode=\"exact\"}"),
              DoubleNear(0.05, 1e-12));
  EXPECT_EQ(Value(s, "swarm_coordinator_inter_token_latency_seconds_count{mode=\"exact\"}"), 2);
}

TEST(CoordinatorMetricsTest, RefusedRequestsAreCountedButNeverActive) {
  auto m = NewCoordinator();
  ASSERT_NE(m, nullptr);
  m->OnRequestRefused("exact", absl::StatusCode::kResourceExhausted);
  m->OnRequestRefused("exact", absl::StatusCode::kResourceExhausted);
  m->OnRequestRefused("sparse", absl::StatusCode::kUnavailable);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_active_requests"), 0);
  EXPECT_EQ(
      Value(s, "swarm_coordinator_requests_total{mode=\"exact\",outcome=\"resource_exhausted\"}"),
      2);
  EXPECT_EQ(Value(s, "swarm_coordinator_requests_total{mode=\"sparse\",outcome=\"unavailable\"}"),
            1);
}

TEST(CoordinatorMetricsTest, UnknownModesAreFoldedIntoOther) {
  auto m = NewCoordinator();
  ASSERT_NE(m, nullptr);
  for (int i = 0; i < 50; ++i) {
    std::string mode = "mode" + std::to_string(i);
    m->OnRequestStart(mode);
    m->OnRequestDone(mode, absl::StatusCode::kInvalidArgument, 1, 0, 0.001, -1);
  }
  auto s = Samples(*m->registry());
  EXPECT_EQ(
      Value(s, "swarm_coordinator_requests_total{mode=\"other\",outcome=\"invalid_argument\"}"),
      50);
  int series = 0;
  for (const auto& [key, value] : s) {
    if (key.rfind("swarm_coordinator_requests_total{", 0) == 0) ++series;
  }
  EXPECT_EQ(series, 3);  // exact/ok, sparse/ok, other/invalid_argument.
}

TEST(CoordinatorMetricsTest, BlockSelectionsStepsAndBalance) {
  auto m = NewCoordinator(4);
  ASSERT_NE(m, nullptr);
  m->OnBlocksSelected({0, 2});
  m->OnBlocksSelected({2, 3});
  m->OnBlocksSelected({-1, 4, 99});  // Out of range: ignored.
  m->OnBlockSteps({0, 1, 2, 3}, 5);
  m->OnBlockSteps({2}, 1);
  m->OnBlockSteps({7}, 1);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_block_selections_total{block=\"0\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_selections_total{block=\"1\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_selections_total{block=\"2\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_selections_total{block=\"3\"}"), 1);
  EXPECT_EQ(s.count("swarm_coordinator_block_selections_total{block=\"4\"}"), 0u);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_steps_total{block=\"2\"}"), 6);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_steps_total{block=\"3\"}"), 5);
  // Balanced until told otherwise.
  EXPECT_EQ(Value(s, "swarm_coordinator_block_load_jain_ratio"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_load_max_mean_ratio"), 1);

  m->SetBlockLoads({1, 1, 2, 0});
  s = Samples(*m->registry());
  EXPECT_DOUBLE_EQ(Value(s, "swarm_coordinator_block_load_share_ratio{block=\"0\"}"), 0.25);
  EXPECT_DOUBLE_EQ(Value(s, "swarm_coordinator_block_load_share_ratio{block=\"2\"}"), 0.5);
  EXPECT_DOUBLE_EQ(Value(s, "swarm_coordinator_block_load_share_ratio{block=\"3\"}"), 0);
  // (4)² / (4·6) and 2 / 1.
  EXPECT_NEAR(Value(s, "swarm_coordinator_block_load_jain_ratio"), 16.0 / 24.0, 1e-9);
  EXPECT_NEAR(Value(s, "swarm_coordinator_block_load_max_mean_ratio"), 2.0, 1e-9);

  m->SetBalance(0.9, 1.2, 0.03);
  m->SetTolls({0.5, -0.25, 0, 1});
  m->SetBlockReplicas(1, 2);
  m->SetBlockReplicas(9, 1);  // Ignored.
  s = Samples(*m->registry());
  EXPECT_NEAR(Value(s, "swarm_coordinator_block_load_jain_ratio"), 0.9, 1e-9);
  EXPECT_NEAR(Value(s, "swarm_coordinator_block_load_max_mean_ratio"), 1.2, 1e-9);
  EXPECT_NEAR(Value(s, "swarm_coordinator_router_equilibrium_gap"), 0.03, 1e-9);
  EXPECT_EQ(Value(s, "swarm_coordinator_router_toll{block=\"1\"}"), -0.25);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_replicas{block=\"1\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_replicas{block=\"0\"}"), 0);
}

TEST(CoordinatorMetricsTest, WorkerSeries) {
  auto m = NewCoordinator();
  ASSERT_NE(m, nullptr);
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_steps_total{worker=\"w0:7001\"}"), 0);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_up{worker=\"w1:7001\"}"), 0);

  m->OnWorkerStep("w0:7001", 0.003, absl::StatusCode::kOk);
  m->OnWorkerStep("w0:7001", 0.004, absl::StatusCode::kOk);
  m->OnWorkerStep("w1:7001", 0.1, absl::StatusCode::kUnavailable);
  m->OnWorkerStep("stranger:1", 0.1, absl::StatusCode::kOk);
  m->OnWorkerStep("stranger:2", 0.1, absl::StatusCode::kDeadlineExceeded);
  m->SetWorkerUp("w1:7001", true);
  m->SetReady(true);
  s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_steps_total{worker=\"w0:7001\"}"), 2);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_step_duration_seconds_count{worker=\"w0:7001\"}"),
            2);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_steps_total{worker=\"w1:7001\"}"), 0);
  EXPECT_EQ(
      Value(s, "swarm_coordinator_worker_errors_total{code=\"unavailable\",worker=\"w1:7001\"}"),
      1);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_steps_total{worker=\"other\"}"), 1);
  EXPECT_EQ(
      Value(s,
            "swarm_coordinator_worker_errors_total{code=\"deadline_exceeded\",worker=\"other\"}"),
      1);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_up{worker=\"w1:7001\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_ready"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_info{blocks=\"4\",model=\"stories260K\"}"), 1);
}

TEST(CoordinatorMetricsTest, ConcurrentUpdatesAreNotLost) {
  auto m = NewCoordinator(3);
  ASSERT_NE(m, nullptr);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m] {
      for (int i = 0; i < 5000; ++i) {
        m->OnBlockSteps({0, 1, 2});
        m->OnWorkerStep("w0:7001", 0.001, absl::StatusCode::kOk);
      }
    });
  }
  for (auto& t : threads) t.join();
  auto s = Samples(*m->registry());
  EXPECT_EQ(Value(s, "swarm_coordinator_block_steps_total{block=\"1\"}"), 20000);
  EXPECT_EQ(Value(s, "swarm_coordinator_worker_steps_total{worker=\"w0:7001\"}"), 20000);
}

TEST(MetricsSetsTest, BothSetsShareOneRegistry) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics::Options wo;
  wo.layers = {0, 1};
  wo.registry = registry;
  auto w = WorkerMetrics::Create(wo);
  ASSERT_TRUE(w.ok());
  CoordinatorMetrics::Options co;
  co.num_blocks = 1;
  co.registry = registry;
  auto c = CoordinatorMetrics::Create(co);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*w)->registry(), registry);
  (*w)->OnForward(0, 0.01, absl::StatusCode::kOk);
  (*c)->OnBlockSteps({0});
  auto s = Samples(*registry);
  EXPECT_EQ(Value(s, "swarm_worker_forward_steps_total{layers=\"0-1\"}"), 1);
  EXPECT_EQ(Value(s, "swarm_coordinator_block_steps_total{block=\"0\"}"), 1);
}

}  // namespace
}  // namespace swarm::common
