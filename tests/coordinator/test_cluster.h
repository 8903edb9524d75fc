// Shared helpers for the serving tests (worker, coordinator, client, integration): paths of the
// models and golden fixtures in ../shared, golden id sequences, and in-process servers on
// 127.0.0.1:0. Header-only so that every test binary can include it. Not thread-safe.
#ifndef SWARM_TESTS_COORDINATOR_TEST_CLUSTER_H_
#define SWARM_TESTS_COORDINATOR_TEST_CLUSTER_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "coordinator/coordinator_server.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "model/safetensors.h"
#include "worker/worker_server.h"

namespace swarm::testing {

inline const std::string kShared = SWARM_SHARED_DIR;

// Models with golden fixtures: "stories260K" (models/) or a fixtures/hf-random/ name.
inline std::string ModelDir(const std::string& name) {
  if (name == "stories260K") return kShared + "/models/stories260K";
  return kShared + "/fixtures/hf-random/" + name;
}

inline std::vector<int64_t> GoldenIds(const std::string& model, const std::string& key) {
  auto file =
      model::SafetensorsFile::Open(kShared + "/fixtures/golden/" + model + "/golden.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  auto view = (*file)->Get(key);
  EXPECT_TRUE(view.ok()) << view.status();
  if (!view.ok()) return {};
  std::vector<int64_t> ids(view->NumElements());
  std::memcpy(ids.data(), view->data, ids.size() * sizeof(int64_t));
  return ids;
}

inline std::vector<float> GoldenFloats(const std::string& model, const std::string& key) {
  auto file =
      model::SafetensorsFile::Open(kShared + "/fixtures/golden/" + model + "/golden.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return {};
  auto view = (*file)->Get(key);
  EXPECT_TRUE(view.ok()) << view.status();
  if (!view.ok()) return {};
  std::vector<float> v(view->NumElements());
  std::memcpy(v.data(), view->data, v.size() * sizeof(float));
  return v;
}

// Polls `pred` every 20 ms for up to `timeout`; whether it became true.
template <typename Pred>
bool Eventually(Pred pred, absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return pred();
}

inline std::vector<int> Range(int begin, int end) {
  std::vector<int> v;
  for (int i = begin; i < end; ++i) v.push_back(i);
  return v;
}

// A loaded worker on 127.0.0.1:0 (or `listen`).
inline std::unique_ptr<worker::WorkerServer> StartWorker(
    const std::string& model_dir, std::vector<int> layers, worker::SessionLimits limits = {},
    const std::string& listen = "127.0.0.1:0") {
  worker::WorkerServerOptions options;
  options.model_dir = model_dir;
  options.layers = std::move(layers);
  options.limits = limits;
  options.listen = listen;
  options.reap_interval = absl::Milliseconds(20);
  auto server = worker::WorkerServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  absl::Status s = (*server)->Load();
  EXPECT_TRUE(s.ok()) << s;
  return *std::move(server);
}

inline std::unique_ptr<coordinator::CoordinatorServer> StartCoordinator(
    const std::string& model_dir, const std::vector<std::string>& workers, bool wait_serving = true,
    coordinator::CoordinatorOptions options = {}) {
  options.model_dir = model_dir;
  options.workers = workers;
  options.listen = "127.0.0.1:0";
  options.min_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  auto server = coordinator::CoordinatorServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  if (wait_serving) {
    absl::Status s = (*server)->WaitUntilServing(absl::Seconds(20));
    EXPECT_TRUE(s.ok()) << s;
  }
  return *std::move(server);
}

// Workers hosting the given layer sets of `model`, and a coordinator over them.
struct Cluster {
  std::vector<std::unique_ptr<worker::WorkerServer>> workers;
  std::unique_ptr<coordinator::CoordinatorServer> coordinator;

  std::vector<std::string> addresses() const {
    std::vector<std::string> a;
    for (const auto& w : workers) a.push_back(w->address());
    return a;
  }
};

// stories260K with a chat template (it has none): DIR/ holds symlinks to the model's files and,
// as tokenizer_config.json, one to ../shared/fixtures/chat_templates/templates/TEMPLATE.json (a
// tokenizer config with chat_template, bos_token and eos_token). The directory is made afresh
// under the test's temp dir; returns its path ("" and a test failure when it cannot be made).
// RemoveOnExit removes it.
struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);  // Links, not their targets.
  }
};

inline std::string ChatModelDir(const std::string& name, const std::string& chat_template) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat("swarm-", name, "-", getpid());
  const fs::path model = ModelDir("stories260K");
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  EXPECT_FALSE(ec) << dir << ": " << ec.message();
  if (ec) return "";
  for (const char* file :
       {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}) {
    fs::create_symlink(fs::absolute(model / file), dir / file, ec);
    EXPECT_FALSE(ec) << (dir / file) << ": " << ec.message();
    if (ec) return "";
  }
  const fs::path config =
      fs::path(kShared) / "fixtures/chat_templates/templates" / (chat_template + ".json");
  fs::create_symlink(fs::absolute(config), dir / "tokenizer_config.json", ec);
  EXPECT_FALSE(ec) << config << ": " << ec.message();
  if (ec) return "";
  return dir.string();
}

inline Cluster StartCluster(const std::string& model, const std::vector<std::vector<int>>& splits,
                            worker::SessionLimits limits = {}) {
  Cluster c;
  for (const auto& layers : splits)
    c.workers.push_back(StartWorker(ModelDir(model), layers, limits));
  c.coordinator = StartCoordinator(ModelDir(model), c.addresses());
  return c;
}

// grpc.health.v1 Check of `service` ("" = the server as a whole) at `address`.
inline grpc::health::v1::HealthCheckResponse::ServingStatus Health(const std::string& address,
                                                                   const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  return resp.status();
}

// The services a server lists through gRPC server reflection (what `grpcurl list` shows), as the
// raw reply: ServerReflectionInfo called with list_services = "*", through a generic stub.
inline std::string ReflectionListServices(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok = false;
  auto step = [&](int id) {
    return cq.Next(&tag, &ok) && ok && tag == reinterpret_cast<void*>(id);
  };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return "";
  // ServerReflectionRequest{list_services: "*"}: field 7, length-delimited.
  grpc::Slice slice(std::string("\x3a\x01*", 3));
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  if (!step(2)) return "";
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  if (!step(3)) return "";
  std::vector<grpc::Slice> slices;
  response.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  ctx.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  return out;
}

// A TCP port on 127.0.0.1 that was free a moment ago (for "a worker that is down").
inline int UnusedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

}  // namespace swarm::testing

#endif  // SWARM_TESTS_COORDINATOR_TEST_CLUSTER_H_
