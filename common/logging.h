// One-line logs of the servers and the CLI: "<UTC time> <component>: <message>" on stderr.
// Thread-safe: a line is written with one call, so lines of different threads never interleave.
#ifndef SWARM_COMMON_LOGGING_H_
#define SWARM_COMMON_LOGGING_H_

#include "absl/strings/string_view.h"

namespace swarm {

// Writes "<UTC time> <component>: <message>\n" to stderr and flushes it.
void LogLine(absl::string_view component, absl::string_view message);

}  // namespace swarm

#endif  // SWARM_COMMON_LOGGING_H_
