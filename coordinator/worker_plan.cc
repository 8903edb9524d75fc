#include "coordinator/worker_plan.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/layer_set.h"

namespace swarm::coordinator {

namespace {

bool Hosts(const WorkerCandidate& w, int layer) {
  return std::binary_search(w.layers.begin(), w.layers.end(), layer);
}

// Consecutive entries of `layers` from index i that `w` hosts.
int RunLength(const WorkerCandidate& w, absl::Span<const int> layers, size_t i) {
  int n = 0;
  while (i + n < layers.size() && Hosts(w, layers[i + n])) ++n;
  return n;
}

}  // namespace

absl::StatusOr<std::vector<Hop>> PlanHops(absl::Span<const int> layers,
                                          const std::vector<WorkerCandidate>& workers) {
  std::vector<Hop> hops;
  for (size_t i = 0; i < layers.size(); ++i) {
    const int layer = layers[i];
    if (!hops.empty()) {
      const WorkerCandidate& current = workers[hops.back().worker];
      if (current.usable && Hosts(current, layer)) {
        hops.back().layers.push_back(layer);
        continue;
      }
    }
    int best = -1;
    std::tuple<int, int, int> best_key;
    for (int w = 0; w < static_cast<int>(workers.size()); ++w) {
      const WorkerCandidate& c = workers[w];
      if (!c.usable || !Hosts(c, layer)) continue;
      auto key = std::make_tuple(c.load, -RunLength(c, layers, i), w);
      if (best < 0 || key < best_key) {
        best = w;
        best_key = key;
      }
    }
    if (best < 0) {
      std::vector<int> missing;
      for (int l : layers) {
        bool hosted = false;
        for (const WorkerCandidate& c : workers) hosted = hosted || (c.usable && Hosts(c, l));
        if (!hosted) missing.push_back(l);
      }
      return absl::UnavailableError(
          absl::StrCat("layers ", FormatLayers(missing), " are not hosted by any usable worker"));
    }
    hops.push_back(Hop{best, {layer}});
  }
  return hops;
}

absl::StatusOr<std::vector<Hop>> PlanHops(int num_layers,
                                          const std::vector<WorkerCandidate>& workers) {
  std::vector<int> all(num_layers);
  for (int l = 0; l < num_layers; ++l) all[l] = l;
  absl::StatusOr<std::vector<Hop>> hops = PlanHops(all, workers);
  if (!hops.ok()) return CheckCoverage(num_layers, workers);
  return hops;
}

int PickReplica(absl::Span<const int> layers, const std::vector<WorkerCandidate>& workers) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
    const WorkerCandidate& w = workers[i];
    if (!w.usable) continue;
    const bool hosts = std::all_of(layers.begin(), layers.end(), [&](int l) {
      return std::binary_search(w.layers.begin(), w.layers.end(), l);
    });
    if (hosts && (best < 0 || w.load < workers[best].load)) best = i;
  }
  return best;
}

absl::Status CheckCoverage(int num_layers, const std::vector<WorkerCandidate>& workers) {
  std::vector<int> missing;
  for (int layer = 0; layer < num_layers; ++layer) {
    bool hosted = false;
    for (const WorkerCandidate& w : workers) hosted = hosted || (w.usable && Hosts(w, layer));
    if (!hosted) missing.push_back(layer);
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("layers ", FormatLayers(missing), " of ", num_layers,
                                             " are not hosted by any usable worker"));
}

}  // namespace swarm::coordinator
