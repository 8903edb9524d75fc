#include "common/quote.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace swarm {

std::string QuoteInput(absl::string_view input, size_t max_bytes) {
  const bool cut = input.size() > max_bytes;
  std::string out =
      absl::StrCat("'", absl::CHexEscape(input.substr(0, std::min(input.size(), max_bytes))));
  if (cut) return absl::StrCat(out, "...' (", input.size(), " bytes)");
  return absl::StrCat(out, "'");
}

std::string ListInput(absl::Span<const int> values, size_t max_items) {
  if (values.size() <= max_items) return absl::StrJoin(values, ",");
  return absl::StrCat(absl::StrJoin(values.subspan(0, max_items), ","), ",... (", values.size(),
                      " values)");
}

absl::Status ValidateRequestId(absl::string_view id) {
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request_id ", QuoteInput(id, 32), " is longer than ", kMaxRequestIdBytes, " bytes"));
  }
  for (char c : id) {
    if (!absl::ascii_isprint(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id ", QuoteInput(id),
                       " holds a non-printable character (printable ASCII only)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace swarm
