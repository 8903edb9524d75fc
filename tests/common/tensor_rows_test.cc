// Row ranges of 2-D host tensors (common/tensor_rows.h): slices and copies keep the bytes of every
// dtype, and every range outside its tensor is refused rather than read or written.
#include "common/tensor_rows.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace swarm {
namespace {

HostTensor Counting(int64_t rows, int64_t width) {
  std::vector<float> v(rows * width);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return HostTensor::FromFloats({rows, width}, v);
}

TEST(TensorRowsTest, SliceCopyAndZeros) {
  const HostTensor t = Counting(4, 3);
  auto mid = SliceRows(t, 1, 2);
  ASSERT_TRUE(mid.ok()) << mid.status();
  EXPECT_EQ(mid->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(mid->ToFloats(), (std::vector<float>{3, 4, 5, 6, 7, 8}));
  auto none = SliceRows(t, 4, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->shape, (std::vector<int64_t>{0, 3}));

  HostTensor z = ZeroRows(DType::kF32, 3, 3);
  EXPECT_EQ(z.ToFloats(), std::vector<float>(9, 0.0f));
  ASSERT_TRUE(CopyRows(t, 3, 1, &z, 1).ok());
  EXPECT_EQ(z.ToFloats(), (std::vector<float>{0, 0, 0, 9, 10, 11, 0, 0, 0}));

  // 16-bit dtypes: bytes move as they are.
  HostTensor h = ZeroRows(DType::kBF16, 2, 2);
  h.data = std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  auto row1 = SliceRows(h, 1, 1);
  ASSERT_TRUE(row1.ok());
  EXPECT_EQ(row1->dtype, DType::kBF16);
  EXPECT_EQ(row1->data, std::string("\x05\x06\x07\x08", 4));
}

TEST(TensorRowsTest, RangesOutsideTheTensorAndMismatchesAreRefused) {
  const HostTensor t = Counting(4, 3);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (auto [begin, count] : {std::pair<int64_t, int64_t>{-1, 1},
                              {0, 5},
                              {3, 2},
                              {5, 0},
                              {1, kMax},
                              {kMax, 1},
                              {0, -1}}) {
    EXPECT_EQ(SliceRows(t, begin, count).status().code(), absl::StatusCode::kInvalidArgument)
        << begin << "," << count;
  }
  HostTensor z = ZeroRows(DType::kF32, 2, 3);
  EXPECT_FALSE(CopyRows(t, 0, 3, &z, 0).ok());     // Does not fit.
  EXPECT_FALSE(CopyRows(t, 3, 2, &z, 0).ok());     // Not in the source.
  EXPECT_FALSE(CopyRows(t, 0, 1, &z, kMax).ok());  // Overflow-safe.
  HostTensor narrow = ZeroRows(DType::kF32, 2, 2);
  EXPECT_FALSE(CopyRows(t, 0, 1, &narrow, 0).ok());
  HostTensor half = ZeroRows(DType::kF16, 2, 3);
  EXPECT_FALSE(CopyRows(t, 0, 1, &half, 0).ok());
  HostTensor flat = HostTensor::FromFloats({3}, {1, 2, 3});
  EXPECT_FALSE(SliceRows(flat, 0, 1).ok());
  HostTensor short_data = t;
  short_data.data.pop_back();
  EXPECT_FALSE(SliceRows(short_data, 0, 1).ok());
  EXPECT_EQ(z.ToFloats(), std::vector<float>(6, 0.0f));  // Nothing was written.
}

}  // namespace
}  // namespace swarm
