// ReadAvailableMemory on files the test writes: MemAvailable alone, bounded by a cgroup v2 or v1
// limit minus usage, the "no limit" spellings, and every malformed or missing file that must be
// an error rather than a silent fallback to the node's memory.
#include "common/memory_limits.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace swarm {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

class MemoryLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "swarm-memory-limits-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_EQ(std::system(absl::StrCat("rm -rf '", dir_, "' && mkdir -p '", dir_, "'").c_str()), 0);
    files_.meminfo = dir_ + "/meminfo";
    files_.cgroup_v2_max = dir_ + "/memory.max";
    files_.cgroup_v2_current = dir_ + "/memory.current";
    files_.cgroup_v1_limit = dir_ + "/memory/memory.limit_in_bytes";
    files_.cgroup_v1_usage = dir_ + "/memory/memory.usage_in_bytes";
    // 8 GiB available on the "node".
    Write(files_.meminfo,
          "MemTotal:       16777216 kB\nMemFree:         1048576 kB\n"
          "MemAvailable:    8388608 kB\nBuffers:           10240 kB\n");
  }
  void TearDown() override { std::system(absl::StrCat("rm -rf '", dir_, "'").c_str()); }

  void Write(const std::string& path, const std::string& text) {
    std::system(absl::StrCat("mkdir -p \"$(dirname '", path, "')\"").c_str());
    std::ofstream out(path);
    out << text;
  }

  std::string dir_;
  MemoryFiles files_;
};

TEST_F(MemoryLimitsTest, WithoutCgroupFilesItIsMemAvailable) {
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->mem_available, 8 * kGiB);
  EXPECT_EQ(m->bytes, 8 * kGiB);
  EXPECT_EQ(m->cgroup_limit, 0);
  EXPECT_EQ(m->source, "MemAvailable");
}

TEST_F(MemoryLimitsTest, CgroupV2LimitMinusUsageBoundsIt) {
  Write(files_.cgroup_v2_max, "1073741824\n");
  Write(files_.cgroup_v2_current, "268435456\n");
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bytes, 768 * kMiB);
  EXPECT_EQ(m->cgroup_limit, kGiB);
  EXPECT_EQ(m->cgroup_usage, 256 * kMiB);
  EXPECT_EQ(m->mem_available, 8 * kGiB);
  EXPECT_THAT(m->source, HasSubstr("cgroup v2 memory.max"));
}

TEST_F(MemoryLimitsTest, CgroupV1LimitMinusUsageBoundsIt) {
  Write(files_.cgroup_v1_limit, absl::StrCat(2 * kGiB, "\n"));
  Write(files_.cgroup_v1_usage, absl::StrCat(3 * kGiB / 2, "\n"));
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bytes, 512 * kMiB);
  EXPECT_EQ(m->cgroup_limit, 2 * kGiB);
  EXPECT_THAT(m->source, HasSubstr("cgroup v1"));
}

TEST_F(MemoryLimitsTest, NoLimitSpellingsLeaveMemAvailable) {
  Write(files_.cgroup_v2_max, "max\n");
  Write(files_.cgroup_v2_current, "123\n");
  // What the v1 kernel reports for "unlimited" (LONG_MAX rounded down to a page).
  Write(files_.cgroup_v1_limit, "9223372036854771712\n");
  Write(files_.cgroup_v1_usage, "456\n");
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bytes, 8 * kGiB);
  EXPECT_EQ(m->cgroup_limit, 0);
}

TEST_F(MemoryLimitsTest, TheTightestBoundWins) {
  // A limit with more room than the node has: MemAvailable still bounds it.
  Write(files_.cgroup_v2_max, absl::StrCat(64 * kGiB));
  Write(files_.cgroup_v2_current, absl::StrCat(kGiB));
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bytes, 8 * kGiB);
  EXPECT_EQ(m->cgroup_limit, 64 * kGiB);
  EXPECT_EQ(m->source, "MemAvailable");
  // Both versions present (a hybrid host): the smaller room.
  Write(files_.cgroup_v1_limit, absl::StrCat(4 * kGiB));
  Write(files_.cgroup_v1_usage, absl::StrCat(3 * kGiB));
  m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bytes, kGiB);
  EXPECT_EQ(m->cgroup_limit, 4 * kGiB);
  // Usage above the limit (the kernel is reclaiming): no room, not a negative one.
  Write(files_.cgroup_v2_max, absl::StrCat(kGiB));
  Write(files_.cgroup_v2_current, absl::StrCat(kGiB + 4096));
  m = ReadAvailableMemory(files_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->bytes, 0);
  EXPECT_EQ(m->cgroup_limit, kGiB);
}

TEST_F(MemoryLimitsTest, GarbageAndMissingFilesAreErrorsNamingTheFile) {
  Write(files_.cgroup_v2_max, "lots\n");
  Write(files_.cgroup_v2_current, "1\n");
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory(files_);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(files_.cgroup_v2_max));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("'lots'"));

  Write(files_.cgroup_v2_max, "1073741824\n");
  Write(files_.cgroup_v2_current, "12 pages\n");
  m = ReadAvailableMemory(files_);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(files_.cgroup_v2_current));

  // A limit whose usage cannot be known is not ignored.
  std::remove(files_.cgroup_v2_current.c_str());
  m = ReadAvailableMemory(files_);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("does not exist"));
  std::remove(files_.cgroup_v2_max.c_str());

  Write(files_.cgroup_v1_limit, "-5\n");
  Write(files_.cgroup_v1_usage, "1\n");
  m = ReadAvailableMemory(files_);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(files_.cgroup_v1_limit));
  std::remove(files_.cgroup_v1_limit.c_str());
  ASSERT_TRUE(ReadAvailableMemory(files_).ok());

  Write(files_.meminfo, "MemTotal: 1024 kB\n");
  m = ReadAvailableMemory(files_);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("no MemAvailable line"));
  Write(files_.meminfo, "MemAvailable: many kB\n");
  EXPECT_EQ(ReadAvailableMemory(files_).status().code(), absl::StatusCode::kFailedPrecondition);
  std::remove(files_.meminfo.c_str());
  m = ReadAvailableMemory(files_);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(files_.meminfo));
}

TEST(MemoryLimitsSystemTest, ThisMachineAnswers) {
  absl::StatusOr<AvailableMemory> m = ReadAvailableMemory();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT(m->mem_available, 0);
  EXPECT_LE(m->bytes, m->mem_available);
}

}  // namespace
}  // namespace swarm
