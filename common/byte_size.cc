#include "common/byte_size.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace swarm {

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  struct Unit {
    const char* suffix;
    double factor;
  };
  static constexpr Unit kUnits[] = {
      {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
      {"KB", 1e3},     {"MB", 1e6},        {"GB", 1e9},           {"TB", 1e12},
      {"B", 1.0}};
  double factor = 1.0;
  for (const Unit& u : kUnits) {
    if (absl::ConsumeSuffix(&t, u.suffix)) {
      factor = u.factor;
      break;
    }
  }
  double v = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(t), &v) || v < 0 || !std::isfinite(v) ||
      v * factor > 9.2e18) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a byte size (e.g. 1073741824, 512MiB, 2GiB)"));
  }
  return static_cast<int64_t>(v * factor);
}

std::string FormatBytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

}  // namespace swarm
