// The process's open-file limit. gRPC 1.51's listener stops accepting for good after one accept()
// fails with EMFILE (too many open files), even once descriptors free up; a server therefore
// raises its soft RLIMIT_NOFILE to the hard limit at start-up, so that only the hard limit (set by
// the operator or the container runtime, usually 2^20) bounds the connections it can hold, and its
// connection idle/age limits (rpc/server.h) reclaim idle ones. Call once at start-up, before any
// thread starts.
#ifndef SWARM_COMMON_FD_LIMIT_H_
#define SWARM_COMMON_FD_LIMIT_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace swarm {

struct FdLimit {
  int64_t before = 0;  // The soft limit found.
  int64_t after = 0;   // The soft limit now (the hard limit, at most 2^20).
};

// Raises the soft open-file limit to the hard one (capped at 2^20 when the hard limit is
// unlimited). Internal when getrlimit/setrlimit fail.
absl::StatusOr<FdLimit> RaiseOpenFileLimit();

}  // namespace swarm

#endif  // SWARM_COMMON_FD_LIMIT_H_
