// Plumbing the two servers (swarm-worker, swarm-coordinator) share: building a gRPC server with
// health checking, reflection and explicit message limits; waiting for SIGINT/SIGTERM; parsing the
// flags of the server binaries. Not for request handling. Functions are thread-safe except
// BlockShutdownSignals, which main() calls first.
#ifndef SWARM_PROTO_SERVER_UTIL_H_
#define SWARM_PROTO_SERVER_UTIL_H_

#include <grpcpp/server.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/flags.h"

namespace swarm {

// Writes "<UTC time> <component>: <message>" to stderr as one line. Thread-safe.
void LogLine(absl::string_view component, absl::string_view message);

// Blocks SIGINT and SIGTERM in the calling thread and in every thread it starts afterwards, so
// that WaitForShutdownSignal() receives them. Call at the top of main(), before any thread exists.
void BlockShutdownSignals();
// Waits for SIGINT or SIGTERM and returns its number.
int WaitForShutdownSignal();

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // The bound address: the listen host with the port actually chosen.
};

// Builds and starts an insecure gRPC server on `listen` ("HOST:PORT", port 0 picks a free port)
// with `services`, the standard health service (initially NOT_SERVING for "" and every service
// name in `health_names`) and server reflection. Messages are limited to kMaxMessageBytes.
// Callback services run on gRPC's callback threads. Errors: the address cannot be bound.
absl::StatusOr<StartedServer> StartServer(const std::string& listen,
                                          const std::vector<grpc::Service*>& services,
                                          const std::vector<std::string>& health_names);
// Sets the health status of "" and of `health_names`.
void SetServing(grpc::Server* server, const std::vector<std::string>& health_names, bool serving);

// Channel arguments for calls between our own processes: message limits, keepalive so that a
// dead peer is noticed, fast reconnect.
grpc::ChannelArguments InternalChannelArguments();

// "HOST:PORT" with a port 0..65535; IPv6 hosts in brackets. InvalidArgument naming `flag`.
absl::Status ValidateHostPort(absl::string_view address, absl::string_view flag);

// The flag parser the servers share with the swarm CLI.
using ServerFlags = Flags;

}  // namespace swarm

#endif  // SWARM_PROTO_SERVER_UTIL_H_
