// Status propagation helpers. Abseil 20220623 (Debian bookworm) ships no RETURN_IF_ERROR or
// ASSIGN_OR_RETURN, so the project defines its own two here. Used by every component.
#ifndef SWARM_COMMON_STATUS_MACROS_H_
#define SWARM_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define SWARM_STATUS_CONCAT_INNER_(a, b) a##b
#define SWARM_STATUS_CONCAT_(a, b) SWARM_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status swarm_status_ = (expr);         \
    if (!swarm_status_.ok()) return swarm_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` assigns the value of a StatusOr or returns its status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  SWARM_ASSIGN_OR_RETURN_IMPL_(SWARM_STATUS_CONCAT_(swarm_statusor_, __LINE__), lhs, expr)

#define SWARM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)  \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace swarm {

// Prepends context to a status message, keeping its code: "loading 'x': <original>".
inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace swarm

#endif  // SWARM_COMMON_STATUS_MACROS_H_
