#include "router/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace swarm::router {
namespace {

// tolls += extra (per block); either may be empty.
absl::Status AddExtraCosts(const std::vector<double>& extra, int num_blocks,
                           std::vector<double>& tolls) {
  if (extra.empty()) return absl::OkStatus();
  if (static_cast<int>(extra.size()) != num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "extra_costs has ", extra.size(), " values, the router has ", num_blocks, " blocks"));
  }
  tolls.resize(num_blocks, 0.0);
  for (int b = 0; b < num_blocks; ++b) tolls[b] += extra[b];
  return absl::OkStatus();
}

}  // namespace

const char* ScoringName(Scoring scoring) {
  switch (scoring) {
    case Scoring::kStatic:
      return "static";
    case Scoring::kNeighbours:
      return "neighbours";
    case Scoring::kGate:
      return "gate";
    case Scoring::kBoth:
      return "both";
    case Scoring::kDefault:
      return "default";
  }
  return "?";
}

absl::StatusOr<Scoring> ParseScoring(absl::string_view name) {
  for (Scoring s : {Scoring::kStatic, Scoring::kNeighbours, Scoring::kGate, Scoring::kBoth,
                    Scoring::kDefault}) {
    if (name == ScoringName(s)) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown scoring '", name, "' (expected static, neighbours, gate, both or default)"));
}

absl::StatusOr<std::unique_ptr<Router>> Router::Load(
    const std::string& path, std::shared_ptr<const model::Checkpoint> checkpoint,
    const RouterOptions& options) {
  ASSIGN_OR_RETURN(RouterData data, LoadRouterData(path));
  auto router = Create(std::move(data), std::move(checkpoint), options);
  if (!router.ok()) return Annotate(router.status(), absl::StrCat("router file ", path));
  return router;
}

absl::StatusOr<std::unique_ptr<Router>> Router::Create(
    RouterData data, std::shared_ptr<const model::Checkpoint> checkpoint,
    const RouterOptions& options) {
  if (checkpoint == nullptr) return absl::InvalidArgumentError("Router: null checkpoint");
  RETURN_IF_ERROR(data.Validate());
  const model::ModelConfig& config = checkpoint->config();
  if (data.fingerprint != config.Fingerprint()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "calibrated for another model (fingerprint '", data.fingerprint, "'), but ",
        checkpoint->dir(), " is '", config.Fingerprint(), "'; recalibrate with swarm calibrate"));
  }
  if (data.num_layers != config.num_layers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "calibrated for ", data.num_layers, " layers, the model has ", config.num_layers));
  }
  if (options.expected_num_blocks > 0 && options.expected_num_blocks != data.num_blocks) {
    return absl::FailedPreconditionError(absl::StrCat(
        "calibrated for N = ", data.num_blocks, " blocks, but N = ", options.expected_num_blocks,
        " is in use; recalibrate with --num-blocks ", options.expected_num_blocks));
  }
  if (data.feature == kFeatureBlock0 && !options.allow_block0_feature) {
    return absl::FailedPreconditionError(
        "calibrated on the block0 feature, which serving does not compute (it routes before "
        "any block runs); recalibrate with --feature embedding");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<EmbeddingTable> table, EmbeddingTable::Open(checkpoint));
  if (static_cast<int64_t>(data.idf.size()) != table->vocab_size() ||
      data.space.dim != table->dim()) {
    return absl::FailedPreconditionError(
        absl::StrCat("feature space is [vocab ", data.idf.size(), ", dim ", data.space.dim,
                     "], the embedding table is [", table->vocab_size(), ", ", table->dim(), "]"));
  }
  return std::unique_ptr<Router>(new Router(std::move(data), std::move(table), options));
}

Router::Router(RouterData data, std::unique_ptr<EmbeddingTable> table, const RouterOptions& options)
    : data_(std::move(data)),
      table_(std::move(table)),
      neighbours_(options.neighbours > 0 ? options.neighbours : data_.neighbours),
      tolls_(data_.num_blocks, data_.keep, options.tolls) {
  groups_.assign(data_.num_blocks + 1, {});
  for (int i = 0; i < data_.num_subsets(); ++i) {
    groups_[PopCount(data_.subsets[i])].push_back(i);
  }
}

