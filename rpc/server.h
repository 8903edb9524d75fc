// Building the gRPC servers of swarm-worker and swarm-coordinator: health checking, reflection,
// explicit message limits and connection limits, on a HOST:PORT whose port 0 is read back; the one
// place server credentials are built (plaintext, TLS, or mutual TLS that requires and verifies
// client certificates, reloaded when their files change) and the one place the rule "no plaintext
// off loopback without --insecure" is enforced. Not for request handling. Thread-safe.
#ifndef SWARM_RPC_SERVER_H_
#define SWARM_RPC_SERVER_H_

#include <grpcpp/server.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rpc/channel.h"
#include "rpc/security.h"

namespace swarm::rpc {

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // The bound address: the listen host with the port actually chosen.
};

// Connection limits of every server (gRPC channel arguments), so that one peer cannot hold
// unbounded streams, connections or memory.
struct ServerLimits {
  int max_concurrent_streams = 256;  // Per connection; more wait for a free one.
  absl::Duration max_connection_idle = absl::Minutes(30);       // No call on it this long: closed.
  absl::Duration max_connection_age = absl::Hours(6);           // Then GOAWAY...
  absl::Duration max_connection_age_grace = absl::Minutes(15);  // ...and calls get this long.
  absl::Duration keepalive_time = absl::Minutes(1);      // The server pings an idle client...
  absl::Duration keepalive_timeout = absl::Seconds(20);  // ...and drops it without an answer.
  // A client pinging more often than this without data gets GOAWAY after two strikes (our
  // channels ping every 20 s: rpc/channel.cc).
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  int64_t memory_quota_bytes = int64_t{4} << 30;  // gRPC's ResourceQuota for the server.
  // A connection that has not finished its HTTP/2 (and TLS) handshake by then is closed: idle
  // sockets cannot pile up and hold descriptors (common/fd_limit.h).
  absl::Duration handshake_timeout = absl::Seconds(20);
};

// Builds and starts a gRPC server on `listen` ("HOST:PORT", common/host_port.h; port 0 picks a
// free port) with `services`, the standard health service (initially NOT_SERVING for "" and every
// service name in `health_names`) and server reflection, with `security` and `limits`. Messages
// are limited to kMaxMessageBytes. Callback services run on gRPC's callback threads. Errors: a
// malformed address or bad TLS files (InvalidArgument), plaintext on an address other than
// loopback without `security.insecure` (FailedPrecondition, saying to give TLS flags or
// --insecure), an address that cannot be bound (Unavailable).
absl::StatusOr<StartedServer> StartServer(const std::string& listen,
                                          const std::vector<grpc::Service*>& services,
                                          const std::vector<std::string>& health_names,
                                          const ServerSecurity& security = {},
                                          const ServerLimits& limits = {});
// Sets the health status of "" and of `health_names`.
void SetServing(grpc::Server* server, const std::vector<std::string>& health_names, bool serving);

}  // namespace swarm::rpc

#endif  // SWARM_RPC_SERVER_H_
