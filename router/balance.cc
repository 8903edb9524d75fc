#include "router/balance.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace swarm::router {
namespace {

double Extra(absl::Span<const double> extra, int b) { return extra.empty() ? 0.0 : extra[b]; }

// The resource block b loads (GameOptions::resource).
int Resource(const GameOptions& o, int b) {
  return static_cast<size_t>(b) < o.resource.size() && o.resource[b] >= 0 ? o.resource[b] : b;
}

// Uses of each resource by the free blocks of `masks` [N].
std::vector<double> ResourceCounts(const std::vector<BlockMask>& masks, int n, BlockMask keep,
                                   const GameOptions& o) {
  std::vector<double> rc(n, 0.0);
  for (BlockMask m : masks) {
    for (int b = 0; b < n; ++b) {
      if (!(keep & (BlockMask{1} << b)) && ((m >> b) & 1)) rc[Resource(o, b) % n] += 1;
    }
  }
  return rc;
}

double MaskExtra(BlockMask mask, absl::Span<const double> extra) {
  if (extra.empty()) return 0;
  double s = 0;
  for (int b = 0; b < static_cast<int>(extra.size()); ++b) {
    if (mask & (BlockMask{1} << b)) s += extra[b];
  }
  return s;
}

// Additive form: the kept blocks plus the `need` free blocks with the highest score.
Choice ChooseAdditive(const Candidates& c, absl::Span<const double> extra,
                      const std::vector<double>* noise) {
  std::vector<std::pair<double, int>> scored;
  for (int b = 0; b < c.num_blocks; ++b) {
    if (c.keep & (BlockMask{1} << b)) continue;
    double s = c.importance[b] - Extra(extra, b);
    if (noise != nullptr) s += (*noise)[b];
    scored.push_back({-s, b});  // Ascending: best first, ties to the lower block.
  }
  std::sort(scored.begin(), scored.end());
  int need = c.top_k - PopCount(c.keep);
  Choice choice;
  choice.mask = c.keep;
  for (int i = 0; i < need && i < static_cast<int>(scored.size()); ++i) {
    choice.mask |= BlockMask{1} << scored[i].second;
  }
  choice.base_cost = BaseCost(c, choice.mask);
  choice.total_cost = choice.base_cost + MaskExtra(choice.mask, extra);
  return choice;
}

}  // namespace

double BaseCost(const Candidates& c, BlockMask mask) {
  if (c.additive()) {
    double s = 0;
    for (int b = 0; b < c.num_blocks; ++b) {
      BlockMask bit = BlockMask{1} << b;
      if (!(c.keep & bit) && !(mask & bit)) s += c.importance[b];
    }
    return s;
  }
  for (size_t i = 0; i < c.masks.size(); ++i) {
    if (c.masks[i] == mask) return c.cost[i];
  }
  return std::numeric_limits<double>::infinity();
}

Choice ChooseBest(const Candidates& c, absl::Span<const double> extra) {
  if (c.additive()) return ChooseAdditive(c, extra, nullptr);
  Choice best;
  best.total_cost = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < c.masks.size(); ++i) {
    double total = c.cost[i] + MaskExtra(c.masks[i], extra);
    if (total < best.total_cost) {
      best.mask = c.masks[i];
      best.base_cost = c.cost[i];
      best.total_cost = total;
    }
  }
  return best;
}

Choice ChooseSoft(const Candidates& c, absl::Span<const double> extra, double temperature,
                  std::mt19937_64& rng) {
  if (temperature <= 0) return ChooseBest(c, extra);
  std::uniform_real_distribution<double> u(1e-12, 1.0);
  if (c.additive()) {
    std::vector<double> noise(c.num_blocks);
    for (double& g : noise) g = -temperature * std::log(-std::log(u(rng)));
    return ChooseAdditive(c, extra, &noise);
  }
  std::vector<double> total(c.masks.size());
  double lo = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < c.masks.size(); ++i) {
    total[i] = c.cost[i] + MaskExtra(c.masks[i], extra);
    lo = std::min(lo, total[i]);
  }
  std::vector<double> w(total.size());
  for (size_t i = 0; i < total.size(); ++i) w[i] = std::exp(-(total[i] - lo) / temperature);
  std::discrete_distribution<size_t> pick(w.begin(), w.end());
  size_t i = pick(rng);
  return Choice{c.masks[i], c.cost[i], total[i]};
}

