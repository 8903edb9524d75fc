// rpc/batch_codec.h and the piece helpers of rpc/tensor_codec.h: a batch's request in one message
// or in pieces that reassemble to the same message, a reply split per step, every mismatch between
// a reply and its request an error, and the per-step status mapping.
#include "rpc/batch_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rpc/channel.h"
#include "rpc/tensor_codec.h"

namespace swarm::rpc {
namespace {

HostTensor Counting(int64_t rows, int64_t width) {
  std::vector<float> v(rows * width);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 1000);
  return HostTensor::FromFloats({rows, width}, v);
}

std::vector<BatchStepSpec> TwoSteps(int64_t a, int64_t b) {
  return {{"s1", 7, 0, a}, {"s2", 3, 5, b}};
}

TEST(BatchCodecTest, SmallBatchIsOneMessage) {
  const HostTensor h = Counting(3, 4);
  std::vector<v1::ForwardBatchRequest> m = EncodeForwardBatch(TwoSteps(2, 1), {1, 2}, h);
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].steps_size(), 2);
  EXPECT_EQ(m[0].steps(0).session_id(), "s1");
  EXPECT_EQ(m[0].steps(0).step_id(), 7u);
  EXPECT_EQ(m[0].steps(1).start_position(), 5);
  EXPECT_EQ(m[0].steps(1).positions(), 1);
  EXPECT_EQ(std::vector<int>(m[0].layers().begin(), m[0].layers().end()), (std::vector<int>{1, 2}));
  auto back = MoveTensorFromProto(m[0].mutable_hidden(), 2, "hidden");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->data, h.data);
}

TEST(BatchCodecTest, LargeBatchIsPiecesThatReassemble) {
  const int64_t width = 1024;  // 4 KiB a row: 2000 rows are 7.8 MiB, three pieces.
  const HostTensor h = Counting(2000, width);
  std::vector<v1::ForwardBatchRequest> m = EncodeForwardBatch(TwoSteps(1500, 500), {0}, h);
  ASSERT_EQ(m.size(), PieceCount(h));
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].steps_size(), 2);
  for (size_t i = 1; i < m.size(); ++i) {
    EXPECT_EQ(m[i].steps_size(), 0) << i;  // Later pieces carry only bytes.
    EXPECT_EQ(m[i].hidden().shape_size(), 0) << i;
  }
  PieceAssembler<v1::ForwardBatchRequest> assembler(int64_t{64} << 20, "hidden");
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_LE(m[i].hidden().data().size(), kMaxTensorPieceBytes);
    EXPECT_LT(m[i].ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
    EXPECT_FALSE(assembler.complete());
    ASSERT_TRUE(assembler.Add(&m[i]).ok()) << i;
  }
  ASSERT_TRUE(assembler.complete());
  EXPECT_EQ(assembler.header().steps(1).session_id(), "s2");
  EXPECT_EQ(assembler.header().layers_size(), 1);
  HostTensor back = assembler.TakeHidden();
  EXPECT_EQ(back.shape, h.shape);
  EXPECT_EQ(back.data, h.data);

  // The assembler's bound is on the declared size, before any byte is kept.
  std::vector<v1::ForwardBatchRequest> again = EncodeForwardBatch(TwoSteps(1500, 500), {0}, h);
  PieceAssembler<v1::ForwardBatchRequest> small(1 << 20, "hidden");
  EXPECT_EQ(small.Add(&again[0]).code(), absl::StatusCode::kInvalidArgument);
}

TEST(BatchCodecTest, FillPieceServesEveryForwardMessage) {
  const HostTensor h = Counting(1, 4);
  v1::ForwardResponse header;
  header.set_step_id(9);
  header.set_length(4);
  EXPECT_EQ(PieceCount(h), 1u);
  EXPECT_EQ(PieceCount(HostTensor()), 1u);
  v1::ForwardResponse piece;
  FillPiece(header, h, 0, &piece);
  EXPECT_EQ(piece.step_id(), 9u);
  EXPECT_EQ(piece.hidden().data(), h.data);
  EXPECT_EQ(piece.hidden().shape_size(), 2);
}

