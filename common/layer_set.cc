#include "common/layer_set.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace swarm {

absl::StatusOr<std::vector<int>> ParseLayers(absl::string_view text, int num_layers) {
  std::vector<int> layers;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    std::vector<absl::string_view> ends = absl::StrSplit(part, absl::MaxSplits('-', 1));
    int a = 0, b = 0;
    if (!absl::SimpleAtoi(ends[0], &a) || (ends.size() == 2 && !absl::SimpleAtoi(ends[1], &b))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layers '", text, "': '", part, "' is not a layer or an inclusive range like 0-3"));
    }
    if (ends.size() == 1) b = a;
    if (a < 0 || b < a || b >= num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layers '", text, "': '", part,
                                                     "' is outside 0-", num_layers - 1,
                                                     " (the model has ", num_layers, " layers)"));
    }
    for (int l = a; l <= b; ++l) layers.push_back(l);
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  return layers;
}

std::vector<std::pair<int, int>> LayerRuns(absl::Span<const int> layers) {
  std::vector<std::pair<int, int>> runs;
  for (int l : layers) {
    if (!runs.empty() && runs.back().second == l) {
      runs.back().second = l + 1;
    } else {
      runs.emplace_back(l, l + 1);
    }
  }
  return runs;
}

std::string FormatLayers(absl::Span<const int> layers) {
  std::vector<std::string> parts;
  for (auto [begin, end] : LayerRuns(layers)) {
    parts.push_back(end - begin == 1 ? absl::StrCat(begin) : absl::StrCat(begin, "-", end - 1));
  }
  return absl::StrJoin(parts, ",");
}

}  // namespace swarm
