// common/quote.h: untrusted input in messages is escaped, cut at 200 bytes with its size, lists
// at 16 values; request ids are printable and at most 128 bytes.
#include "common/quote.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace swarm {
namespace {

TEST(QuoteTest, EscapesAndCuts) {
  EXPECT_EQ(QuoteInput("abc"), "'abc'");
  EXPECT_EQ(QuoteInput("a\nb"), "'a\\nb'");
  const std::string big(3 << 20, 'x');
  const std::string q = QuoteInput(big);
  EXPECT_LT(q.size(), 260u);
  EXPECT_NE(q.find("...' (3145728 bytes)"), std::string::npos) << q;
  EXPECT_EQ(q.find('\n'), std::string::npos);
}

TEST(QuoteTest, ListsAreCut) {
  EXPECT_EQ(ListInput({1, 2, 3}), "1,2,3");
  std::vector<int> many(1000000, 7);
  const std::string l = ListInput(many);
  EXPECT_LT(l.size(), 80u);
  EXPECT_NE(l.find("(1000000 values)"), std::string::npos) << l;
}

TEST(QuoteTest, RequestIds) {
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId("job-42 retry=1").ok());
  EXPECT_TRUE(ValidateRequestId(std::string(128, 'a')).ok());
  EXPECT_EQ(ValidateRequestId(std::string(129, 'a')).code(), absl::StatusCode::kInvalidArgument);
  absl::Status s = ValidateRequestId("a\nforged");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos);
  EXPECT_EQ(ValidateRequestId(std::string("\xff\xfe", 2)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace swarm
