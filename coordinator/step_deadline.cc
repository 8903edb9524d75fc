#include "coordinator/step_deadline.h"

#include <algorithm>

namespace swarm::coordinator {

void StepDeadlines::Note(absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  const double seconds = absl::ToDoubleSeconds(latency);
  if (latencies_.size() < kWindow) {
    latencies_.push_back(seconds);
  } else {
    latencies_[next_ % kWindow] = seconds;
  }
  ++next_;
  // The p99 moves slowly: recomputed every kEvery samples once there are enough.
  if (latencies_.size() <= kMinSamples || next_ % kEvery == 0) {
    std::vector<double> v = latencies_;
    const size_t at = std::min(v.size() - 1, v.size() * 99 / 100);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(at), v.end());
    p99_ = v[at];
  }
}

absl::Duration StepDeadlines::Deadline() const {
  absl::MutexLock lock(&mu_);
  if (latencies_.size() < kMinSamples || factor_ <= 0) return step_timeout_;
  return std::min(step_timeout_, std::max(min_, absl::Seconds(factor_ * p99_)));
}

absl::Duration StepDeadlines::p99() const {
  absl::MutexLock lock(&mu_);
  return absl::Seconds(p99_);
}

}  // namespace swarm::coordinator
