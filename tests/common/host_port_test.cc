// The one HOST:PORT parser and the byte-size syntax of flags.
#include "common/host_port.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/byte_size.h"

namespace swarm {
namespace {

using ::testing::HasSubstr;

TEST(ParseHostPortTest, AcceptsHostPortForms) {
  auto hp = ParseHostPort("127.0.0.1:9100");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 9100);

  hp = ParseHostPort("[::1]:0");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 0);

  hp = ParseHostPort(":9090");
  ASSERT_TRUE(hp.ok()) << hp.status();
  EXPECT_EQ(hp->host, "0.0.0.0");
  EXPECT_EQ(hp->port, 9090);
}

TEST(ParseHostPortTest, RejectsMalformedAddresses) {
  for (const char* bad : {"", "localhost", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536",
                          "127.0.0.1:-1", "::1:9100"}) {
    auto hp = ParseHostPort(bad);
    EXPECT_EQ(hp.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  EXPECT_THAT(std::string(ParseHostPort("nope").status().message()), HasSubstr("'nope'"));
}

TEST(HostPortTest, ValidatesAndPrints) {
  EXPECT_TRUE(ValidateHostPort("127.0.0.1:0", "f").ok());
  EXPECT_TRUE(ValidateHostPort("[::1]:7001", "f").ok());
  EXPECT_FALSE(ValidateHostPort("localhost", "f").ok());
  EXPECT_FALSE(ValidateHostPort("h:99999", "f").ok());
  EXPECT_THAT(std::string(ValidateHostPort("h:99999", "--listen").message()),
              HasSubstr("--listen"));
  EXPECT_EQ(ParseHostPort("[::1]:7001")->ToString(), "[::1]:7001");
  EXPECT_EQ(ParseHostPort(":7001")->ToString(), "0.0.0.0:7001");
  EXPECT_EQ(ParseHostPort("localhost:7")->ToString(), "localhost:7");
}

TEST(ByteSizeTest, ParsesAndFormats) {
  EXPECT_EQ(*ParseByteSize("2GiB"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("512MiB"), int64_t{512} << 20);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000);
  EXPECT_EQ(*ParseByteSize("1024"), 1024);
  EXPECT_FALSE(ParseByteSize("lots").ok());
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(12), "12 B");
}

}  // namespace
}  // namespace swarm
