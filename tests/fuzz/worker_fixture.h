// The in-process worker of the handler fuzz targets (worker_forward_fuzz, worker_stream_fuzz): a
// real WorkerServer over stories260K's layers 0-1 on loopback, a stub to it, and session helpers.
// Header-only; created once per process and never destroyed (the fuzzer exits with it running).
#ifndef SWARM_TESTS_FUZZ_WORKER_FIXTURE_H_
#define SWARM_TESTS_FUZZ_WORKER_FIXTURE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>

#include "rpc/channel.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "worker/worker_server.h"

namespace swarm::fuzz {

struct WorkerFixture {
  std::unique_ptr<worker::WorkerServer> server;
  std::unique_ptr<v1::WorkerService::Stub> stub;

  static WorkerFixture* Get() {
    static WorkerFixture* f = Start();
    return f;
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }

  // A fresh session's id, or "" when the worker refused one.
  std::string Open() {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::OpenSessionResponse opened;
    if (!stub->OpenSession(&ctx, v1::OpenSessionRequest(), &opened).ok()) return "";
    return opened.session_id();
  }

  void Close(const std::string& session) {
    if (session.empty()) return;
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::CloseSessionRequest close;
    close.set_session_id(session);
    v1::CloseSessionResponse closed;
    (void)stub->CloseSession(&ctx, close, &closed);
  }

 private:
  static WorkerFixture* Start() {
    auto* f = new WorkerFixture();
    worker::WorkerServerOptions options;
    options.model_dir = std::string(SWARM_SHARED_DIR) + "/models/stories260K";
    options.layers = {0, 1};
    options.limits.max_sessions = 4096;
    options.max_arrival_time = absl::Seconds(5);
    auto server = worker::WorkerServer::Start(options);
    if (!server.ok() || !(*server)->Load().ok()) std::abort();  // A broken set-up.
    f->server = *std::move(server);
    f->stub = v1::WorkerService::NewStub(grpc::CreateCustomChannel(
        f->server->address(), grpc::InsecureChannelCredentials(), rpc::InternalChannelArguments()));
    return f;
  }
};

}  // namespace swarm::fuzz

#endif  // SWARM_TESTS_FUZZ_WORKER_FIXTURE_H_
