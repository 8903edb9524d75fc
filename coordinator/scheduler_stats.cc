#include "coordinator/scheduler_stats.h"

#include <algorithm>
#include <utility>

namespace swarm::coordinator {

SchedulerStats::SchedulerStats(Options options)
    : next_(options.next != nullptr ? options.next : &default_next_),
      num_workers_(std::max(0, options.num_workers)),
      slice_(options.window > absl::ZeroDuration() ? options.window / kSlices : absl::Seconds(1)),
      clock_(options.clock ? std::move(options.clock) : [] { return absl::Now(); }),
      start_(clock_()),
      slices_(kSlices) {}

int64_t SchedulerStats::SliceIndex(absl::Time t) const {
  absl::Duration remainder;  // IDivDuration needs somewhere to put it.
  return absl::IDivDuration(t - absl::UnixEpoch(), slice_, &remainder);
}

SchedulerStats::Slice& SchedulerStats::CurrentLocked() {
  const int64_t index = SliceIndex(clock_());
  Slice& s = slices_[static_cast<size_t>(index % kSlices)];
  if (s.index != index) {
    s = Slice();
    s.index = index;
    s.busy.assign(num_workers_, absl::ZeroDuration());
  }
  return s;
}

SchedulerStats::Snapshot SchedulerStats::Get() const {
  const absl::Time now = clock_();
  const int64_t current = SliceIndex(now);
  Snapshot out;
  out.worker_busy_fraction.assign(num_workers_, 0.0);
  std::vector<absl::Duration> busy(num_workers_, absl::ZeroDuration());
  absl::Duration queued;
  int64_t sequences = 0, tokens = 0;
  {
    absl::MutexLock lock(&mu_);
    out.running_requests = running_;
    out.waiting_requests = waiting_;
    for (const Slice& s : slices_) {
      if (s.index < 0 || s.index <= current - kSlices || s.index > current) continue;
      out.steps += s.steps;
      sequences += s.sequences;
      tokens += s.tokens;
      out.admitted += s.admitted;
      queued += s.queued;
      for (int w = 0; w < num_workers_; ++w) busy[w] += s.busy[w];
    }
  }
  // The window: the kSlices - 1 whole slices before this one plus this one's elapsed part, but not
  // before start-up (and at least one slice, so a fresh start does not divide by ~0).
  const absl::Time window_start =
      std::max(start_, absl::UnixEpoch() + slice_ * (current - (kSlices - 1)));
  const absl::Duration window = std::max(now - window_start, slice_);
  out.window_seconds = absl::ToDoubleSeconds(window);
  if (out.steps > 0) {
    out.sequences_per_step = static_cast<double>(sequences) / out.steps;
    out.tokens_per_step = static_cast<double>(tokens) / out.steps;
  }
  if (out.admitted > 0) out.queue_seconds_mean = absl::ToDoubleSeconds(queued) / out.admitted;
  for (int w = 0; w < num_workers_; ++w) {
    out.worker_busy_fraction[w] = std::clamp(absl::FDivDuration(busy[w], window), 0.0, 1.0);
  }
  return out;
}

void SchedulerStats::OnBatchStep(int sequences, int64_t tokens) {
  {
    absl::MutexLock lock(&mu_);
    Slice& s = CurrentLocked();
    ++s.steps;
    s.sequences += std::max(0, sequences);
    s.tokens += std::max<int64_t>(0, tokens);
  }
  next_->OnBatchStep(sequences, tokens);
}

void SchedulerStats::OnAdmitted(absl::Duration queued) {
  {
    absl::MutexLock lock(&mu_);
    Slice& s = CurrentLocked();
    ++s.admitted;
    s.queued += std::max(queued, absl::ZeroDuration());
  }
  next_->OnAdmitted(queued);
}

void SchedulerStats::OnSchedulerState(int running, int waiting) {
  {
    absl::MutexLock lock(&mu_);
    running_ = std::max(0, running);
    waiting_ = std::max(0, waiting);
  }
  next_->OnSchedulerState(running, waiting);
}

void SchedulerStats::OnWorkerBusy(int worker, absl::Duration busy) {
  if (worker >= 0 && worker < num_workers_ && busy > absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    CurrentLocked().busy[worker] += busy;
  }
  next_->OnWorkerBusy(worker, busy);
}

void SchedulerStats::OnRequestStart(absl::string_view mode) { next_->OnRequestStart(mode); }

void SchedulerStats::OnRequestRefused(absl::string_view mode, absl::StatusCode code) {
  next_->OnRequestRefused(mode, code);
}

void SchedulerStats::OnRequestDone(absl::string_view mode, absl::StatusCode code,
                                   int64_t prompt_tokens, int64_t generated_tokens, double seconds,
                                   double ttft_seconds) {
  next_->OnRequestDone(mode, code, prompt_tokens, generated_tokens, seconds, ttft_seconds);
}

void SchedulerStats::OnInterToken(absl::string_view mode, double seconds) {
  next_->OnInterToken(mode, seconds);
}

void SchedulerStats::OnWorkerStep(absl::string_view worker, double seconds, absl::StatusCode code) {
  next_->OnWorkerStep(worker, seconds, code);
}

void SchedulerStats::SetWorkerUp(absl::string_view worker, bool up) {
  next_->SetWorkerUp(worker, up);
}

void SchedulerStats::SetReady(bool ready) { next_->SetReady(ready); }

void SchedulerStats::OnBlocksChosen(absl::string_view mode, const std::vector<int>& blocks,
                                    const std::vector<double>& router_tolls) {
  next_->OnBlocksChosen(mode, blocks, router_tolls);
}

void SchedulerStats::OnStep(const std::vector<int>& blocks) { next_->OnStep(blocks); }

void SchedulerStats::OnWorkers(const std::vector<WorkerState>& workers) {
  next_->OnWorkers(workers);
}

void SchedulerStats::OnBalanceWindow(const BalanceWindow& window) {
  next_->OnBalanceWindow(window);
}

}  // namespace swarm::coordinator
