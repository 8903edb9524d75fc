#include "coordinator/admission_balance.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "router/balance.h"

namespace swarm::coordinator {

std::vector<double> WorkerPressure(const std::vector<WorkerLoad>& workers) {
  const size_t n = workers.size();
  std::vector<double> load(n, 0.0), pressure(n, 0.0);
  bool any_busy = false;
  int max_queued = 0;
  for (const WorkerLoad& w : workers) {
    if (!w.usable) continue;
    any_busy = any_busy || w.busy_fraction > 0;
    max_queued = std::max(max_queued, w.queued);
  }
  double sum = 0;
  int usable = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!workers[i].usable) continue;
    // Busy time is the measure; the queue stands in only until some busy time is measured.
    load[i] = any_busy         ? std::clamp(workers[i].busy_fraction, 0.0, 1.0)
              : max_queued > 0 ? static_cast<double>(workers[i].queued) / max_queued
                               : 0.0;
    sum += load[i];
    ++usable;
  }
  if (usable == 0) return pressure;
  const double mean = sum / usable;
  if (mean >= 1.0) return pressure;  // Every worker saturated: none is busier than the rest.
  for (size_t i = 0; i < n; ++i) {
    if (workers[i].usable) pressure[i] = std::clamp((load[i] - mean) / (1.0 - mean), 0.0, 1.0);
  }
  return pressure;
}

std::vector<double> BlockPressure(const BlockLayout& layout,
                                  const std::vector<WorkerLoad>& workers) {
  const std::vector<double> wp = WorkerPressure(workers);
  std::vector<double> out(layout.num_blocks, 0.0);
  for (int b = 0; b < layout.num_blocks; ++b) {
    double worst = 0;
    for (int l : layout.Layers(b)) {
      double least = 1.0;
      bool hosted = false;
      for (size_t w = 0; w < workers.size(); ++w) {
        const std::vector<int>& ls = workers[w].layers;
        if (!workers[w].usable || !std::binary_search(ls.begin(), ls.end(), l)) continue;
        hosted = true;
        least = std::min(least, wp[w]);
      }
      // An uncovered layer fails at planning, not here.
      if (hosted) worst = std::max(worst, least);
    }
    out[b] = worst;
  }
  return out;
}

std::vector<int> BlockResources(const BlockLayout& layout, const std::vector<WorkerLoad>& workers) {
  std::vector<std::vector<size_t>> hosts(layout.num_blocks);
  std::vector<int> out(layout.num_blocks);
  for (int b = 0; b < layout.num_blocks; ++b) {
    for (size_t w = 0; w < workers.size(); ++w) {
      if (!workers[w].usable) continue;
      const std::vector<int>& ls = workers[w].layers;
      for (int l : layout.Layers(b)) {
        if (std::binary_search(ls.begin(), ls.end(), l)) {
          hosts[b].push_back(w);
          break;
        }
      }
    }
    out[b] = b;
    for (int a = 0; a < b; ++a) {
      if (hosts[a] == hosts[b]) {
        out[b] = out[a];
        break;
      }
    }
  }
  return out;
}

AdmissionBalancer::AdmissionBalancer(router::Router* router, int num_layers, BalanceOptions options,
                                     std::function<std::vector<WorkerLoad>()> load,
                                     CoordinatorObserver* observer)
    : router_(router), options_(std::move(options)), load_(std::move(load)), observer_(observer) {
  // The router was loaded for this model, so 1 <= N <= num_layers.
  absl::StatusOr<BlockLayout> layout = BlockLayout::Create(num_layers, router_->num_blocks());
  if (layout.ok()) layout_ = *layout;
}

std::vector<double> AdmissionBalancer::Drive(const std::vector<WorkerLoad>& loads) const {
  std::vector<double> drive(router_->num_blocks(), 0.0);
  if (layout_.num_blocks != router_->num_blocks()) return drive;
  const std::vector<double> pressure = BlockPressure(layout_, loads);
  for (size_t b = 0; b < drive.size(); ++b) {
    drive[b] = std::min(1.0, options_.gain * pressure[b]);
  }
  return drive;
}

std::vector<double> AdmissionBalancer::LoadTolls(int top_k) const {
  std::vector<double> tolls = Drive(load_ ? load_() : std::vector<WorkerLoad>());
  const double unit = options_.toll_cap * router_->DamageScale(top_k);
  for (double& t : tolls) t *= unit;
  return tolls;
}

