// LibTorch stays in this translation unit.
#include "router/calibration/fit.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace swarm::router {

absl::StatusOr<std::vector<float>> FitPcaBasis(const std::vector<float>& centred, int64_t rows,
                                               int64_t dim, int64_t rank) {
  if (rows < 1 || dim < 1 || rank < 1 || rank > dim ||
      static_cast<int64_t>(centred.size()) != rows * dim) {
    return absl::InvalidArgumentError(absl::StrCat("PCA of ", centred.size(), " values as [", rows,
                                                   ", ", dim, "] to rank ", rank));
  }
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor x =
        torch::from_blob(const_cast<float*>(centred.data()), {rows, dim}, torch::kFloat32)
            .to(torch::kFloat64);
    torch::Tensor cov = x.t().matmul(x) / static_cast<double>(std::max<int64_t>(rows - 1, 1));
    auto [evals, evecs] = torch::linalg::eigh(cov, "L");  // Ascending eigenvalues.
    torch::Tensor top = evecs.flip({1}).narrow(1, 0, rank).t().contiguous();  // [rank, dim]
    // Deterministic signs.
    torch::Tensor idx = top.abs().argmax(1);
    torch::Tensor signs = top.gather(1, idx.unsqueeze(1)).sign();
    signs = torch::where(signs == 0, torch::ones_like(signs), signs);
    top = (top * signs).to(torch::kFloat32).contiguous();
    std::vector<float> out(top.data_ptr<float>(), top.data_ptr<float>() + rank * dim);
    return out;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("PCA failed: ", e.what()));
  }
}

