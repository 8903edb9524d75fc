// The one residual combine rule of sparse execution (../shared/DESIGN.md). A block B run with gate
// g turns h into h + g·(B(h) − h) (sequential combine); blocks run side by side on the same h give
// h + Σ_b w_b·(B_b(h) − h) (parallel combine). Blocks always run ungated (LayerHost::Forward has no
// gate); whoever combines their outputs calls these functions: router::SparseExecutor in-process,
// the coordinator's Scheduler across workers, and a worker honouring ForwardRequest.gate. So
// the rule and its arithmetic exist once, and every path computes the same bits.
//
// Pure functions on HostTensor, torch-free; thread-safe.
#ifndef SWARM_MODEL_COMBINE_H_
#define SWARM_MODEL_COMBINE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"

namespace swarm::model {

// h + Σ_b weights[b]·(outs[b] − h), in f32 arithmetic (each weighted difference added with one
// rounding, as a fused multiply-add), returned in h's dtype. `outs` holds each block's output for
// input h. InvalidArgument when h is malformed, when outs and weights differ in size, or when an
// output's shape or dtype differs from h's.
absl::StatusOr<HostTensor> CombineResiduals(const HostTensor& h,
                                            const std::vector<HostTensor>& outs,
                                            absl::Span<const float> weights);

// One block's gated update h + gate·(block_out − h), where block_out = B(h). With gate == 1 it
// returns block_out unchanged (bit-exact: the exact model); otherwise it is
// CombineResiduals(h, {block_out}, {gate}), with its errors.
absl::StatusOr<HostTensor> GateResidual(const HostTensor& h, HostTensor block_out, float gate);

}  // namespace swarm::model

#endif  // SWARM_MODEL_COMBINE_H_
