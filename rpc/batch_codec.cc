#include "rpc/batch_codec.h"

#include <grpcpp/support/status.h>

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tensor_rows.h"
#include "rpc/channel.h"
#include "rpc/status.h"
#include "rpc/tensor_codec.h"

namespace swarm::rpc {

std::vector<v1::ForwardBatchRequest> EncodeForwardBatch(absl::Span<const BatchStepSpec> steps,
                                                        absl::Span<const int> layers,
                                                        HostTensor hidden) {
  v1::ForwardBatchRequest header;
  for (const BatchStepSpec& spec : steps) {
    v1::BatchStep* step = header.add_steps();
    step->set_session_id(spec.session_id);
    step->set_step_id(spec.step_id);
    step->set_start_position(spec.start_position);
    step->set_positions(spec.positions);
  }
  header.mutable_layers()->Assign(layers.begin(), layers.end());
  std::vector<v1::ForwardBatchRequest> messages;
  if (hidden.data.size() <= kMaxTensorPieceBytes) {
    MoveTensorToProto(std::move(hidden), header.mutable_hidden());
    messages.push_back(std::move(header));
    return messages;
  }
  const size_t pieces = PieceCount(hidden);
  messages.resize(pieces);
  for (size_t i = 0; i < pieces; ++i) FillPiece(header, hidden, i, &messages[i]);
  return messages;
}

absl::StatusOr<std::vector<BatchStepReply>> SplitForwardBatchResponse(
    absl::Span<const BatchStepSpec> steps, const v1::ForwardBatchResponse& results,
    const HostTensor& hidden, int64_t hidden_size, DType dtype) {
  if (results.results_size() != static_cast<int>(steps.size())) {
    return absl::InternalError(absl::StrCat("the reply has ", results.results_size(),
                                            " step results for ", steps.size(), " steps"));
  }
  int64_t rows = 0;
  for (const BatchStepSpec& spec : steps) rows += spec.positions;
  if (hidden.shape != std::vector<int64_t>{rows, hidden_size} || hidden.dtype != dtype) {
    return absl::InternalError(absl::StrCat(
        "the reply's hidden state is [", absl::StrJoin(hidden.shape, ","), "] ",
        DTypeName(hidden.dtype), " for [", rows, ",", hidden_size, "] ", DTypeName(dtype)));
  }
  if (absl::Status s = hidden.Validate(); !s.ok()) {
    return absl::InternalError(absl::StrCat("the reply's hidden state: ", s.message()));
  }
  std::vector<BatchStepReply> replies(steps.size());
  int64_t row = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const v1::BatchStepResult& r = results.results(static_cast<int>(i));
    if (r.step_id() != steps[i].step_id) {
      return absl::InternalError(absl::StrCat("the reply's result ", i, " is for step ",
                                              r.step_id(), ", not ", steps[i].step_id));
    }
    BatchStepReply& reply = replies[i];
    reply.status = StepStatusFromProto(r);
    reply.step_id = r.step_id();
    reply.length = r.length();
    reply.replayed = r.replayed();
    if (reply.status.ok()) {
      absl::StatusOr<HostTensor> part = SliceRows(hidden, row, steps[i].positions);
      if (!part.ok()) return absl::InternalError(part.status().message());
      reply.hidden = *std::move(part);
    }
    row += steps[i].positions;
  }
  return replies;
}

void StepStatusToProto(const absl::Status& status, v1::BatchStepResult* out) {
  out->set_code(static_cast<int32_t>(status.code()));
  if (status.ok()) {
    out->clear_message();
    return;
  }
  absl::string_view message = status.message();
  if (message.size() <= kMaxStepMessageBytes) {
    out->set_message(std::string(message));
  } else {
    // Cut at a character boundary: a proto3 string must stay valid UTF-8.
    size_t cut = kMaxStepMessageBytes - 3;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
    out->set_message(absl::StrCat(message.substr(0, cut), "..."));
  }
}

absl::Status StepStatusFromProto(const v1::BatchStepResult& result) {
  // The same mapping as a call's status (rpc/status.h), codes outside 0..16 included: the number
  // comes off the wire, so it is mapped before it becomes an enum (UBSan: 99 is no StatusCode).
  const absl::StatusCode code = CanonicalCode(result.code());
  if (code == absl::StatusCode::kOk) return absl::OkStatus();
  return absl::Status(code, result.message());
}

}  // namespace swarm::rpc
