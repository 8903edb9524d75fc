// "HOST:PORT" as every Swarm flag and config writes it — the one parser of the project, for
// listen addresses (gRPC servers, /metrics) and dial targets (--workers, --server) alike.
// Accepted: "127.0.0.1:7001", "localhost:0", "[::1]:9100" (IPv6 in brackets) and ":9100"
// (empty host = all interfaces, bound as 0.0.0.0). The port is a number in [0, 65535]; port 0
// asks a server for a free one. Pure functions; thread-safe.
#ifndef SWARM_COMMON_HOST_PORT_H_
#define SWARM_COMMON_HOST_PORT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace swarm {

struct HostPort {
  std::string host;  // Without brackets; "0.0.0.0" when the text had an empty host.
  int port = 0;
  // "host:port", an IPv6 host in brackets: what gRPC and httplib are given.
  std::string ToString() const;
};

// Parses `text`. InvalidArgument naming `what` (a flag, "server address") and the text, and
// saying what is wrong: no ':', an unbracketed IPv6 host, a port that is not in [0, 65535].
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, absl::string_view what = "address");

// ParseHostPort's verdict alone.
absl::Status ValidateHostPort(absl::string_view text, absl::string_view what);

}  // namespace swarm

#endif  // SWARM_COMMON_HOST_PORT_H_