double Router::DamageScale(int top_k) const {
  double s = 0;
  if (top_k >= 0 && top_k <= data_.num_blocks) s = data_.damage_scale[top_k];
  if (!(s > 0)) s = data_.damage_scale[data_.block_group()];
  return s > 0 ? s : 1e-3;
}

bool Router::HasSubsets(int top_k) const {
  if (top_k < 0 || top_k > data_.num_blocks || groups_[top_k].empty()) return false;
  return groups_[top_k].size() == CountAdmissible(data_.num_blocks, data_.keep, top_k);
}

bool Router::HasCandidates(int top_k) const {
  return top_k >= 0 && top_k <= data_.num_blocks && !groups_[top_k].empty();
}

absl::StatusOr<std::vector<float>> Router::Features(absl::Span<const int64_t> prompt_ids) const {
  if (data_.feature != kFeatureEmbedding) {
    return absl::FailedPreconditionError(
        absl::StrCat("this router file uses the '", data_.feature,
                     "' feature, which needs block 0's output, not only the prompt ids"));
  }
  ASSIGN_OR_RETURN(std::vector<float> raw, RawFeature(*table_, data_.idf, prompt_ids));
  return ProjectFeature(data_.space, raw);
}

Scoring Router::Resolve(Scoring scoring) const {
  if (scoring == Scoring::kDefault) return has_gate() ? Scoring::kBoth : Scoring::kNeighbours;
  return scoring;
}

std::vector<int> Router::Neighbours(absl::Span<const float> feature, int exclude) const {
  const int P = data_.num_prompts;
  const int64_t r = data_.space.rank;
  std::vector<std::pair<float, int>> sims;
  sims.reserve(P);
  for (int p = 0; p < P; ++p) {
    if (p == exclude) continue;
    const float* f = data_.features.data() + p * r;
    float s = 0;
    for (int64_t i = 0; i < r; ++i) s += f[i] * feature[i];
    sims.push_back({-s, p});  // Ascending: most similar first, ties to the lower index.
  }
  int k = std::min<int>(neighbours_, static_cast<int>(sims.size()));
  std::partial_sort(sims.begin(), sims.begin() + k, sims.end());
  std::vector<int> out(k);
  for (int i = 0; i < k; ++i) out[i] = sims[i].second;
  return out;
}

