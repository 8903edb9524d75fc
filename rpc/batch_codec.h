// The wire side of batched steps (WorkerService.ForwardBatch / ForwardBatchStream, worker.proto):
// building the request messages from steps and one hidden-state tensor, splitting a reply into
// each step's status and rows, and the per-step status mapping (BatchStepResult's code and
// message). The worker's server and every caller (the coordinator's scheduler) use these, so the
// piece layout and the status mapping live in one place. Stateless functions are thread-safe.
#ifndef SWARM_RPC_BATCH_CODEC_H_
#define SWARM_RPC_BATCH_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"
#include "swarm/v1/worker.pb.h"

namespace swarm::rpc {

// One session's step of a batch, as a caller describes it (BatchStep on the wire).
struct BatchStepSpec {
  std::string session_id;
  uint64_t step_id = 0;
  int64_t start_position = 0;
  int64_t positions = 0;  // Rows of the batch's hidden state this step brings.
};

// One step's part of a ForwardBatch reply.
struct BatchStepReply {
  absl::Status status;  // The step's own status (BatchStepResult.code and .message).
  uint64_t step_id = 0;
  int64_t length = 0;     // Positions held by the listed layers after the step.
  bool replayed = false;  // The cached reply of a duplicated step.
  HostTensor hidden;      // [positions, hidden_size]: the step's rows; empty when it failed.
};

// The longest BatchStepResult.message a worker sends (longer messages are cut, marked "..."),
// so that a batch's reply header stays far below the message limit.
inline constexpr size_t kMaxStepMessageBytes = 512;

// The messages of one ForwardBatch call of `steps` over `layers` whose rows are `hidden`
// [sum of positions, hidden_size]: a single message when hidden's data fits one piece
// (kMaxTensorPieceBytes; send it with ForwardBatch, the tensor's bytes are moved into it), else
// the pieces of a ForwardBatchStream call, in order (the first carries every field, the others
// only hidden.data).
std::vector<v1::ForwardBatchRequest> EncodeForwardBatch(absl::Span<const BatchStepSpec> steps,
                                                        absl::Span<const int> layers,
                                                        HostTensor hidden);

// A streamed reply is reassembled with PieceAssembler<v1::ForwardBatchResponse>
// (rpc/tensor_codec.h): its header() carries `results`, TakeHidden() the rows.

// Splits a ForwardBatch reply answering `steps` — its `results` and its complete hidden state
// `hidden` (from a unary reply's hidden, or a PieceAssembler) — into one reply per step, in order.
// Internal when the reply does not answer the request: not one result per step, a step id that
// differs, hidden not [sum of positions, hidden_size] in `dtype` (hidden_size and dtype as sent).
absl::StatusOr<std::vector<BatchStepReply>> SplitForwardBatchResponse(
    absl::Span<const BatchStepSpec> steps, const v1::ForwardBatchResponse& results,
    const HostTensor& hidden, int64_t hidden_size, DType dtype);

// A step's status on the wire: code (google.rpc.Code, the numbers absl uses) and message, cut to
// kMaxStepMessageBytes.
void StepStatusToProto(const absl::Status& status, v1::BatchStepResult* out);
// Back: a code outside 0..16 is UNKNOWN.
absl::Status StepStatusFromProto(const v1::BatchStepResult& result);

}  // namespace swarm::rpc

#endif  // SWARM_RPC_BATCH_CODEC_H_
