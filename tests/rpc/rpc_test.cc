// The wire helpers of rpc/: the tensor codec and the status mapping.
#include <gtest/gtest.h>

#include "rpc/status.h"
#include "rpc/tensor_codec.h"

namespace swarm::rpc {
namespace {

TEST(TensorUtilTest, MovesBytesBothWaysAndChecksThem) {
  auto t = HostTensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  const std::string bytes = t.data;
  v1::Tensor p;
  MoveTensorToProto(std::move(t), &p);
  EXPECT_EQ(p.data(), bytes);
  EXPECT_EQ(p.dtype(), v1::DTYPE_F32);
  auto back = MoveTensorFromProto(&p, 2, "x");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->data, bytes);
  EXPECT_TRUE(p.data().empty());

  v1::Tensor bad;
  bad.set_dtype(v1::DTYPE_F32);
  bad.add_shape(2);
  bad.add_shape(3);
  bad.set_data(std::string(23, '\0'));
  EXPECT_EQ(MoveTensorFromProto(&bad, 2, "x").status().code(), absl::StatusCode::kInvalidArgument);
  bad.set_data(std::string(24, '\0'));
  EXPECT_EQ(MoveTensorFromProto(&bad, 3, "x").status().code(), absl::StatusCode::kInvalidArgument);
  bad.set_shape(0, -2);
  EXPECT_EQ(MoveTensorFromProto(&bad, 2, "x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TensorUtilTest, AssemblerBoundsTheTotal) {
  v1::Tensor first;
  first.set_dtype(v1::DTYPE_F16);
  first.add_shape(4);
  first.add_shape(4);
  first.set_data(std::string(10, 'a'));
  TensorAssembler a;
  ASSERT_TRUE(a.Begin(&first, 2, 1 << 20, "h").ok());
  EXPECT_FALSE(a.complete());
  std::string piece(22, 'b');
  ASSERT_TRUE(a.Append(&piece).ok());
  EXPECT_TRUE(a.complete());
  std::string extra(1, 'c');
  EXPECT_FALSE(a.Append(&extra).ok());
  TensorAssembler small;
  first.set_data("");
  EXPECT_FALSE(small.Begin(&first, 2, 16, "h").ok());  // 32 bytes > 16.
}

TEST(StatusUtilTest, CodesSurviveTheRoundTrip) {
  for (int c = 0; c <= 16; ++c) {
    absl::Status s(static_cast<absl::StatusCode>(c), c == 0 ? "" : "msg");
    absl::Status back = FromGrpcStatus(ToGrpcStatus(s));
    EXPECT_EQ(back.code(), s.code());
  }
  // An absl code outside 0..16 goes out as UNKNOWN (never an out-of-range grpc::StatusCode).
  EXPECT_EQ(ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(99), "odd")).error_code(),
            grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(CanonicalCode(-1), absl::StatusCode::kUnknown);
  EXPECT_EQ(CanonicalCode(17), absl::StatusCode::kUnknown);
  EXPECT_EQ(CanonicalCode(5), absl::StatusCode::kNotFound);
  absl::Status s = FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "gone"), "worker x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "worker x: gone");
}

}  // namespace
}  // namespace swarm::rpc