absl::StatusOr<std::vector<router::Prediction>> AdmissionBalancer::RouteWindow(
    const std::vector<std::vector<int64_t>>& prompts, int top_k) {
  const std::vector<WorkerLoad> loads = load_ ? load_() : std::vector<WorkerLoad>();
  const std::vector<double> drive = Drive(loads);
  const double scale = router_->DamageScale(top_k);
  std::vector<double> tolls(drive.size());
  for (size_t b = 0; b < drive.size(); ++b) tolls[b] = options_.toll_cap * scale * drive[b];
  const double peak = *std::max_element(drive.begin(), drive.end());

  router::BatchOptions bo;
  bo.extra_costs = tolls;
  if (layout_.num_blocks == router_->num_blocks()) bo.resource = BlockResources(layout_, loads);
  bo.congestion = options_.congestion * peak;
  // Soft rounds only help leave poor starts of a game with congestion; without it every request
  // simply takes its best choice.
  if (bo.congestion <= 0) bo.t_start = 0;
  {
    absl::MutexLock lock(&mu_);
    bo.seed = windows_++;
  }
  absl::StatusOr<router::BatchResult> r = router_->BalanceBatch(prompts, top_k, bo);
  if (!r.ok()) return r.status();

  if (observer_ != nullptr) {
    // The windows the gap prices again are kept only for this report.
    auto routed = std::make_shared<Routed>();
    routed->at = options_.clock ? options_.clock() : absl::Now();
    for (const router::Choice& c : r->game.choices) routed->masks.push_back(c.mask);
    routed->requests = std::move(r->requests);
    std::vector<std::shared_ptr<const Routed>> before;
    {
      absl::MutexLock lock(&mu_);
      std::deque<std::shared_ptr<const Routed>>& q = recent_[top_k];
      size_t held = 0;
      for (const auto& w : q) held += w->masks.size();
      while (q.size() > 1 &&
             (q.front()->at < routed->at - options_.gap_horizon || held > kGapRequests)) {
        held -= q.front()->masks.size();
        q.pop_front();
      }
      before.assign(q.begin(), q.end());
      q.push_back(std::move(routed));
    }
    CoordinatorObserver::BalanceWindow w;
    w.requests = static_cast<int>(prompts.size());
    // The earlier windows' choices at this window's prices (its tolls and congestion; 0 for a k's
    // first window).
    for (const auto& b : before) {
      w.gap = std::max(
          w.gap, router::EquilibriumGap(b->requests, b->masks, r->tolls, r->game_options) / scale);
    }
    w.gap_toll_free = r->gap_alone / scale;
    std::vector<double> busy;
    for (const WorkerLoad& l : loads) {
      if (l.usable) busy.push_back(l.busy_fraction);
    }
    w.worker_jain = router::JainIndex(busy);
    w.worker_max_mean = router::MaxOverMean(busy);
    observer_->OnBalanceWindow(w);
  }
  return std::move(r->predictions);
}

absl::StatusOr<router::Prediction> AdmissionBalancer::Route(const std::vector<int64_t>& prompt_ids,
                                                            int top_k) {
  auto slot = std::make_shared<Slot>();
  slot->prompt_ids = prompt_ids;
  std::vector<std::shared_ptr<Slot>> window;
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::shared_ptr<Slot>>& open = open_[top_k];
    open.push_back(slot);
    if (open.size() > 1) {
      // A follower: the window's first request routes it.
      if (static_cast<int>(open.size()) >= options_.max_window_requests) cv_.SignalAll();
      while (!slot->done) cv_.Wait(&mu_);
      return std::move(slot->result);
    }
    // The first of a window: wait for the others, then close it.
    const absl::Time close = absl::Now() + options_.window;
    while (static_cast<int>(open_[top_k].size()) < options_.max_window_requests &&
           !cv_.WaitWithDeadline(&mu_, close)) {
    }
    window.swap(open_[top_k]);
    open_.erase(top_k);
  }
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& s : window) prompts.push_back(s->prompt_ids);
  absl::StatusOr<std::vector<router::Prediction>> routed = RouteWindow(prompts, top_k);
  std::vector<absl::StatusOr<router::Prediction>> results;
  if (routed.ok()) {
    for (router::Prediction& p : *routed) results.push_back(std::move(p));
  } else {
    // One request the router refuses must not fail the others of its window: each alone.
    for (const auto& p : prompts) {
      absl::StatusOr<std::vector<router::Prediction>> one = RouteWindow({p}, top_k);
      if (one.ok()) {
        results.push_back(std::move(one->front()));
      } else {
        results.push_back(one.status());
      }
    }
  }
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < window.size(); ++i) {
    window[i]->result = std::move(results[i]);
    window[i]->done = true;
  }
  cv_.SignalAll();
  return std::move(slot->result);
}

}  // namespace swarm::coordinator
