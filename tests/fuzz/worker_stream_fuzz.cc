// libFuzzer: the worker's other Forward handlers with serialized requests in, on a real
// WorkerService (tests/fuzz/worker_fixture.h). Byte 0's low bit opens a fresh session whose id
// replaces the request's (every step's, for a batch); byte 1 picks the call, ForwardStream (0, 3),
// ForwardBatch (1) or ForwardBatchStream (2), and in its high bits how the streamed ones cut the
// hidden state into pieces: the first piece carries every field and the first bytes, the others
// only bytes (the worker must neither care where the cuts are nor hold a stream that ends early).
// The rest is a ForwardRequest (ForwardStream) or a ForwardBatchRequest.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/worker_fixture.h"

namespace {

using swarm::fuzz::WorkerFixture;

// Writes `req` as pieces of `cut` bytes of hidden.data (the whole when 0), half-closes, reads
// every reply.
template <typename Request, typename Response, typename Stream>
void SendPieces(Stream* stream, Request req, size_t cut) {
  std::string data;
  data.swap(*req.mutable_hidden()->mutable_data());
  if (cut == 0 || cut > data.size()) cut = data.size();
  req.mutable_hidden()->set_data(data.substr(0, cut));
  bool ok = stream->Write(req);
  for (size_t off = cut; ok && off < data.size(); off += cut) {
    Request piece;
    piece.mutable_hidden()->set_data(data.substr(off, cut));
    ok = stream->Write(piece);
  }
  stream->WritesDone();
  Response resp;
  while (stream->Read(&resp)) {
  }
  (void)stream->Finish();
}

}  // namespace

// The worker starts before the first input (not counted against libFuzzer's per-input timeout).
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  swarm::fuzz::WorkerFixture::Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  WorkerFixture* f = WorkerFixture::Get();
  if (size < 2) return 0;
  const int call = data[1] & 3;
  // 0: one piece; else 1..63 times 61 bytes (a prime, so cuts fall inside values too).
  const size_t cut = static_cast<size_t>(data[1] >> 2) * 61;
  const void* body = data + 2;
  const int body_size = static_cast<int>(size - 2);
  std::string session;
  grpc::ClientContext ctx;
  WorkerFixture::SetDeadline(&ctx);
  if (call == 1 || call == 2) {
    swarm::v1::ForwardBatchRequest req;
    if (!req.ParseFromArray(body, body_size)) return 0;
    if (data[0] & 1) {
      session = f->Open();
      for (swarm::v1::BatchStep& s : *req.mutable_steps()) s.set_session_id(session);
    }
    if (call == 1) {
      swarm::v1::ForwardBatchResponse resp;
      (void)f->stub->ForwardBatch(&ctx, req, &resp);
    } else {
      auto stream = f->stub->ForwardBatchStream(&ctx);
      SendPieces<swarm::v1::ForwardBatchRequest, swarm::v1::ForwardBatchResponse>(
          stream.get(), std::move(req), cut);
    }
  } else {
    swarm::v1::ForwardRequest req;
    if (!req.ParseFromArray(body, body_size)) return 0;
    if (data[0] & 1) {
      session = f->Open();
      req.set_session_id(session);
    }
    auto stream = f->stub->ForwardStream(&ctx);
    SendPieces<swarm::v1::ForwardRequest, swarm::v1::ForwardResponse>(stream.get(), std::move(req),
                                                                      cut);
  }
  f->Close(session);
  return 0;
}
