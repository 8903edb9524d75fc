#include "common/fd_limit.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace swarm {

absl::StatusOr<FdLimit> RaiseOpenFileLimit() {
  constexpr rlim_t kCap = rlim_t{1} << 20;
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  FdLimit out;
  out.before = static_cast<int64_t>(limit.rlim_cur);
  const rlim_t target = limit.rlim_max == RLIM_INFINITY ? kCap : limit.rlim_max;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < target) {
    limit.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return absl::InternalError(
          absl::StrCat("setrlimit(RLIMIT_NOFILE, ", target, "): ", std::strerror(errno)));
    }
  }
  out.after = static_cast<int64_t>(limit.rlim_cur);
  return out;
}

}  // namespace swarm
