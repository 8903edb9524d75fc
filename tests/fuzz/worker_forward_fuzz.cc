// libFuzzer: a serialized ForwardRequest sent to a real WorkerService (stories260K layers 0-1,
// in process on loopback) through Forward, after an OpenSession whose id replaces the request's
// when the first byte says so (so that the step rules and the layers run, not only the lookup).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "absl/time/clock.h"
#include "rpc/channel.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "worker/worker_server.h"

namespace {

struct Fixture {
  std::unique_ptr<swarm::worker::WorkerServer> server;
  std::unique_ptr<swarm::v1::WorkerService::Stub> stub;
};

Fixture* Start() {
  auto* f = new Fixture();
  swarm::worker::WorkerServerOptions options;
  options.model_dir = std::string(SWARM_SHARED_DIR) + "/models/stories260K";
  options.layers = {0, 1};
  options.limits.max_sessions = 4096;
  auto server = swarm::worker::WorkerServer::Start(options);
  if (!server.ok() || !(*server)->Load().ok()) std::abort();  // A broken set-up.
  f->server = *std::move(server);
  f->stub = swarm::v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(f->server->address(), grpc::InsecureChannelCredentials(),
                                swarm::rpc::InternalChannelArguments()));
  return f;
}

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* f = Start();
  if (size == 0) return 0;
  swarm::v1::ForwardRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  std::string session;
  if (data[0] & 1) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    swarm::v1::OpenSessionRequest open;
    swarm::v1::OpenSessionResponse opened;
    if (f->stub->OpenSession(&ctx, open, &opened).ok()) session = opened.session_id();
    req.set_session_id(session);
  }
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    swarm::v1::ForwardResponse resp;
    (void)f->stub->Forward(&ctx, req, &resp);
  }
  if (!session.empty()) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    swarm::v1::CloseSessionRequest close;
    close.set_session_id(session);
    swarm::v1::CloseSessionResponse closed;
    (void)f->stub->CloseSession(&ctx, close, &closed);
  }
  return 0;
}
