// libFuzzer: a serialized GenerateRequest sent to a real CoordinatorService over a stories260K
// worker (both in process on loopback), with max_new_tokens capped at 4 so that an input costs
// milliseconds. Every reply must come back (any status) before the 10 s deadline.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "coordinator/coordinator_server.h"
#include "swarm/v1/coordinator.grpc.pb.h"
#include "worker/worker_server.h"

namespace {

struct Fixture {
  std::unique_ptr<swarm::worker::WorkerServer> worker;
  std::unique_ptr<swarm::coordinator::CoordinatorServer> coordinator;
  std::unique_ptr<swarm::v1::CoordinatorService::Stub> stub;
};

Fixture* Start() {
  auto* f = new Fixture();
  const std::string model = std::string(SWARM_SHARED_DIR) + "/models/stories260K";
  swarm::worker::WorkerServerOptions wo;
  wo.model_dir = model;
  wo.layers = {0, 1, 2, 3, 4};
  auto worker = swarm::worker::WorkerServer::Start(wo);
  if (!worker.ok() || !(*worker)->Load().ok()) std::abort();  // A broken set-up.
  f->worker = *std::move(worker);
  swarm::coordinator::CoordinatorOptions co;
  co.model_dir = model;
  co.workers = {f->worker->address()};
  auto coordinator = swarm::coordinator::CoordinatorServer::Start(co);
  if (!coordinator.ok() || !(*coordinator)->WaitUntilServing(absl::Seconds(30)).ok()) std::abort();
  f->coordinator = *std::move(coordinator);
  f->stub = swarm::v1::CoordinatorService::NewStub(
      grpc::CreateChannel(f->coordinator->address(), grpc::InsecureChannelCredentials()));
  return f;
}

Fixture* f = nullptr;

}  // namespace

// The servers start before the first input (not counted against libFuzzer's per-input timeout).
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  f = Start();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  swarm::v1::GenerateRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (!req.sampling().has_max_new_tokens() || req.sampling().max_new_tokens() > 4) {
    req.mutable_sampling()->set_max_new_tokens(4);
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto reader = f->stub->Generate(&ctx, req);
  swarm::v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  grpc::Status s = reader->Finish();
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) __builtin_trap();  // A hang.
  return 0;
}