double JainIndex(absl::Span<const double> x) {
  double s = 0, s2 = 0;
  for (double v : x) {
    s += v;
    s2 += v * v;
  }
  if (x.empty() || s2 <= 0) return 1.0;
  return s * s / (static_cast<double>(x.size()) * s2);
}

BlockMask MostCommon(absl::Span<const BlockMask> masks) {
  std::map<BlockMask, int> count;
  for (BlockMask m : masks) count[m]++;
  BlockMask best = 0;
  int most = 0;
  for (auto [m, c] : count) {
    if (c > most) {
      most = c;
      best = m;
    }
  }
  return best;
}

std::vector<int> SkewedStream(absl::Span<const BlockMask> choices, double skew, uint64_t seed,
                              size_t length) {
  std::vector<int> stream;
  if (choices.empty()) return stream;
  const BlockMask popular = MostCommon(choices);
  std::vector<double> w;
  for (BlockMask m : choices) w.push_back(m == popular ? skew : 1.0);
  std::mt19937_64 rng(seed);
  std::discrete_distribution<int> draw(w.begin(), w.end());
  stream.resize(length);
  for (int& s : stream) s = draw(rng);
  return stream;
}

double MaxOverMean(absl::Span<const double> x) {
  if (x.empty()) return 1.0;
  double s = 0, m = 0;
  for (double v : x) {
    s += v;
    m = std::max(m, v);
  }
  if (s <= 0) return 1.0;
  return m / (s / static_cast<double>(x.size()));
}

double EquilibriumGap(const std::vector<Candidates>& requests, const std::vector<BlockMask>& masks,
                      absl::Span<const double> tolls, const GameOptions& options) {
  if (requests.empty() || masks.size() != requests.size()) return 0;
  const int n = requests[0].num_blocks;
  const BlockMask keep = requests[0].keep;
  const std::vector<double> count = ResourceCounts(masks, n, keep, options);
  std::vector<double> extra(n, 0.0);
  double gap = 0;
  for (size_t r = 0; r < requests.size(); ++r) {
    const std::vector<double> own = ResourceCounts({masks[r]}, n, keep, options);
    for (int b = 0; b < n; ++b) {
      const int res = Resource(options, b) % n;
      const double others = count[res] - own[res];
      extra[b] =
          (keep & (BlockMask{1} << b)) ? 0.0 : Extra(tolls, b) + options.congestion * (others + 1);
    }
    const double cost = BaseCost(requests[r], masks[r]) + MaskExtra(masks[r], extra);
    gap = std::max(gap, cost - ChooseBest(requests[r], extra).total_cost);
  }
  return gap;
}

GameResult SolveCongestionGame(const std::vector<Candidates>& requests,
                               absl::Span<const double> tolls, const GameOptions& options) {
  GameResult result;
  if (requests.empty()) return result;
  const int n = requests[0].num_blocks;
  const BlockMask keep = requests[0].keep;
  auto is_free = [&](int b) { return !(keep & (BlockMask{1} << b)); };
  std::vector<double> count(n, 0.0);      // Per block.
  std::vector<double> res_count(n, 0.0);  // Per resource, free blocks only.
  auto add = [&](BlockMask m, double d) {
    for (int b = 0; b < n; ++b) {
      if (!(m & (BlockMask{1} << b))) continue;
      count[b] += d;
      if (is_free(b)) res_count[Resource(options, b) % n] += d;
    }
  };
  // Extra cost for a request joining, given the others' counts.
  std::vector<double> extra(n, 0.0);
  auto fill_extra = [&]() {
    for (int b = 0; b < n; ++b) {
      extra[b] = is_free(b) ? Extra(tolls, b) +
                                  options.congestion * (res_count[Resource(options, b) % n] + 1)
                            : 0.0;
    }
  };
  const size_t R = requests.size();
  result.choices.resize(R);
  // Arrival order: each request best-responds to those already placed.
  for (size_t r = 0; r < R; ++r) {
    fill_extra();
    result.choices[r] = ChooseBest(requests[r], extra);
    add(result.choices[r].mask, 1);
  }
  std::mt19937_64 rng(options.seed);
  double t = options.t_start;
  for (int round = 0; round < options.anneal_rounds && t > 0; ++round, t *= 0.5) {
    for (size_t r = 0; r < R; ++r) {
      add(result.choices[r].mask, -1);
      fill_extra();
      result.choices[r] = ChooseSoft(requests[r], extra, t, rng);
      add(result.choices[r].mask, 1);
    }
  }
  // Pure best responses: a request moves only for a strict improvement, so the potential
  // strictly decreases and the loop ends.
  const double kEps = 1e-12;
  for (result.rounds = 0; result.rounds < options.max_rounds;) {
    ++result.rounds;
    bool moved = false;
    for (size_t r = 0; r < R; ++r) {
      add(result.choices[r].mask, -1);
      fill_extra();
      Choice best = ChooseBest(requests[r], extra);
      double current = result.choices[r].base_cost + MaskExtra(result.choices[r].mask, extra);
      if (best.total_cost < current - kEps * std::max(1.0, std::fabs(current))) {
        result.choices[r] = best;
        moved = true;
      }
      add(result.choices[r].mask, 1);
    }
    if (!moved) {
      result.converged = true;
      break;
    }
  }
  // Final costs, gap and potential.
  std::vector<BlockMask> masks;
  for (size_t r = 0; r < R; ++r) {
    add(result.choices[r].mask, -1);
    fill_extra();
    Choice& c = result.choices[r];
    c.total_cost = c.base_cost + MaskExtra(c.mask, extra);
    add(c.mask, 1);
    masks.push_back(c.mask);
  }
  result.equilibrium_gap = EquilibriumGap(requests, masks, tolls, options);
  double potential = 0;
  for (const Choice& c : result.choices) potential += c.base_cost;
  std::vector<double> free_usage;
  for (int b = 0; b < n; ++b) {
    if (!is_free(b)) continue;
    potential += Extra(tolls, b) * count[b];
    free_usage.push_back(count[b]);
  }
  for (int res = 0; res < n; ++res) {
    potential += options.congestion * res_count[res] * (res_count[res] + 1) / 2.0;
  }
  result.potential = potential;
  result.usage = count;
  result.jain = JainIndex(free_usage);
  result.max_over_mean = MaxOverMean(free_usage);
  return result;
}

