// Quoting untrusted input in error messages and logs, the one way: at most ~200 bytes of it, with
// control and non-ASCII bytes escaped (so a newline in a request id cannot forge a log line), and
// the full size when it was cut. Also the one check of a request id. Pure functions; thread-safe.
#ifndef SWARM_COMMON_QUOTE_H_
#define SWARM_COMMON_QUOTE_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace swarm {

inline constexpr size_t kMaxQuotedBytes = 200;
inline constexpr size_t kMaxRequestIdBytes = 128;

// 'text' with C escapes, cut after `max_bytes` of input: 'abc...' (3000000 bytes).
std::string QuoteInput(absl::string_view input, size_t max_bytes = kMaxQuotedBytes);
// "1,2,3" of at most `max_items` values: "1,2,3,... (1000000 values)".
std::string ListInput(absl::Span<const int> values, size_t max_items = 16);
// OK for an id of at most kMaxRequestIdBytes printable ASCII characters (empty is OK: one is
// made up); InvalidArgument quoting it otherwise.
absl::Status ValidateRequestId(absl::string_view id);

}  // namespace swarm

#endif  // SWARM_COMMON_QUOTE_H_
