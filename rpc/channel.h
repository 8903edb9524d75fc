// Channels between our own processes (coordinator → worker, SDK → coordinator): message limits
// shared with the servers, keepalive so that a dead peer is noticed, fast reconnect, and the one
// place channel credentials are built (plaintext, TLS, or mutual TLS with certificates that are
// reloaded when their files change). Thread-safe.
#ifndef SWARM_RPC_CHANNEL_H_
#define SWARM_RPC_CHANNEL_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "rpc/security.h"

namespace swarm::rpc {

// The largest message a server or channel accepts (gRPC's default, stated explicitly).
inline constexpr int kMaxMessageBytes = 4 << 20;
// The largest piece of tensor data put in one message: 3 MiB, leaving room under
// kMaxMessageBytes for the other fields.
inline constexpr size_t kMaxTensorPieceBytes = size_t{3} << 20;

// Channel arguments for calls between Swarm processes.
grpc::ChannelArguments InternalChannelArguments();

// Credentials for a channel: plaintext when `tls` is empty; otherwise TLS that verifies the
// server's certificate against tls.ca (the system's roots when no CA is given) and its host name
// against the dialled address, and presents tls.cert/tls.key when given (mutual TLS). Errors:
// ValidateTlsFiles's.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& tls);

}  // namespace swarm::rpc

#endif  // SWARM_RPC_CHANNEL_H_