TollBook::TollBook(int num_blocks, BlockMask keep, TollOptions options)
    : num_blocks_(num_blocks), keep_(keep), options_(std::move(options)) {
  shares_.assign(num_blocks_, 0.0);
  double total = 0;
  for (int b = 0; b < num_blocks_; ++b) {
    if (keep_ & (BlockMask{1} << b)) continue;
    double s = options_.target_shares.size() == static_cast<size_t>(num_blocks_)
                   ? std::max(0.0, options_.target_shares[b])
                   : 1.0;
    shares_[b] = s;
    total += s;
  }
  for (double& s : shares_) s = total > 0 ? s / total : 0.0;
  Reset();
}

void TollBook::Reset() {
  tolls_.assign(num_blocks_, 0.0);
  usage_.assign(num_blocks_, 0.0);
  target_.assign(num_blocks_, 0.0);
  requests_ = 0;
}

void TollBook::Observe(BlockMask mask, int top_k, double scale) {
  ++requests_;
  const int need = top_k - PopCount(keep_);
  double sum = 0;
  int free = 0;
  for (int b = 0; b < num_blocks_; ++b) {
    bool used = (mask >> b) & 1;
    if (keep_ & (BlockMask{1} << b)) {
      usage_[b] += 1;
      target_[b] += 1;
      continue;
    }
    double target = need * shares_[b];
    usage_[b] += used ? 1.0 : 0.0;
    target_[b] += target;
    tolls_[b] += options_.rate * scale * ((used ? 1.0 : 0.0) - target);
    sum += tolls_[b];
    ++free;
  }
  // Only differences between free blocks change choices of a fixed size; centring keeps the
  // tolls from drifting.
  double mean = free > 0 ? sum / free : 0.0;
  double cap =
      std::isinf(options_.max_toll) ? options_.max_toll : options_.max_toll * std::max(scale, 0.0);
  for (int b = 0; b < num_blocks_; ++b) {
    if (keep_ & (BlockMask{1} << b)) continue;
    tolls_[b] = std::clamp(tolls_[b] - mean, -cap, cap);
  }
}

std::vector<double> TollBook::RelativeUsage() const {
  std::vector<double> x;
  for (int b = 0; b < num_blocks_; ++b) {
    if ((keep_ & (BlockMask{1} << b)) || target_[b] <= 0) continue;
    x.push_back(usage_[b] / target_[b]);
  }
  return x;
}

double TollBook::Jain() const { return JainIndex(RelativeUsage()); }
double TollBook::MaxOverMean() const { return router::MaxOverMean(RelativeUsage()); }

}  // namespace swarm::router
