// Building the gRPC servers of swarm-worker and swarm-coordinator: health checking, reflection
// and explicit message limits, on a HOST:PORT whose port 0 is read back. Where server
// credentials will be built (TLS) is here too. Not for request handling. Thread-safe.
#ifndef SWARM_RPC_SERVER_H_
#define SWARM_RPC_SERVER_H_

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace swarm::rpc {

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  std::string address;  // The bound address: the listen host with the port actually chosen.
};

// Builds and starts an insecure gRPC server on `listen` ("HOST:PORT", common/host_port.h; port 0
// picks a free port) with `services`, the standard health service (initially NOT_SERVING for ""
// and every service name in `health_names`) and server reflection. Messages are limited to
// kMaxMessageBytes. Callback services run on gRPC's callback threads. Errors: a malformed
// address (InvalidArgument), one that cannot be bound (Unavailable).
absl::StatusOr<StartedServer> StartServer(const std::string& listen,
                                          const std::vector<grpc::Service*>& services,
                                          const std::vector<std::string>& health_names);
// Sets the health status of "" and of `health_names`.
void SetServing(grpc::Server* server, const std::vector<std::string>& health_names, bool serving);

}  // namespace swarm::rpc

#endif  // SWARM_RPC_SERVER_H_
