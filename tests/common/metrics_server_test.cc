// MetricsServer: /metrics and /healthz over cpp-httplib, checked with an httplib client in the
// same process. This test binary links LibTorch (through swarm_model), so it also shows the server
// starts inside a LibTorch process, which prometheus-cpp's civetweb Exposer cannot.
#include "common/metrics_server.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace swarm::common {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<prometheus::Registry> NewRegistry(prometheus::Counter** counter) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("swarm_test_things_total")
                     .Help("Things.")
                     .Register(*registry);
  *counter = &family.Add({{"kind", "a"}});
  return registry;
}

std::unique_ptr<MetricsServer> StartOrDie(MetricsServer::Options options) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

httplib::Result Get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(5, 0);
  return client.Get(path.c_str());
}

TEST(MetricsServerTest, ServesRegistryOnAnEphemeralPort) {
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);
  EXPECT_EQ(server->address(), "127.0.0.1:" + std::to_string(server->port()));

  counter->Increment(3);
  auto res = Get(server->port(), "/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(res->body, HasSubstr("# TYPE swarm_test_things_total counter"));
  EXPECT_THAT(res->body, HasSubstr("swarm_test_things_total{kind=\"a\"} 3"));

  // A later scrape sees later updates.
  counter->Increment(2);
  res = Get(server->port(), "/metrics");
  ASSERT_TRUE(res);
  EXPECT_THAT(res->body, HasSubstr("swarm_test_things_total{kind=\"a\"} 5"));
}

httplib::Result GetWithToken(int port, const std::string& path, const std::string& token) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(5, 0);
  client.set_bearer_token_auth(token);
  return client.Get(path.c_str());
}

// --metrics-auth-tokens: /metrics only for a token of the file (what Prometheus sends with
// `authorization: {credentials_file: ...}`); no token and a wrong one get 401 and no samples;
// /healthz stays open. A file that does not parse stops the server from starting.
TEST(MetricsServerTest, MetricsCanRequireAToken) {
  const std::string path =
      ::testing::TempDir() + "/swarm-metrics-tokens-" + std::to_string(getpid());
  {
    std::ofstream f(path);
    f << "# the scraper\nprometheus:prom-0123456789abcdef\n";
  }
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  options.auth_tokens_file = path;
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  auto res = Get(server->port(), "/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_THAT(res->body, ::testing::Not(HasSubstr("swarm_test_things_total")));
  res = GetWithToken(server->port(), "/metrics", "wrong-0123456789abcdef");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  res = GetWithToken(server->port(), "/metrics", "prom-0123456789abcdef");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->body, HasSubstr("swarm_test_things_total{kind=\"a\"} 0"));
  res = Get(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  server.reset();

  {
    std::ofstream f(path);
    f << "prometheus:short\n";  // Under 16 characters.
  }
  absl::StatusOr<std::unique_ptr<MetricsServer>> bad = MetricsServer::Start(options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--metrics-auth-tokens"));
  std::remove(path.c_str());
}

TEST(MetricsServerTest, HealthzFollowsTheCallback) {
  prometheus::Counter* counter = nullptr;
  std::atomic<bool> healthy{false};
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  options.healthy = [&healthy] { return healthy.load(); };
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);

  auto res = Get(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  healthy = true;
  res = Get(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
}

TEST(MetricsServerTest, HealthzWithoutCallbackIsOkAndUnknownPathsAre404) {
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  auto res = Get(server->port(), "/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = Get(server->port(), "/nope");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
}

TEST(MetricsServerTest, RejectsBadOptions) {
  MetricsServer::Options options;  // No registry.
  EXPECT_EQ(MetricsServer::Start(options).status().code(), absl::StatusCode::kInvalidArgument);

  prometheus::Counter* counter = nullptr;
  options.registry = NewRegistry(&counter);
  options.listen = "127.0.0.1";
  auto s = MetricsServer::Start(options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'127.0.0.1'"));

  options.listen = "127.0.0.1:0";
  options.threads = 0;
  EXPECT_EQ(MetricsServer::Start(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MetricsServerTest, PortInUseIsUnavailable) {
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  auto first = StartOrDie(options);
  ASSERT_NE(first, nullptr);
  options.listen = first->address();
  auto second = MetricsServer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(first->address()));
}

TEST(MetricsServerTest, StopClosesThePortAndIsIdempotent) {
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  ASSERT_TRUE(Get(port, "/metrics"));
  server->Stop();
  server->Stop();
  auto res = Get(port, "/metrics");
  EXPECT_FALSE(res);
  // The port is free again: a new server can bind it.
  options.listen = "127.0.0.1:" + std::to_string(port);
  auto again = StartOrDie(options);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->port(), port);
}

TEST(MetricsServerTest, StartStopRepeatedlyLeavesNoThreadsBehind) {
  // Each iteration joins its threads; a leak or a hang in Stop() would show as a timeout here.
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  for (int i = 0; i < 20; ++i) {
    auto server = StartOrDie(options);
    ASSERT_NE(server, nullptr);
  }
}

TEST(MetricsServerTest, ConcurrentScrapesWhileMetricsChange) {
  prometheus::Counter* counter = nullptr;
  MetricsServer::Options options;
  options.registry = NewRegistry(&counter);
  auto server = StartOrDie(options);
  ASSERT_NE(server, nullptr);

  std::atomic<bool> done{false};
  std::thread writer([&] {
    while (!done) counter->Increment();
  });
  std::atomic<int> ok{0};
  std::vector<std::thread> scrapers;
  for (int t = 0; t < 3; ++t) {
    scrapers.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        auto res = Get(server->port(), "/metrics");
        if (res && res->status == 200 &&
            res->body.find("swarm_test_things_total{kind=\"a\"}") != std::string::npos) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : scrapers) t.join();
  done = true;
  writer.join();
  EXPECT_EQ(ok.load(), 60);
}

TEST(SerializeRegistryTest, EmptyRegistryIsEmptyText) {
  prometheus::Registry registry;
  auto text = SerializeRegistry(registry);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "");
}

}  // namespace
}  // namespace swarm::common
