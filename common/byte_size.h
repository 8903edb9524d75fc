// Byte sizes as operators write them in flags ("512MiB", "2GiB", "1.5GB") and as logs and
// errors print them ("1.5 GiB"). Pure functions; thread-safe.
#ifndef SWARM_COMMON_BYTE_SIZE_H_
#define SWARM_COMMON_BYTE_SIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace swarm {

// "1048576", "512MiB", "2GiB", "1.5GB" (KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB of 1000).
// InvalidArgument for anything else, a negative size or one past int64.
absl::StatusOr<int64_t> ParseByteSize(absl::string_view text);
// Human-readable size: "1.5 GiB".
std::string FormatBytes(int64_t bytes);

}  // namespace swarm

#endif  // SWARM_COMMON_BYTE_SIZE_H_
