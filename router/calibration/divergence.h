// How far a sparse pass is from the exact one: KL(full ‖ sparse), top-1 agreement and token NLLs
// over a teacher-forced continuation. The measure of calibration (router/calibration/probe.h),
// evaluation (`swarm eval`) and the quality tests. Pure functions; thread-safe.
#ifndef SWARM_ROUTER_CALIBRATION_DIVERGENCE_H_
#define SWARM_ROUTER_CALIBRATION_DIVERGENCE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"

namespace swarm::router {

// Quality of a sparse pass against the exact one over teacher-forced `ids`.
struct Divergence {
  double kl = 0;          // Mean KL(full ‖ sparse) over the scored positions (nats).
  double top1 = 0;        // Fraction of positions where both argmaxes agree.
  double nll_full = 0;    // Mean −log p_full(next token).
  double nll_sparse = 0;  // Mean −log p_sparse(next token).
  int64_t positions = 0;
};

// Scores rows first_pos .. T−2 of `full` and `sparse` (both f32 [T, vocab] logits of `ids`),
// each predicting ids[t + 1]. InvalidArgument when shapes disagree or nothing is scored.
absl::StatusOr<Divergence> CompareLogits(const HostTensor& full, const HostTensor& sparse,
                                         absl::Span<const int64_t> ids, int64_t first_pos);

// Log-softmax of each row of `logits` [T, V] (f32).
std::vector<float> LogSoftmaxRows(const HostTensor& logits);
// As CompareLogits, with the rows already log-softmaxed.
absl::StatusOr<Divergence> CompareLogProbs(absl::Span<const float> full,
                                           absl::Span<const float> sparse, int64_t vocab,
                                           absl::Span<const int64_t> ids, int64_t first_pos);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_CALIBRATION_DIVERGENCE_H_
