#include "coordinator/route.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "proto/layer_ranges.h"

namespace swarm::coordinator {

namespace {

bool Hosts(const RouteCandidate& w, int layer) {
  return std::binary_search(w.layers.begin(), w.layers.end(), layer);
}

int RunLength(const RouteCandidate& w, int layer, int num_layers) {
  int n = 0;
  while (layer + n < num_layers && Hosts(w, layer + n)) ++n;
  return n;
}

}  // namespace

absl::StatusOr<std::vector<Hop>> PlanRoute(int num_layers,
                                           const std::vector<RouteCandidate>& workers) {
  std::vector<Hop> hops;
  for (int layer = 0; layer < num_layers; ++layer) {
    if (!hops.empty()) {
      const RouteCandidate& current = workers[hops.back().worker];
      if (current.usable && Hosts(current, layer)) {
        hops.back().layers.push_back(layer);
        continue;
      }
    }
    int best = -1;
    std::tuple<int, int, int> best_key;
    for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
      const RouteCandidate& w = workers[i];
      if (!w.usable || !Hosts(w, layer)) continue;
      auto key = std::make_tuple(w.load, -RunLength(w, layer, num_layers), i);
      if (best < 0 || key < best_key) {
        best = i;
        best_key = key;
      }
    }
    if (best < 0) return CheckCoverage(num_layers, workers);
    hops.push_back(Hop{best, {layer}});
  }
  return hops;
}

absl::Status CheckCoverage(int num_layers, const std::vector<RouteCandidate>& workers) {
  std::vector<int> missing;
  for (int layer = 0; layer < num_layers; ++layer) {
    bool hosted = false;
    for (const RouteCandidate& w : workers) hosted = hosted || (w.usable && Hosts(w, layer));
    if (!hosted) missing.push_back(layer);
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("layers ", FormatLayers(missing), " of ", num_layers,
                                             " are not hosted by any usable worker"));
}

}  // namespace swarm::coordinator
