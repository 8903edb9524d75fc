#include "common/memory_limits.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/byte_size.h"

namespace swarm {

namespace {

// A v1 limit at or above this is the kernel's "unlimited" (PAGE_COUNTER_MAX pages, about 2^63).
constexpr int64_t kUnlimitedV1 = int64_t{1} << 62;

// The file's contents, or nullopt when it does not exist. Other open errors are errors: a limit
// that exists but cannot be read must not pass for "no limit".
absl::StatusOr<std::optional<std::string>> ReadIfExists(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return std::optional<std::string>();
    return absl::FailedPreconditionError(absl::StrCat("reading ", path, ": ", std::strerror(err)));
  }
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  const int err = errno;
  close(fd);
  if (n < 0) {
    return absl::FailedPreconditionError(absl::StrCat("reading ", path, ": ", std::strerror(err)));
  }
  return std::optional<std::string>(std::move(text));
}

absl::StatusOr<int64_t> ParseCount(const std::string& path, const std::string& text) {
  const absl::string_view value = absl::StripAsciiWhitespace(text);
  int64_t n = 0;
  if (!absl::SimpleAtoi(value, &n) || n < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " holds '", value.substr(0, 40), "', not a byte count"));
  }
  return n;
}

struct CgroupRoom {
  int64_t limit = 0;  // 0 = no limit.
  int64_t usage = 0;
  std::string name;  // "cgroup v2 memory.max".
};

// One cgroup version's limit and usage. `max_word` is true for v2, whose limit file says "max"
// when there is none.
absl::StatusOr<CgroupRoom> ReadCgroup(const std::string& limit_path, const std::string& usage_path,
                                      bool max_word, const std::string& name) {
  CgroupRoom room;
  room.name = name;
  absl::StatusOr<std::optional<std::string>> limit_text = ReadIfExists(limit_path);
  if (!limit_text.ok()) return limit_text.status();
  if (!limit_text->has_value()) return room;
  if (max_word && absl::StripAsciiWhitespace(**limit_text) == "max") return room;
  absl::StatusOr<int64_t> limit = ParseCount(limit_path, **limit_text);
  if (!limit.ok()) {
    if (max_word) {
      return absl::FailedPreconditionError(absl::StrCat(
          limit_path, " holds '", absl::StripAsciiWhitespace(**limit_text).substr(0, 40),
          "', neither 'max' nor a byte count"));
    }
    return limit.status();
  }
  if (!max_word && *limit >= kUnlimitedV1) return room;
  absl::StatusOr<std::optional<std::string>> usage_text = ReadIfExists(usage_path);
  if (!usage_text.ok()) return usage_text.status();
  if (!usage_text->has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        limit_path, " sets a limit of ", *limit, " bytes but ", usage_path, " does not exist"));
  }
  absl::StatusOr<int64_t> usage = ParseCount(usage_path, **usage_text);
  if (!usage.ok()) return usage.status();
  room.limit = *limit;
  room.usage = *usage;
  return room;
}

absl::StatusOr<int64_t> ReadMemAvailable(const std::string& path) {
  absl::StatusOr<std::optional<std::string>> text = ReadIfExists(path);
  if (!text.ok()) return text.status();
  if (!text->has_value()) {
    return absl::FailedPreconditionError(absl::StrCat("reading ", path, ": no such file"));
  }
  for (absl::string_view line : absl::StrSplit(**text, '\n')) {
    if (!absl::ConsumePrefix(&line, "MemAvailable:")) continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(absl::StripAsciiWhitespace(line), ' ', absl::SkipWhitespace());
    int64_t kib = 0;
    if (parts.size() != 2 || parts[1] != "kB" || !absl::SimpleAtoi(parts[0], &kib) || kib < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": cannot read 'MemAvailable:", line, "' (expected 'N kB')"));
    }
    return kib * 1024;
  }
  return absl::FailedPreconditionError(absl::StrCat(path, " has no MemAvailable line"));
}

}  // namespace

absl::StatusOr<AvailableMemory> ReadAvailableMemory(const MemoryFiles& files) {
  AvailableMemory out;
  absl::StatusOr<int64_t> available = ReadMemAvailable(files.meminfo);
  if (!available.ok()) return available.status();
  out.mem_available = *available;
  out.bytes = *available;
  out.source = "MemAvailable";
  absl::StatusOr<CgroupRoom> v2 = ReadCgroup(files.cgroup_v2_max, files.cgroup_v2_current,
                                             /*max_word=*/true, "cgroup v2 memory.max");
  if (!v2.ok()) return v2.status();
  absl::StatusOr<CgroupRoom> v1 = ReadCgroup(files.cgroup_v1_limit, files.cgroup_v1_usage,
                                             /*max_word=*/false, "cgroup v1 memory.limit_in_bytes");
  if (!v1.ok()) return v1.status();
  // Usage may exceed the limit for a moment (the kernel reclaims): no room then.
  auto room = [](const CgroupRoom& c) { return c.limit > c.usage ? c.limit - c.usage : 0; };
  const CgroupRoom* tightest = nullptr;
  for (const CgroupRoom* c : {&*v2, &*v1}) {
    if (c->limit > 0 && (tightest == nullptr || room(*c) < room(*tightest))) tightest = c;
  }
  if (tightest == nullptr) return out;
  out.cgroup_limit = tightest->limit;
  out.cgroup_usage = tightest->usage;
  if (room(*tightest) < out.bytes) {
    out.bytes = room(*tightest);
    out.source = absl::StrCat(tightest->name, " ", FormatBytes(tightest->limit), " minus usage ",
                              FormatBytes(tightest->usage));
  }
  return out;
}

}  // namespace swarm