absl::StatusOr<Candidates> Router::Score(absl::Span<const float> feature, int top_k,
                                         Scoring scoring, int exclude) const {
  RETURN_IF_ERROR(ValidateTopK(top_k, data_.num_blocks, data_.keep));
  if (static_cast<int64_t>(feature.size()) != data_.space.rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        "feature has ", feature.size(), " values, the router expects ", data_.space.rank));
  }
  scoring = Resolve(scoring);
  if ((scoring == Scoring::kGate || scoring == Scoring::kBoth) && !has_gate()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "scoring '", ScoringName(scoring),
        "' needs the MLP gate; this router file has none (calibrate with --fit-gate)"));
  }
  const int N = data_.num_blocks;
  const int S = data_.num_subsets();
  Candidates c;
  c.num_blocks = N;
  c.top_k = top_k;
  c.keep = data_.keep;
  const bool explicit_form = HasCandidates(top_k);
  const std::vector<int>& group = groups_[top_k];

  // Neighbours (+ static prior) estimate.
  auto neighbour_estimate = [&](bool use_neighbours) {
    std::vector<double> est;
    std::vector<int> nn;
    if (use_neighbours) nn = Neighbours(feature, exclude);
    double beta = use_neighbours && !nn.empty() ? data_.blend[top_k] : 1.0;
    if (explicit_form) {
      for (int idx : group) {
        double m = 0;
        for (int p : nn) m += data_.subset_damage[static_cast<int64_t>(p) * S + idx];
        if (!nn.empty()) m /= nn.size();
        est.push_back((1 - beta) * m + beta * data_.subset_prior[idx]);
      }
    } else {
      for (int b = 0; b < N; ++b) {
        double m = 0;
        for (int p : nn) m += data_.skip_damage[static_cast<int64_t>(p) * N + b];
        if (!nn.empty()) m /= nn.size();
        est.push_back((1 - beta) * m + beta * data_.skip_prior[b]);
      }
    }
    return est;
  };
  // Gate estimate: with soft labels softmax(−damage / T), the fitted logits approximate
  // −damage / T up to a constant, so −T·log_softmax is a damage estimate in nats (shifted by a
  // per-prompt constant that does not change the choice).
  auto gate_estimate = [&]() {
    std::vector<float> logits = data_.gate->Forward(feature.data());
    std::vector<double> est;
    std::vector<int> cols;
    double t;
    if (explicit_form) {
      cols = group;
      t = data_.gate_temperature[top_k];
    } else {
      for (int b = 0; b < N; ++b) cols.push_back(S + b);
      t = data_.gate_temperature[data_.block_group()];
    }
    double mx = -1e30;
    for (int col : cols) mx = std::max<double>(mx, logits[col]);
    double lse = 0;
    for (int col : cols) lse += std::exp(logits[col] - mx);
    lse = mx + std::log(lse);
    for (int col : cols) {
      double logp = logits[col] - lse;
      // Subsets: damage ≈ −T log p. Blocks (importance: the damage of skipping): ≈ +T log p.
      est.push_back(explicit_form ? -t * logp : t * logp);
    }
    return est;
  };

  std::vector<double> est;
  switch (scoring) {
    case Scoring::kStatic:
      est = neighbour_estimate(false);
      break;
    case Scoring::kNeighbours:
      est = neighbour_estimate(true);
      break;
    case Scoring::kGate:
      est = gate_estimate();
      break;
    case Scoring::kBoth: {
      est = neighbour_estimate(true);
      std::vector<double> g = gate_estimate();
      // Align the gate's arbitrary offset to the neighbours' mean before averaging.
      double me = std::accumulate(est.begin(), est.end(), 0.0) / est.size();
      double mg = std::accumulate(g.begin(), g.end(), 0.0) / g.size();
      for (size_t i = 0; i < est.size(); ++i) est[i] = 0.5 * est[i] + 0.5 * (g[i] - mg + me);
      break;
    }
    case Scoring::kDefault:
      break;
  }
  if (explicit_form) {
    for (size_t i = 0; i < group.size(); ++i) {
      c.masks.push_back(data_.subsets[group[i]]);
      c.cost.push_back(est[i]);
    }
  } else {
    c.importance = std::move(est);
  }
  return c;
}

Prediction Router::MakePrediction(const Choice& choice, const Candidates& candidates,
                                  absl::Span<const double> tolls) const {
  Prediction p;
  p.blocks = MaskToBlocks(choice.mask);
  p.weights.assign(p.blocks.size(), 1.0f);
  p.expected_kl = choice.base_cost;
  if (!tolls.empty()) {
    for (int b : p.blocks) p.toll += tolls[b];
  }
  p.basis = candidates.additive() ? "blocks" : "subsets";
  return p;
}

absl::StatusOr<Prediction> Router::Predict(absl::Span<const int64_t> prompt_ids, int top_k,
                                           const PredictOptions& options) const {
  RETURN_IF_ERROR(ValidateTopK(top_k, data_.num_blocks, data_.keep));
  ASSIGN_OR_RETURN(std::vector<float> feature, Features(prompt_ids));
  ASSIGN_OR_RETURN(Candidates c, Score(feature, top_k, options.scoring));
  std::vector<double> tolls;
  if (options.use_tolls) tolls = Tolls();
  RETURN_IF_ERROR(AddExtraCosts(options.extra_costs, data_.num_blocks, tolls));
  Choice choice = ChooseBest(c, tolls);
  return MakePrediction(choice, c, tolls);
}

