// A scrape target with a known load pattern, for the real-Prometheus test
// (tests/deploy/prometheus_test.sh --serve, registered in tests/deploy/CMakeLists.txt). Disabled
// in the unit run; that test runs it with --gtest_also_run_disabled_tests. It serves coordinator
// and worker metrics from one MetricsServer and, every 5 ms, runs one "step" on blocks 0, 1, 2 and
// a second on block 2 (block 3 idle), so the recorded balance figures are known: shares 1/4, 1/4,
// 1/2, 0; Jain's index 2/3; max/mean 2.
//
// Environment: SWARM_SERVE_ADDRESS_FILE (where to write HOST:PORT once serving; required),
// SWARM_SERVE_SECONDS (how long to serve; default 60), SWARM_SERVE_TOKENS (a tokens file: /metrics
// then needs a bearer token of it, as with --metrics-auth-tokens).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "common/metrics.h"
#include "common/metrics_server.h"
#include "gtest/gtest.h"

namespace swarm::common {
namespace {

TEST(SyntheticTarget, DISABLED_ScrapeTargetRunByDeployPrometheusSynthetic) {
  const char* address_file = std::getenv("SWARM_SERVE_ADDRESS_FILE");
  ASSERT_NE(address_file, nullptr) << "set SWARM_SERVE_ADDRESS_FILE";
  const char* seconds_env = std::getenv("SWARM_SERVE_SECONDS");
  const int seconds = seconds_env ? std::atoi(seconds_env) : 60;

  CoordinatorMetrics::Options co;
  co.num_blocks = 4;
  co.workers = {"w0:7001", "w1:7001"};
  co.model = "synthetic";
  auto coordinator = CoordinatorMetrics::Create(co);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  WorkerMetrics::Options wo;
  wo.layers = {0, 1, 3, 4};  // Two hosted ranges, "0-1" and "3-4".
  wo.model = "synthetic";
  wo.registry = (*coordinator)->registry();
  auto worker = WorkerMetrics::Create(wo);
  ASSERT_TRUE(worker.ok()) << worker.status();

  MetricsServer::Options so;
  so.registry = (*coordinator)->registry();
  if (const char* tokens = std::getenv("SWARM_SERVE_TOKENS")) so.auth_tokens_file = tokens;
  auto server = MetricsServer::Start(so);
  ASSERT_TRUE(server.ok()) << server.status();

  CoordinatorMetrics& c = **coordinator;
  WorkerMetrics& w = **worker;
  c.SetReady(true);
  c.SetWorkerUp("w0:7001", true);
  c.SetWorkerUp("w1:7001", true);
  for (int b = 0; b < 4; ++b) c.SetBlockReplicas(b, 1);
  w.SetReady(true);
  w.SetKvCacheBudgetBytes(1 << 30);

  {  // Written whole, then renamed, so the reader never sees a partial address.
    const std::string tmp = std::string(address_file) + ".tmp";
    std::ofstream(tmp) << (*server)->address() << "\n";
    ASSERT_EQ(std::rename(tmp.c_str(), address_file), 0);
  }

  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int64_t tick = 0;
  while (std::chrono::steady_clock::now() < end) {
    c.OnBlockSteps({0, 1, 2});
    c.OnBlockSteps({2});
    c.OnWorkerStep("w0:7001", 0.002, absl::StatusCode::kOk);
    c.OnWorkerStep("w1:7001", 0.004, absl::StatusCode::kOk);
    c.OnInterToken("exact", 0.006);
    w.OnForward(0, 0.002, absl::StatusCode::kOk);
    w.OnForward(3, 0.004, absl::StatusCode::kOk);
    w.SetActiveSessions(1);
    w.SetKvCacheBytes(tick % 1000 * 1024);
    if (++tick % 20 == 0) {  // A request of 20 tokens every 100 ms.
      c.OnBlocksSelected({0, 2});
      c.OnRequestStart("exact");
      c.OnRequestDone("exact", absl::StatusCode::kOk, 8, 20, 0.1, 0.01);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace
}  // namespace swarm::common
