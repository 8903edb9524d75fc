// libFuzzer: a serialized ForwardRequest sent to a real WorkerService (tests/fuzz/worker_fixture.h)
// through Forward, after an OpenSession whose id replaces the request's when the first byte says
// so (so that the step rules and the layers run, not only the lookup).
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/worker_fixture.h"

// The worker starts before the first input (not counted against libFuzzer's per-input timeout).
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  swarm::fuzz::WorkerFixture::Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  swarm::fuzz::WorkerFixture* f = swarm::fuzz::WorkerFixture::Get();
  if (size == 0) return 0;
  swarm::v1::ForwardRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  std::string session;
  if (data[0] & 1) {
    session = f->Open();
    req.set_session_id(session);
  }
  {
    grpc::ClientContext ctx;
    swarm::fuzz::WorkerFixture::SetDeadline(&ctx);
    swarm::v1::ForwardResponse resp;
    (void)f->stub->Forward(&ctx, req, &resp);
  }
  f->Close(session);
  return 0;
}
