#include "model/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace swarm::model {

absl::Status SamplingParams::Validate() const {
  if (max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 0, got ", max_new_tokens));
  }
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("temperature must be >= 0, got ", temperature));
  }
  if (top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  }
  if (stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxStopStrings, " stop strings, got ", stop.size()));
  }
  for (const std::string& s : stop) {
    if (s.empty()) return absl::InvalidArgumentError("a stop string is empty");
    if (s.size() > static_cast<size_t>(kMaxStopBytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a stop string has ", s.size(), " bytes; at most ", kMaxStopBytes));
    }
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in 0..", kMaxTopLogprobs, ", got ", top_logprobs));
  }
  if (top_logprobs > 0 && !logprobs) {
    return absl::InvalidArgumentError("top_logprobs needs logprobs");
  }
  return absl::OkStatus();
}

int64_t FirstArgmax(absl::Span<const float> logits) {
  const int64_t n = static_cast<int64_t>(logits.size());
  if (n == 0) return 0;
  const float* x = logits.data();
  // The maximum: lane j of 16 keeps max(x[j], x[j + 16], ...) by `a > b ? a : b`, which skips NaNs
  // (every comparison with one is false) as max_element's `<` does, and compiles to packed max
  // instructions. Every lane starts from x[0]; if that is a NaN, no comparison ever succeeds and
  // the lanes keep it.
  constexpr int kLanes = 16;
  float lanes[kLanes];
  for (float& l : lanes) l = x[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
  }
  float m = lanes[0];
  for (int j = 1; j < kLanes; ++j) m = lanes[j] > m ? lanes[j] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  // Its first occurrence (±0 compare equal, as for max_element). A NaN maximum (x[0] NaN, and
  // nothing compared larger) equals nothing: index 0, as max_element returns.
  for (int64_t k = 0; k < n; ++k) {
    if (x[k] == m) return k;
  }
  return 0;
}

float LogSoftmaxAt(absl::Span<const float> logits, int64_t id, int top_n,
                   std::vector<TokenLogprob>* top) {
  const float max_logit = logits[FirstArgmax(logits)];
  double total = 0.0;
  for (float v : logits) total += std::exp(static_cast<double>(v) - max_logit);
  const double log_z = max_logit + std::log(total);
  if (top != nullptr) {
    top->clear();
    const int64_t n = static_cast<int64_t>(logits.size());
    const int64_t k = std::min<int64_t>(std::max(top_n, 0), n);
    std::vector<int64_t> order(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < k; ++i) {
      TokenLogprob& t = top->emplace_back();
      t.id = order[i];
      t.logprob = static_cast<float>(static_cast<double>(logits[order[i]]) - log_z);
    }
  }
  return static_cast<float>(static_cast<double>(logits[id]) - log_z);
}

namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

double UniformDraw(uint64_t seed, int64_t position) {
  const uint64_t bits = SplitMix64(seed ^ SplitMix64(static_cast<uint64_t>(position)));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {}

int64_t Sampler::Sample(absl::Span<const float> logits, int64_t position) {
  const int64_t n = static_cast<int64_t>(logits.size());
  if (params_.temperature == 0.0f) {
    // First maximum: ties go to the lowest id, as torch.argmax does.
    return FirstArgmax(logits);
  }
  scratch_.clear();
  scratch_.reserve(n);
  for (int64_t i = 0; i < n; ++i) scratch_.emplace_back(logits[i] / params_.temperature, i);
  auto by_logit = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = n;
  if (params_.top_k > 0 && params_.top_k < n) {
    keep = params_.top_k;
    std::partial_sort(scratch_.begin(), scratch_.begin() + keep, scratch_.end(), by_logit);
    scratch_.resize(keep);
  } else {
    std::sort(scratch_.begin(), scratch_.end(), by_logit);
  }
  // Softmax over the kept logits (sorted descending), then nucleus filtering.
  const float max_logit = scratch_[0].first;
  double total = 0.0;
  for (auto& [v, id] : scratch_) {
    v = std::exp(v - max_logit);
    total += v;
  }
  if (params_.top_p < 1.0f) {
    double cum = 0.0;
    int64_t cut = 0;
    while (cut < keep) {
      cum += scratch_[cut].first / total;
      ++cut;
      if (cum >= params_.top_p) break;
    }
    keep = cut;
    total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += scratch_[i].first;
  }
  const double u = UniformDraw(params_.seed, position) * total;
  double cum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += scratch_[i].first;
    if (u < cum) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

}  // namespace swarm::model
