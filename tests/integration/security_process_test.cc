// A cluster safe on a shared network, as its processes run it: mutual TLS between coordinator and
// workers with throwaway CAs made by openssl (a fake worker with another CA's certificate is never
// routed to and `swarm status` says why; a caller without the CA's certificate never reaches a
// worker's Forward; the right certificates serve the golden ids), client tokens (none, wrong,
// valid: UNAUTHENTICATED, UNAUTHENTICATED, OK), and plaintext off loopback refused without
// --insecure; a server that keeps accepting after descriptors ran short.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "client/client.h"
#include "common/host_port.h"
#include "rpc/channel.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"
#include "tests/util/skip.h"
#include "tests/util/test_ca.h"

namespace swarm::testing {
namespace {

using test_util::CertFiles;
using test_util::TestCa;

std::vector<std::string> TlsArgs(const CertFiles& files, const std::string& ca) {
  return {"--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", ca};
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// One Forward to a worker over a channel with `tls`: the status code.
grpc::StatusCode ForwardCode(const std::string& address, const rpc::TlsFiles& tls) {
  auto creds = rpc::MakeChannelCredentials(tls);
  if (!creds.ok()) return grpc::StatusCode::INTERNAL;
  auto stub = v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(address, *creds, rpc::InternalChannelArguments()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ForwardRequest req;
  req.set_session_id("none");
  req.add_layers(0);
  v1::ForwardResponse resp;
  return stub->Forward(&ctx, req, &resp).error_code();
}

TEST(SecurityProcessTest, MutualTlsRoutesOnlyToWorkersWithTheCasCertificate) {
  if (!test_util::HaveOpenssl()) SWARM_SKIP_OR_FAIL("openssl is not installed (scripts/setup.sh)");
  ScratchDir scratch("mtls");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  TestCa ca("swarm-ca");
  TestCa rogue("rogue-ca");
  ASSERT_TRUE(ca.ok() && rogue.ok());
  const CertFiles worker_files = ca.Issue("worker-0", "worker");
  const CertFiles coordinator_files = ca.Issue("coordinator", "coordinator");
  const CertFiles client_files = ca.Issue("client", "client");
  const CertFiles fake_files = rogue.Issue("worker-1", "fake");
  ASSERT_FALSE(worker_files.cert.empty() || coordinator_files.cert.empty() ||
               client_files.cert.empty() || fake_files.cert.empty());

  Process worker(Concat({kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen",
                         "127.0.0.1:0"},
                        TlsArgs(worker_files, ca.ca_path())),
                 dir + "/w.log");
  // The fake worker copied the model (and its fingerprint) but holds another CA's certificate.
  Process fake(Concat({kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen",
                       "127.0.0.1:0"},
                      TlsArgs(fake_files, rogue.ca_path())),
               dir + "/fake.log");
  const std::string worker_address = worker.WaitForLine("listening on ");
  const std::string fake_address = fake.WaitForLine("listening on ");
  ASSERT_FALSE(worker_address.empty() || fake_address.empty()) << worker.Log() << fake.Log();
  Process coordinator(Concat({kBin + "/swarm-coordinator", "--model", model, "--workers",
                              fake_address + "," + worker_address, "--listen", "127.0.0.1:0"},
                             TlsArgs(coordinator_files, ca.ca_path())),
                      dir + "/c.log");
  const std::string address = coordinator.WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << coordinator.Log();

  ClientOptions options;
  options.tls_ca_file = ca.ca_path();
  options.tls_cert_file = client_files.cert;
  options.tls_key_file = client_files.key;
  auto client = Client::Connect(address, options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->WaitUntilServing(absl::Seconds(60)).ok()) << coordinator.Log();
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  for (int i = 0; i < 3; ++i) {  // The planner would alternate between two usable workers.
    auto r = (*client)->Generate(req);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->ids, GoldenIds("stories260K", "prompt.greedy"));
  }
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_EQ(status->workers.size(), 2u);
  EXPECT_FALSE(status->workers[0].reachable);
  EXPECT_EQ(status->workers[0].steps_total, 0u);
  EXPECT_TRUE(absl::StrContains(status->workers[0].error, "TLS")) << status->workers[0].error;
  EXPECT_TRUE(status->workers[1].reachable);
  EXPECT_GT(status->workers[1].steps_total, 0u);

  // `swarm status` says why the fake is not used.
  CommandResult cli =
      RunCommand({kBin + "/swarm", "status", "--server", address, "--tls-ca", ca.ca_path(),
                  "--tls-cert", client_files.cert, "--tls-key", client_files.key},
                 dir + "/status.log");
  EXPECT_EQ(cli.exit_code, 0) << ReadFile(dir + "/status.log");
  EXPECT_TRUE(absl::StrContains(cli.out, fake_address)) << cli.out;
  EXPECT_TRUE(absl::StrContains(cli.out, "TLS")) << cli.out;

  // Callers without a certificate from the CA: plaintext, TLS without a certificate, another
  // CA's certificate. None reaches Forward; the CA's own certificate does (and is told the
  // session does not exist).
  EXPECT_EQ(ForwardCode(worker_address, {}), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ForwardCode(worker_address, {"", "", ca.ca_path()}), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ForwardCode(worker_address, {fake_files.cert, fake_files.key, ca.ca_path()}),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(ForwardCode(worker_address, {client_files.cert, client_files.key, ca.ca_path()}),
            grpc::StatusCode::UNAVAILABLE);
  // A client without a certificate cannot reach this coordinator (no tokens: certificates are
  // its clients' credentials).
  ClientOptions no_cert;
  no_cert.tls_ca_file = ca.ca_path();
  auto anonymous = Client::Connect(address, no_cert);
  ASSERT_TRUE(anonymous.ok());
  EXPECT_FALSE((*anonymous)->Status(absl::Seconds(10)).ok());
}

TEST(SecurityProcessTest, TokensGuardTheCoordinator) {
  ScratchDir scratch("tokens");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  {
    std::ofstream tokens(dir + "/tokens");
    tokens << "# name:token\nalice:alice-0123456789abcdef\nbob:bob-0123456789abcdef0\n";
  }
  {
    std::ofstream token(dir + "/alice");
    token << "alice-0123456789abcdef\n";
  }
  Process worker(
      {kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen", "127.0.0.1:0"},
      dir + "/w.log");
  const std::string worker_address = worker.WaitForLine("listening on ");
  ASSERT_FALSE(worker_address.empty()) << worker.Log();
  Process coordinator({kBin + "/swarm-coordinator", "--model", model, "--workers", worker_address,
                       "--listen", "127.0.0.1:0", "--auth-tokens", dir + "/tokens"},
                      dir + "/c.log");
  const std::string address = coordinator.WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << coordinator.Log();

  ClientOptions alice;
  alice.token_file = dir + "/alice";
  auto client = Client::Connect(address, alice);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->WaitUntilServing(absl::Seconds(60)).ok()) << coordinator.Log();
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;

  ClientOptions none;
  ClientOptions wrong;
  wrong.token = "alice-0123456789abcdeX";
  for (const ClientOptions& o : {none, wrong}) {
    auto c = Client::Connect(address, o);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ((*c)->Generate(req).status().code(), absl::StatusCode::kUnauthenticated);
    // Nothing beyond health: no workers, no file paths.
    EXPECT_EQ((*c)->Status().status().code(), absl::StatusCode::kUnauthenticated);
  }
  auto r = (*client)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, GoldenIds("stories260K", "prompt.greedy"));

  // The CLI: --token-file, and no token at all.
  CommandResult ok =
      RunCommand({kBin + "/swarm", "status", "--server", address, "--token-file", dir + "/alice"},
                 dir + "/ok.log");
  EXPECT_EQ(ok.exit_code, 0) << ReadFile(dir + "/ok.log");
  CommandResult refused =
      RunCommand({kBin + "/swarm", "status", "--server", address}, dir + "/refused.log");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ReadFile(dir + "/refused.log"), "token"))
      << ReadFile(dir + "/refused.log");
}

TEST(SecurityProcessTest, PlaintextOffLoopbackNeedsInsecure) {
  ScratchDir scratch("insecure");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  CommandResult refused = RunCommand(
      {kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen", "0.0.0.0:0"},
      dir + "/refused.log");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(ReadFile(dir + "/refused.log"), "--insecure"))
      << ReadFile(dir + "/refused.log");
  Process worker({kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen",
                  "0.0.0.0:0", "--insecure"},
                 dir + "/w.log");
  EXPECT_FALSE(worker.WaitForLine("listening on ").empty()) << worker.Log();
  EXPECT_TRUE(absl::StrContains(worker.Log(), "WARNING: --insecure")) << worker.Log();
}

// 600 idle sockets against a worker started with a soft descriptor limit of 128: gRPC 1.51's
// listener would stop accepting for good after its first EMFILE; the worker raised its soft limit
// to the hard one at start-up (common/fd_limit.h), keeps answering while they are open, and
// after they close.
TEST(SecurityProcessTest, SurvivesDescriptorExhaustion) {
  if (std::system("prlimit --version >/dev/null 2>&1") != 0) {
    SWARM_SKIP_OR_FAIL("prlimit (util-linux) is not installed");
  }
  ScratchDir scratch("fds");
  const std::string& dir = scratch.path();
  Process worker({"prlimit", "--nofile=128:8192", kBin + "/swarm-worker", "--model",
                  ModelDir("stories260K"), "--layers", "0-4", "--listen", "127.0.0.1:0"},
                 dir + "/w.log");
  const std::string address = worker.WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << worker.Log();
  EXPECT_TRUE(absl::StrContains(worker.Log(), "open-file limit raised from 128 to 8192"))
      << worker.Log();
  auto hp = ParseHostPort(address);
  ASSERT_TRUE(hp.ok());
  auto info_ok = [&] {
    auto stub = v1::WorkerService::NewStub(grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), rpc::InternalChannelArguments()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::InfoResponse info;
    return stub->Info(&ctx, v1::InfoRequest(), &info).ok();
  };
  ASSERT_TRUE(info_ok());
  std::vector<int> sockets;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(hp->port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  for (int i = 0; i < 600; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    sockets.push_back(fd);
  }
  EXPECT_TRUE(info_ok()) << worker.Log().substr(0, 2000);
  for (int fd : sockets) close(fd);
  EXPECT_TRUE(info_ok()) << worker.Log().substr(0, 2000);
}

}  // namespace
}  // namespace swarm::testing