absl::StatusOr<GateWeights> FitGate(const std::vector<float>& features, int64_t num_prompts,
                                    int64_t in, int64_t out, const std::vector<GateGroup>& groups,
                                    const GateFitOptions& options, std::vector<float>* temperatures,
                                    GateFitStats* stats) {
  if (num_prompts < 1 || in < 1 || out < 1 ||
      static_cast<int64_t>(features.size()) != num_prompts * in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gate fit: ", features.size(), " feature values for ", num_prompts, " prompts × ", in));
  }
  for (const GateGroup& g : groups) {
    if (g.values.size() != g.columns.size() * num_prompts) {
      return absl::InvalidArgumentError("gate fit: group values do not match its columns");
    }
    for (int c : g.columns) {
      if (c < 0 || c >= out) return absl::InvalidArgumentError("gate fit: column out of range");
    }
  }
  try {
    torch::manual_seed(options.seed);
    torch::nn::Linear l1(in, options.hidden), l2(options.hidden, out);
    torch::Tensor x_all =
        torch::from_blob(const_cast<float*>(features.data()), {num_prompts, in}, torch::kFloat32)
            .clone();
    // Every fifth prompt is held out to pick the checkpoint (when there are enough prompts).
    std::vector<int64_t> train_idx, val_idx;
    std::vector<bool> held(num_prompts, false);
    if (!options.validation_rows.empty()) {
      for (int64_t p : options.validation_rows) {
        if (p >= 0 && p < num_prompts) held[p] = true;
      }
    } else if (num_prompts >= 10) {
      for (int64_t p = 4; p < num_prompts; p += 5) held[p] = true;
    }
    for (int64_t p = 0; p < num_prompts; ++p) (held[p] ? val_idx : train_idx).push_back(p);
    if (train_idx.empty()) {
      return absl::InvalidArgumentError("gate fit: every calibration prompt is held out");
    }
    torch::Tensor ti = torch::tensor(train_idx, torch::kInt64);
    torch::Tensor x = x_all.index_select(0, ti);
    torch::Tensor xv = val_idx.empty()
                           ? torch::Tensor()
                           : x_all.index_select(0, torch::tensor(val_idx, torch::kInt64));
    struct G {
      torch::Tensor cols, values, val_values;
      double sign, scale;
      bool lower_is_better;
    };
    std::vector<G> gs;
    torch::Tensor prior_bias = torch::zeros({out}, torch::kFloat32);
    for (const GateGroup& g : groups) {
      if (g.columns.size() < 2) continue;  // A single choice carries no signal.
      std::vector<int64_t> cols(g.columns.begin(), g.columns.end());
      G t;
      t.cols = torch::tensor(cols, torch::kInt64);
      torch::Tensor v =
          torch::from_blob(const_cast<float*>(g.values.data()),
                           {num_prompts, static_cast<int64_t>(cols.size())}, torch::kFloat32)
              .clone();
      t.values = v.index_select(0, ti);
      if (!val_idx.empty()) t.val_values = v.index_select(0, torch::tensor(val_idx, torch::kInt64));
      t.sign = g.lower_is_better ? -1.0 : 1.0;
      t.scale = g.scale > 0 ? g.scale : 1e-3;
      t.lower_is_better = g.lower_is_better;
      // Start from the static prior: the output bias is the prior's soft-label logit at the
      // final temperature, so the MLP learns a per-prompt correction to it.
      prior_bias.index_put_({t.cols}, t.values.mean(0) * (t.sign / (options.t_end * t.scale)));
      gs.push_back(std::move(t));
    }
    {
      torch::NoGradGuard guard;
      l2->weight.mul_(0.01);
      l2->bias.copy_(prior_bias);
    }
    // Validation score: mean realised damage of the gate's choice relative to the prior's choice,
    // summed over the subset groups; the cross-entropy at the final temperature otherwise.
    auto validate = [&]() -> double {
      if (val_idx.empty()) return 0.0;
      torch::NoGradGuard guard;
      torch::Tensor logits = l2(torch::relu(l1(xv)));
      double score = 0;
      bool has_damage_group = false;
      for (const G& g : gs) has_damage_group = has_damage_group || g.lower_is_better;
      for (const G& g : gs) {
        torch::Tensor sub = logits.index_select(1, g.cols);
        if (g.lower_is_better) {
          torch::Tensor pick = sub.argmax(1, true);
          double chosen = g.val_values.gather(1, pick).mean().item<double>();
          int64_t static_col = g.values.mean(0).argmin().item<int64_t>();
          double st = g.val_values.select(1, static_col).mean().item<double>();
          score += st > 0 ? chosen / st : chosen;
        } else if (!has_damage_group) {
          torch::Tensor target =
              torch::softmax(g.val_values * (g.sign / (options.t_end * g.scale)), 1);
          score -= (target * torch::log_softmax(sub, 1)).sum(1).mean().item<double>();
        }
      }
      return score;
    };
    std::vector<torch::Tensor> params = l1->parameters();
    for (const auto& p : l2->parameters()) params.push_back(p);
    auto snapshot = [&]() {
      std::vector<torch::Tensor> copy;
      for (const auto& p : params) copy.push_back(p.detach().clone());
      return copy;
    };
    std::vector<torch::Tensor> best = snapshot();
    double best_score = validate();
    const double start_score = best_score;
    int best_epoch = 0;
    if (stats != nullptr) {
      stats->train_rows = static_cast<int>(train_idx.size());
      stats->validation_rows = static_cast<int>(val_idx.size());
      stats->start_score = best_score;
    }
    torch::optim::Adam opt(
        params,
        torch::optim::AdamOptions(options.learning_rate).weight_decay(options.weight_decay));
    const int epochs = std::max(1, options.epochs);
    for (int e = 0; e < epochs && !gs.empty(); ++e) {
      double frac = epochs > 1 ? static_cast<double>(e) / (epochs - 1) : 1.0;
      double t_rel = options.t_start * std::pow(options.t_end / options.t_start, frac);
      opt.zero_grad();
      torch::Tensor logits = l2(torch::relu(l1(x)));
      torch::Tensor loss = torch::zeros({}, torch::kFloat32);
      for (const G& g : gs) {
        torch::Tensor target = torch::softmax(g.values * (g.sign / (t_rel * g.scale)), 1).detach();
        torch::Tensor logp = torch::log_softmax(logits.index_select(1, g.cols), 1);
        loss = loss - (target * logp).sum(1).mean();
      }
      loss.backward();
      opt.step();
      if ((e + 1) % 10 == 0 || e + 1 == epochs) {
        double score = validate();
        // A trained checkpoint must beat the untrained gate (the static prior) by a margin, or
        // noise in a small held-out set would pick it.
        if (val_idx.empty() ||
            (score < best_score - 1e-9 && score < start_score * (1 - options.min_improvement))) {
          best_score = score;
          best_epoch = e + 1;
          best = snapshot();
        }
      }
    }
    {
      torch::NoGradGuard guard;
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(best[i]);
    }
    if (stats != nullptr) {
      stats->best_epoch = best_epoch;
      stats->best_score = best_score;
    }
    if (temperatures != nullptr) {
      for (const GateGroup& g : groups) {
        if (g.index >= 0 && g.index < static_cast<int>(temperatures->size())) {
          (*temperatures)[g.index] =
              static_cast<float>(options.t_end * (g.scale > 0 ? g.scale : 1e-3));
        }
      }
    }
    auto to_vec = [](const torch::Tensor& t) {
      torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
      return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    };
    GateWeights w;
    w.in = in;
    w.hidden = options.hidden;
    w.out = out;
    w.w1 = to_vec(l1->weight);
    w.b1 = to_vec(l1->bias);
    w.w2 = to_vec(l2->weight);
    w.b2 = to_vec(l2->bias);
    return w;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("gate fit failed: ", e.what()));
  }
}

}  // namespace swarm::router
