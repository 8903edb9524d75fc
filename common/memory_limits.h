// How much memory this process can still take without being OOM-killed: the kernel's
// MemAvailable (/proc/meminfo), bounded by the room left in the process's memory cgroup (its limit
// minus its usage). Inside a container /proc/meminfo describes the node, not the pod, so a figure
// taken from MemAvailable alone can exceed the pod's limit. swarm-worker sizes its default KV
// budget on cpu from this (worker_server.h, WorkerServerOptions::kv_budget_memory_fraction).
//
// The cgroup files are read at their container paths (/sys/fs/cgroup/memory.max for cgroup v2,
// /sys/fs/cgroup/memory/memory.limit_in_bytes for v1): a container sees its own cgroup there, as
// Kubernetes and Docker set it up. A process on a host outside a container sees the root cgroup
// (no memory.max, an unlimited v1 limit) and gets MemAvailable. Usage includes the page cache
// charged to the cgroup, so the figure errs on the small side.
//
// Pure reads of the files named in MemoryFiles (tests point them at files they write); no state;
// thread-safe.
#ifndef SWARM_COMMON_MEMORY_LIMITS_H_
#define SWARM_COMMON_MEMORY_LIMITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace swarm {

struct MemoryFiles {
  std::string meminfo = "/proc/meminfo";
  std::string cgroup_v2_max = "/sys/fs/cgroup/memory.max";
  std::string cgroup_v2_current = "/sys/fs/cgroup/memory.current";
  std::string cgroup_v1_limit = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
  std::string cgroup_v1_usage = "/sys/fs/cgroup/memory/memory.usage_in_bytes";
};

struct AvailableMemory {
  int64_t bytes = 0;          // min(mem_available, cgroup_limit - cgroup_usage), at least 0.
  int64_t mem_available = 0;  // MemAvailable of /proc/meminfo.
  int64_t cgroup_limit = 0;   // The tightest cgroup limit found; 0 = none.
  int64_t cgroup_usage = 0;   // That cgroup's usage; 0 without a limit.
  // Where `bytes` comes from, for logs: "MemAvailable" or "cgroup v2 memory.max 4.0 GiB minus
  // usage 1.2 GiB".
  std::string source;
};

// Reads MemAvailable and the cgroup v2 and v1 limits and usages of `files`.
// - A missing cgroup limit file means that cgroup version sets no limit; so do "max" (v2) and a
//   v1 limit of 2^62 bytes or more (the kernel's "unlimited" is about 2^63).
// - Errors (FailedPrecondition, naming the file and what it holds): /proc/meminfo unreadable or
//   without a MemAvailable line; a limit or usage file that is not a byte count; a limit whose
//   usage file is missing. A limit that cannot be read is never ignored: the caller would size
//   memory from the node and risk the OOM killer.
absl::StatusOr<AvailableMemory> ReadAvailableMemory(const MemoryFiles& files = MemoryFiles());

}  // namespace swarm

#endif  // SWARM_COMMON_MEMORY_LIMITS_H_
