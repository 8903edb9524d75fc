// Channels between our own processes (coordinator → worker, SDK → coordinator): message limits
// shared with the servers, keepalive so that a dead peer is noticed, fast reconnect. Where channel
// credentials will be built (TLS) is here too. Thread-safe.
#ifndef SWARM_RPC_CHANNEL_H_
#define SWARM_RPC_CHANNEL_H_

#include <grpcpp/support/channel_arguments.h>

#include <cstddef>

namespace swarm::rpc {

// The largest message a server or channel accepts (gRPC's default, stated explicitly).
inline constexpr int kMaxMessageBytes = 4 << 20;
// The largest piece of tensor data put in one message: 3 MiB, leaving room under
// kMaxMessageBytes for the other fields.
inline constexpr size_t kMaxTensorPieceBytes = size_t{3} << 20;

// Channel arguments for calls between Swarm processes.
grpc::ChannelArguments InternalChannelArguments();

}  // namespace swarm::rpc

#endif  // SWARM_RPC_CHANNEL_H_
