#include "router/sparse.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/block_layout.h"
#include "common/status_macros.h"
#include "model/combine.h"

namespace swarm::router {

const char* CombineName(Combine combine) {
  return combine == Combine::kSequential ? "sequential" : "parallel";
}

absl::StatusOr<Combine> ParseCombine(absl::string_view name) {
  if (name == "sequential") return Combine::kSequential;
  if (name == "parallel") return Combine::kParallel;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown combine mode '", name, "' (expected sequential or parallel)"));
}

absl::StatusOr<std::unique_ptr<SparseExecutor>> SparseExecutor::Create(const model::LayerHost* host,
                                                                       BlockLayout layout,
                                                                       SparsePlan plan) {
  if (host == nullptr) return absl::InvalidArgumentError("SparseExecutor: null layer host");
  if (plan.blocks.empty()) {
    return absl::InvalidArgumentError("sparse plan selects no block");
  }
  if (!plan.weights.empty() && plan.weights.size() != plan.blocks.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sparse plan has ", plan.blocks.size(), " blocks but ", plan.weights.size(), " weights"));
  }
  auto exec = std::unique_ptr<SparseExecutor>(new SparseExecutor());
  for (size_t i = 0; i < plan.blocks.size(); ++i) {
    int b = plan.blocks[i];
    if (b < 0 || b >= layout.num_blocks) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", b, " is outside 0..", layout.num_blocks - 1));
    }
    for (const auto& [other, w] : exec->blocks_) {
      if (other == b) {
        return absl::InvalidArgumentError(absl::StrCat("block ", b, " selected twice"));
      }
    }
    for (int layer : layout.Layers(b)) {
      if (!host->Hosts(layer)) {
        return absl::FailedPreconditionError(
            absl::StrCat("block ", b, ": layer ", layer, " is not loaded on this host"));
      }
    }
    exec->blocks_.push_back({b, plan.weights.empty() ? 1.0f : plan.weights[i]});
  }
  std::sort(exec->blocks_.begin(), exec->blocks_.end());
  exec->host_ = host;
  exec->layout_ = layout;
  exec->combine_ = plan.combine;
  exec->cache_ = host->NewCache();
  return exec;
}

absl::StatusOr<HostTensor> SparseExecutor::Run(const HostTensor& h, int64_t start_pos) {
  if (combine_ == Combine::kSequential) {
    HostTensor x = h;
    for (const auto& [b, w] : blocks_) {
      std::vector<int> layers = layout_.Layers(b);
      ASSIGN_OR_RETURN(HostTensor out, host_->Forward(x, start_pos, layers, cache_.get()));
      ASSIGN_OR_RETURN(x, model::GateResidual(x, std::move(out), w));
    }
    return x;
  }
  std::vector<HostTensor> outs;
  std::vector<float> weights;
  outs.reserve(blocks_.size());
  for (const auto& [b, w] : blocks_) {
    std::vector<int> layers = layout_.Layers(b);
    ASSIGN_OR_RETURN(HostTensor out, host_->Forward(h, start_pos, layers, cache_.get()));
    outs.push_back(std::move(out));
    weights.push_back(w);
  }
  return model::CombineResiduals(h, outs, weights);
}

}  // namespace swarm::router
