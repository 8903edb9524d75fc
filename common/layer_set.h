// Layer sets as operators write them ("0-3,5,7-8": inclusive ranges) and as the wire carries them
// (LayerRange, half-open). Used by swarm-worker's --layers flag, the coordinator's logs and Status,
// and `swarm status`. Pure functions; thread-safe.
#ifndef SWARM_COMMON_LAYER_SET_H_
#define SWARM_COMMON_LAYER_SET_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace swarm {

// Parses "A-B,C,D-E" (inclusive ranges, any order) into sorted unique layers, each below
// `num_layers`. InvalidArgument naming the bad element.
absl::StatusOr<std::vector<int>> ParseLayers(absl::string_view text, int num_layers);

// Sorted unique layers → half-open runs [begin, end) of consecutive layers.
std::vector<std::pair<int, int>> LayerRuns(absl::Span<const int> layers);

// Sorted unique layers → "0-3,5" (inclusive ranges); "" for none.
std::string FormatLayers(absl::Span<const int> layers);

}  // namespace swarm

#endif  // SWARM_COMMON_LAYER_SET_H_