absl::StatusOr<Prediction> Router::Route(absl::Span<const int64_t> prompt_ids, int top_k,
                                         Scoring scoring) {
  RETURN_IF_ERROR(ValidateTopK(top_k, data_.num_blocks, data_.keep));
  ASSIGN_OR_RETURN(std::vector<float> feature, Features(prompt_ids));
  ASSIGN_OR_RETURN(Candidates c, Score(feature, top_k, scoring));
  absl::MutexLock lock(&mu_);
  std::vector<double> tolls = tolls_.tolls();
  Choice choice = ChooseBest(c, tolls);
  tolls_.Observe(choice.mask, top_k, DamageScale(top_k));
  return MakePrediction(choice, c, tolls);
}

absl::StatusOr<BatchResult> Router::BalanceBatch(const std::vector<std::vector<int64_t>>& prompts,
                                                 int top_k, const BatchOptions& options) {
  RETURN_IF_ERROR(ValidateTopK(top_k, data_.num_blocks, data_.keep));
  std::vector<Candidates> requests;
  requests.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto feature = Features(prompts[i]);
    if (!feature.ok()) return Annotate(feature.status(), absl::StrCat("request ", i));
    ASSIGN_OR_RETURN(Candidates c, Score(*feature, top_k, options.scoring));
    requests.push_back(std::move(c));
  }
  std::vector<double> tolls;
  if (options.use_tolls) tolls = Tolls();
  RETURN_IF_ERROR(AddExtraCosts(options.extra_costs, data_.num_blocks, tolls));
  const double scale = DamageScale(top_k);
  GameOptions game;
  game.congestion = options.congestion * scale;
  game.t_start = options.t_start * scale;
  game.anneal_rounds = options.anneal_rounds;
  game.max_rounds = options.max_rounds;
  game.seed = options.seed;
  game.resource = options.resource;
  BatchResult result;
  result.game = SolveCongestionGame(requests, tolls, game);
  std::vector<double> alone_usage(data_.num_blocks, 0.0);
  std::vector<BlockMask> alone_masks;
  for (size_t i = 0; i < requests.size(); ++i) {
    result.predictions.push_back(MakePrediction(result.game.choices[i], requests[i], tolls));
    result.mean_expected_kl += result.game.choices[i].base_cost;
    Choice alone = ChooseBest(requests[i], tolls);
    result.mean_expected_kl_alone += alone.base_cost;
    for (int b : MaskToBlocks(alone.mask)) alone_usage[b] += 1;
    alone_masks.push_back(ChooseBest(requests[i], {}).mask);
  }
  result.gap_alone = EquilibriumGap(requests, alone_masks, tolls, game);
  if (!requests.empty()) {
    result.mean_expected_kl /= requests.size();
    result.mean_expected_kl_alone /= requests.size();
  }
  std::vector<double> free_usage;
  for (int b = 0; b < data_.num_blocks; ++b) {
    if (!(data_.keep & (BlockMask{1} << b))) free_usage.push_back(alone_usage[b]);
  }
  result.jain_alone = JainIndex(free_usage);
  if (options.observe) {
    absl::MutexLock lock(&mu_);
    for (const Choice& c : result.game.choices) tolls_.Observe(c.mask, top_k, scale);
  }
  result.requests = std::move(requests);
  result.tolls = std::move(tolls);
  result.game_options = std::move(game);
  return result;
}

void Router::Observe(const Prediction& prediction) {
  BlockMask mask = BlocksToMask(prediction.blocks);
  int k = static_cast<int>(prediction.blocks.size());
  absl::MutexLock lock(&mu_);
  tolls_.Observe(mask, k, DamageScale(k));
}

std::vector<double> Router::Tolls() const {
  absl::MutexLock lock(&mu_);
  return tolls_.tolls();
}

Router::UsageStats Router::Usage() const {
  absl::MutexLock lock(&mu_);
  UsageStats s;
  s.requests = tolls_.requests();
  s.usage = tolls_.usage();
  s.tolls = tolls_.tolls();
  s.jain = tolls_.Jain();
  s.max_over_mean = tolls_.MaxOverMean();
  return s;
}

void Router::ResetTolls() {
  absl::MutexLock lock(&mu_);
  tolls_.Reset();
}

void Router::SetTollOptions(const TollOptions& options) {
  absl::MutexLock lock(&mu_);
  tolls_ = TollBook(data_.num_blocks, data_.keep, options);
}

}  // namespace swarm::router
