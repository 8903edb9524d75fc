// Transport security of rpc/: mutual TLS through StartServer and MakeChannelCredentials with
// throwaway CAs made by openssl (a plaintext client and a client with another CA's certificate
// cannot call; certificates are reloaded when their files change), and the rule that plaintext
// off loopback needs --insecure.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "tests/util/skip.h"
#include "tests/util/test_ca.h"

namespace swarm::rpc {
namespace {

using test_util::CertFiles;
using test_util::TestCa;

// One health Check over a fresh channel with `tls`; the status, and the server's common name.
grpc::Status Check(const std::string& address, const TlsFiles& tls,
                   std::string* peer_cn = nullptr) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = MakeChannelCredentials(tls);
  if (!creds.ok())
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(creds.status().message()));
  grpc::ChannelArguments args = InternalChannelArguments();
  // A fresh connection each time (no subchannel sharing), so a rotated certificate is seen.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateCustomChannel(address, *creds, args));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (peer_cn != nullptr && ctx.auth_context() != nullptr) {
    auto cn = ctx.auth_context()->FindPropertyValues("x509_common_name");
    peer_cn->assign(cn.empty() ? "" : std::string(cn[0].data(), cn[0].size()));
  }
  return s;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test_util::HaveOpenssl())
      SWARM_SKIP_OR_FAIL("openssl is not installed (scripts/setup.sh)");
    ca_ = std::make_unique<TestCa>("ca-one");
    other_ca_ = std::make_unique<TestCa>("ca-two");
    ASSERT_TRUE(ca_->ok() && other_ca_->ok()) << "openssl could not make the test CAs";
    server_files_ = ca_->Issue("worker-a", "server");
    client_files_ = ca_->Issue("coordinator", "client");
    stranger_files_ = other_ca_->Issue("coordinator", "stranger");
    ASSERT_FALSE(server_files_.cert.empty() || client_files_.cert.empty() ||
                 stranger_files_.cert.empty());
  }

  // A server on 127.0.0.1:0 with the CA's server certificate.
  StartedServer Serve(bool require_client_certs = true,
                      absl::Duration refresh = absl::Seconds(60)) {
    ServerSecurity security;
    security.tls = {server_files_.cert, server_files_.key, ca_->ca_path(), refresh};
    security.require_client_certs = require_client_certs;
    absl::StatusOr<StartedServer> started = StartServer("127.0.0.1:0", {}, {}, security);
    EXPECT_TRUE(started.ok()) << started.status();
    return started.ok() ? *std::move(started) : StartedServer{};
  }

  TlsFiles Client() const { return {client_files_.cert, client_files_.key, ca_->ca_path()}; }

  std::unique_ptr<TestCa> ca_, other_ca_;
  CertFiles server_files_, client_files_, stranger_files_;
};

TEST_F(TlsTest, OnlyAClientWithACertificateFromTheCaGetsIn) {
  StartedServer server = Serve();
  ASSERT_NE(server.server, nullptr);
  std::string cn;
  grpc::Status ok = Check(server.address, Client(), &cn);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(cn, "worker-a");
  // Plaintext: the handshake never completes.
  EXPECT_EQ(Check(server.address, TlsFiles{}).error_code(), grpc::StatusCode::UNAVAILABLE);
  // TLS without a client certificate.
  EXPECT_EQ(Check(server.address, TlsFiles{"", "", ca_->ca_path()}).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A certificate from another CA (trusting the right one).
  EXPECT_EQ(Check(server.address, {stranger_files_.cert, stranger_files_.key, ca_->ca_path()})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A client that trusts only the other CA refuses the server.
  EXPECT_EQ(Check(server.address, {client_files_.cert, client_files_.key, other_ca_->ca_path()})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  server.server->Shutdown(absl::ToChronoTime(absl::Now()));
}

TEST_F(TlsTest, OptionalClientCertificatesAreStillVerified) {
  StartedServer server = Serve(/*require_client_certs=*/false);
  ASSERT_NE(server.server, nullptr);
  EXPECT_TRUE(Check(server.address, TlsFiles{"", "", ca_->ca_path()}).ok());
  EXPECT_TRUE(Check(server.address, Client()).ok());
  EXPECT_EQ(Check(server.address, {stranger_files_.cert, stranger_files_.key, ca_->ca_path()})
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check(server.address, TlsFiles{}).error_code(), grpc::StatusCode::UNAVAILABLE);
  server.server->Shutdown(absl::ToChronoTime(absl::Now()));
}

TEST_F(TlsTest, ARotatedCertificateIsPickedUpWithoutARestart) {
  StartedServer server = Serve(/*require_client_certs=*/true, absl::Seconds(1));
  ASSERT_NE(server.server, nullptr);
  std::string cn;
  ASSERT_TRUE(Check(server.address, Client(), &cn).ok());
  EXPECT_EQ(cn, "worker-a");
  // What cert-manager does: a new key and certificate replace the files (renamed into place).
  CertFiles next = ca_->Issue("worker-a-rotated", "next");
  ASSERT_FALSE(next.cert.empty());
  ASSERT_EQ(std::rename(next.key.c_str(), server_files_.key.c_str()), 0);
  ASSERT_EQ(std::rename(next.cert.c_str(), server_files_.cert.c_str()), 0);
  // The file watcher re-reads every second; new connections then see the new certificate.
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while (cn != "worker-a-rotated" && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_TRUE(Check(server.address, Client(), &cn).ok());
  }
  EXPECT_EQ(cn, "worker-a-rotated");
  server.server->Shutdown(absl::ToChronoTime(absl::Now()));
}

TEST_F(TlsTest, BadTlsFilesAreRefusedBeforeListening) {
  ServerSecurity security;
  security.tls = {server_files_.cert, "", ca_->ca_path()};
  EXPECT_EQ(StartServer("127.0.0.1:0", {}, {}, security).status().code(),
            absl::StatusCode::kInvalidArgument);
  security.tls = {"", "", ca_->ca_path()};  // A server needs its own identity.
  EXPECT_EQ(StartServer("127.0.0.1:0", {}, {}, security).status().code(),
            absl::StatusCode::kInvalidArgument);
  security.tls = {server_files_.key, server_files_.key, ca_->ca_path()};  // A key as certificate.
  absl::Status s = StartServer("127.0.0.1:0", {}, {}, security).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls-cert")) << s;
  security.tls = {server_files_.cert, server_files_.key, ca_->dir() + "/missing.pem"};
  s = StartServer("127.0.0.1:0", {}, {}, security).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "--tls-ca")) << s;
  EXPECT_EQ(MakeChannelCredentials({"", "", ca_->dir() + "/missing.pem"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(InsecureTest, PlaintextOffLoopbackNeedsInsecure) {
  absl::Status refused = StartServer("0.0.0.0:0", {}, {}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.message(), "--insecure")) << refused;
  ServerSecurity security;
  security.insecure = true;
  absl::StatusOr<StartedServer> started = StartServer("0.0.0.0:0", {}, {}, security);
  ASSERT_TRUE(started.ok()) << started.status();
  started->server->Shutdown(absl::ToChronoTime(absl::Now()));
  // Loopback stays as simple as before.
  started = StartServer("127.0.0.1:0", {}, {});
  ASSERT_TRUE(started.ok()) << started.status();
  started->server->Shutdown(absl::ToChronoTime(absl::Now()));
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost(""));
}

}  // namespace
}  // namespace swarm::rpc
