// The one place that maps absl::Status (our code) to grpc::Status (the wire) and back. Every
// gRPC handler returns ToGrpcStatus(...) and every client call site converts with
// FromGrpcStatus(...); the canonical codes are the same numbers in both libraries, so the code
// survives the trip and the message keeps its context. Stateless; thread-safe.
#ifndef SWARM_RPC_STATUS_H_
#define SWARM_RPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace swarm::rpc {

// A status code as a number from outside (a batch step's code on the wire, an absl code) as a
// canonical code: 0..16 are the same codes in absl and gRPC, anything else is UNKNOWN. Never cast
// a number outside 0..16 to grpc::StatusCode: its range is 0..31, past that the cast is undefined.
absl::StatusCode CanonicalCode(int code);

// Same code (UNKNOWN for one outside 0..16), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Same code; the message is prefixed with `context` (e.g. "worker 10.0.0.2:7001: Forward") when
// it is not empty, so a caller several hops away can tell which server said what.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view context = "");

}  // namespace swarm::rpc

#endif  // SWARM_RPC_STATUS_H_