v1::ForwardBatchResponse Results(std::vector<std::pair<uint64_t, absl::Status>> steps) {
  v1::ForwardBatchResponse r;
  for (auto& [id, status] : steps) {
    v1::BatchStepResult* s = r.add_results();
    StepStatusToProto(status, s);
    s->set_step_id(id);
    s->set_length(status.ok() ? 10 : 0);
  }
  return r;
}

TEST(BatchCodecTest, ReplySplitsIntoEachStepsRows) {
  const HostTensor h = Counting(3, 4);
  const std::vector<BatchStepSpec> steps = TwoSteps(2, 1);
  v1::ForwardBatchResponse r =
      Results({{7, absl::OkStatus()}, {3, absl::FailedPreconditionError("wrong position")}});
  r.mutable_results(0)->set_replayed(true);
  auto replies = SplitForwardBatchResponse(steps, r, h, 4, DType::kF32);
  ASSERT_TRUE(replies.ok()) << replies.status();
  ASSERT_EQ(replies->size(), 2u);
  EXPECT_TRUE((*replies)[0].status.ok());
  EXPECT_TRUE((*replies)[0].replayed);
  EXPECT_EQ((*replies)[0].length, 10);
  EXPECT_EQ((*replies)[0].hidden.shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ((*replies)[0].hidden.ToFloats(), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ((*replies)[1].status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*replies)[1].status.message(), "wrong position");
  EXPECT_TRUE((*replies)[1].hidden.data.empty());
}

TEST(BatchCodecTest, ReplyThatDoesNotAnswerTheRequestIsInternal) {
  const HostTensor h = Counting(3, 4);
  const std::vector<BatchStepSpec> steps = TwoSteps(2, 1);
  const v1::ForwardBatchResponse ok = Results({{7, absl::OkStatus()}, {3, absl::OkStatus()}});
  EXPECT_TRUE(SplitForwardBatchResponse(steps, ok, h, 4, DType::kF32).ok());
  // One result missing; a step id that differs.
  EXPECT_EQ(SplitForwardBatchResponse(steps, Results({{7, absl::OkStatus()}}), h, 4, DType::kF32)
                .status()
                .code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SplitForwardBatchResponse(
                steps, Results({{7, absl::OkStatus()}, {4, absl::OkStatus()}}), h, 4, DType::kF32)
                .status()
                .code(),
            absl::StatusCode::kInternal);
  // Rows, width or dtype other than sent.
  EXPECT_EQ(SplitForwardBatchResponse(steps, ok, Counting(2, 4), 4, DType::kF32).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SplitForwardBatchResponse(steps, ok, h, 5, DType::kF32).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(SplitForwardBatchResponse(steps, ok, h, 4, DType::kBF16).status().code(),
            absl::StatusCode::kInternal);
  HostTensor truncated = h;
  truncated.data.pop_back();
  EXPECT_EQ(SplitForwardBatchResponse(steps, ok, truncated, 4, DType::kF32).status().code(),
            absl::StatusCode::kInternal);
}

TEST(BatchCodecTest, StepStatusesSurviveTheWireAndLongMessagesAreCut) {
  for (int c = 0; c <= 16; ++c) {
    const absl::Status s(static_cast<absl::StatusCode>(c), c == 0 ? "" : "msg");
    v1::BatchStepResult r;
    StepStatusToProto(s, &r);
    EXPECT_EQ(r.code(), c);
    EXPECT_EQ(StepStatusFromProto(r), s);
  }
  v1::BatchStepResult odd;
  odd.set_code(99);
  odd.set_message("?");
  EXPECT_EQ(StepStatusFromProto(odd).code(), absl::StatusCode::kUnknown);

  // A long message is cut to the limit, at a UTF-8 character boundary.
  std::string text;
  while (text.size() < 2 * kMaxStepMessageBytes) text += "é";  // Two bytes each.
  v1::BatchStepResult cut;
  StepStatusToProto(absl::NotFoundError(text), &cut);
  EXPECT_LE(cut.message().size(), kMaxStepMessageBytes);
  EXPECT_GE(cut.message().size(), kMaxStepMessageBytes - 4);
  EXPECT_EQ(cut.message().substr(cut.message().size() - 3), "...");
  const std::string kept = cut.message().substr(0, cut.message().size() - 3);
  EXPECT_EQ(kept.size() % 2, 0u);
  EXPECT_EQ(kept, text.substr(0, kept.size()));
}

}  // namespace
}  // namespace swarm::rpc
