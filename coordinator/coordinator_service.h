// The gRPC face of swarm-coordinator: swarm.v1.CoordinatorService
// (proto/swarm/v1/coordinator.proto) over CoordinatorServer's plain methods and its
// GenerationPipeline. It translates and nothing more: v1::GenerateRequest into a GenerationRequest,
// the pipeline's sink calls into the GenerateResponse stream (one write in flight; tokens that
// arrive during a write, or faster than one message per stream interval, coalesced into the next
// message), the results of Status, Predict and EstimateMemory into their replies, and absl::Status
// into grpc::Status (rpc/status.h).
//
// Threading: handlers run on gRPC's callback threads and never block: Generate runs the pipeline
// on the server's request pool, Status waits for the workers asynchronously, Predict and
// EstimateMemory answer at once (no block runs). Nothing throws out of a handler.
#ifndef SWARM_COORDINATOR_COORDINATOR_SERVICE_H_
#define SWARM_COORDINATOR_COORDINATOR_SERVICE_H_

#include <memory>

namespace grpc {
class Service;
}

namespace swarm::coordinator {

class CoordinatorServer;

// The service over `server` (not owned; it must outlive the service and stay started while the
// service is registered).
std::unique_ptr<grpc::Service> NewCoordinatorService(CoordinatorServer* server);

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_COORDINATOR_SERVICE_H_
