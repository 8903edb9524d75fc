#include "router/calibration/divergence.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace swarm::router {

std::vector<float> LogSoftmaxRows(const HostTensor& logits) {
  std::vector<float> v = logits.ToFloats();
  if (logits.shape.size() != 2) return v;
  const int64_t T = logits.shape[0], V = logits.shape[1];
  for (int64_t t = 0; t < T; ++t) {
    float* row = v.data() + t * V;
    float mx = *std::max_element(row, row + V);
    double s = 0;
    for (int64_t i = 0; i < V; ++i) s += std::exp(static_cast<double>(row[i] - mx));
    float lse = mx + static_cast<float>(std::log(s));
    for (int64_t i = 0; i < V; ++i) row[i] -= lse;
  }
  return v;
}

absl::StatusOr<Divergence> CompareLogProbs(absl::Span<const float> full,
                                           absl::Span<const float> sparse, int64_t vocab,
                                           absl::Span<const int64_t> ids, int64_t first_pos) {
  const int64_t T = static_cast<int64_t>(ids.size());
  if (vocab <= 0 || static_cast<int64_t>(full.size()) != T * vocab ||
      full.size() != sparse.size()) {
    return absl::InvalidArgumentError(absl::StrCat("comparing logits: sizes ", full.size(), " and ",
                                                   sparse.size(), " for ", T, " tokens × vocab ",
                                                   vocab));
  }
  if (first_pos < 0 || first_pos > T - 2) {
    return absl::InvalidArgumentError(absl::StrCat("comparing logits: nothing to score from row ",
                                                   first_pos, " of ", T, " tokens"));
  }
  Divergence d;
  for (int64_t t = first_pos; t <= T - 2; ++t) {
    const float* p = full.data() + t * vocab;
    const float* q = sparse.data() + t * vocab;
    double kl = 0;
    int64_t ap = 0, aq = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      double lp = p[i];
      kl += std::exp(lp) * (lp - q[i]);
      if (p[i] > p[ap]) ap = i;
      if (q[i] > q[aq]) aq = i;
    }
    d.kl += std::max(0.0, kl);
    d.top1 += ap == aq ? 1.0 : 0.0;
    int64_t next = ids[t + 1];
    if (next < 0 || next >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", next, " outside vocab"));
    }
    d.nll_full -= p[next];
    d.nll_sparse -= q[next];
    ++d.positions;
  }
  double n = static_cast<double>(d.positions);
  d.kl /= n;
  d.top1 /= n;
  d.nll_full /= n;
  d.nll_sparse /= n;
  return d;
}

absl::StatusOr<Divergence> CompareLogits(const HostTensor& full, const HostTensor& sparse,
                                         absl::Span<const int64_t> ids, int64_t first_pos) {
  if (full.shape.size() != 2 || full.shape != sparse.shape ||
      full.shape[0] != static_cast<int64_t>(ids.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("comparing logits of shapes [", absl::StrJoin(full.shape, ","), "] and [",
                     absl::StrJoin(sparse.shape, ","), "] for ", ids.size(), " tokens"));
  }
  std::vector<float> p = LogSoftmaxRows(full);
  std::vector<float> q = LogSoftmaxRows(sparse);
  return CompareLogProbs(p, q, full.shape[1], ids, first_pos);
}

}  // namespace swarm::router
