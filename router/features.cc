#include "router/features.h"

#include <cmath>
#include <cstring>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/host_tensor.h"
#include "common/status_macros.h"

namespace swarm::router {

absl::StatusOr<std::unique_ptr<EmbeddingTable>> EmbeddingTable::Open(
    std::shared_ptr<const model::Checkpoint> checkpoint) {
  if (checkpoint == nullptr) return absl::InvalidArgumentError("EmbeddingTable: null checkpoint");
  const model::ModelConfig& config = checkpoint->config();
  const std::vector<std::string> candidates = checkpoint->architecture().TokenEmbeddingNames();
  std::string name;
  for (const std::string& c : candidates) {
    auto resolved = checkpoint->Resolve(c);
    if (resolved.ok()) {
      name = *resolved;
      break;
    }
    if (checkpoint->store().Has(c)) {
      name = c;
      break;
    }
  }
  if (name.empty()) {
    return absl::NotFoundError(absl::StrCat("no token embedding tensor (tried ",
                                            absl::StrJoin(candidates, ", "), ") in ",
                                            checkpoint->dir()));
  }
  ASSIGN_OR_RETURN(model::TensorView view, checkpoint->store().Get(name));
  if (view.shape.size() != 2 || view.shape[1] != config.hidden_size ||
      view.shape[0] < config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("embedding tensor '", name, "' in ", view.file,
                                                   " has shape [", absl::StrJoin(view.shape, ","),
                                                   "], config says [", config.vocab_size, ",",
                                                   config.hidden_size, "]"));
  }
  if (view.dtype != model::StDType::kF32 && view.dtype != model::StDType::kF16 &&
      view.dtype != model::StDType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("embedding tensor '", name, "' in ", view.file,
                                                   " has dtype ", model::StDTypeName(view.dtype),
                                                   "; the router reads F32, F16 or BF16"));
  }
  auto table = std::unique_ptr<EmbeddingTable>(new EmbeddingTable());
  table->checkpoint_ = std::move(checkpoint);
  table->view_ = std::move(view);
  table->vocab_ = table->view_.shape[0];
  table->dim_ = table->view_.shape[1];
  return table;
}

absl::Status EmbeddingTable::Accumulate(int64_t id, float weight, float* acc) const {
  if (id < 0 || id >= vocab_) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is outside the vocabulary (size ", vocab_, ")"));
  }
  const uint8_t* row = view_.data + id * dim_ * model::StDTypeSize(view_.dtype);
  switch (view_.dtype) {
    case model::StDType::kF32: {
      for (int64_t i = 0; i < dim_; ++i) {
        float v;
        std::memcpy(&v, row + 4 * i, 4);
        acc[i] += weight * v;
      }
      break;
    }
    case model::StDType::kF16:
    case model::StDType::kBF16: {
      bool half = view_.dtype == model::StDType::kF16;
      for (int64_t i = 0; i < dim_; ++i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        acc[i] += weight * (half ? HalfToFloat(h) : Bf16ToFloat(h));
      }
      break;
    }
    default:
      return absl::InternalError("unsupported embedding dtype");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> EmbeddingTable::Row(int64_t id) const {
  std::vector<float> row(dim_, 0.0f);
  RETURN_IF_ERROR(Accumulate(id, 1.0f, row.data()));
  return row;
}

std::vector<float> ComputeIdf(const std::vector<std::vector<int64_t>>& prompts, int64_t vocab) {
  std::vector<int64_t> df(vocab, 0);
  for (const auto& p : prompts) {
    std::unordered_set<int64_t> seen;
    for (int64_t id : p) {
      if (id >= 0 && id < vocab && seen.insert(id).second) ++df[id];
    }
  }
  std::vector<float> idf(vocab);
  double n = static_cast<double>(prompts.size());
  for (int64_t t = 0; t < vocab; ++t) {
    idf[t] = static_cast<float>(std::log((1.0 + n) / (1.0 + df[t])) + 1.0);
  }
  return idf;
}

absl::StatusOr<std::vector<float>> RawFeature(const EmbeddingTable& table,
                                              absl::Span<const float> idf,
                                              absl::Span<const int64_t> ids) {
  if (ids.empty()) return absl::InvalidArgumentError("cannot route an empty prompt");
  if (static_cast<int64_t>(idf.size()) != table.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("IDF table has ", idf.size(),
                                                   " entries, the embedding table ",
                                                   table.vocab_size(), " rows"));
  }
  std::vector<float> acc(table.dim(), 0.0f);
  double total = 0;
  for (int64_t id : ids) {
    if (id < 0 || id >= table.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", id, " is outside the vocabulary (size ", table.vocab_size(), ")"));
    }
    float w = idf[id];
    RETURN_IF_ERROR(table.Accumulate(id, w, acc.data()));
    total += w;
  }
  if (total > 0) {
    for (float& v : acc) v = static_cast<float>(v / total);
  }
  return acc;
}

absl::StatusOr<std::vector<float>> HiddenFeature(absl::Span<const float> rows, int64_t dim,
                                                 absl::Span<const float> idf,
                                                 absl::Span<const int64_t> ids) {
  if (ids.empty()) return absl::InvalidArgumentError("cannot route an empty prompt");
  if (dim < 1 || static_cast<int64_t>(rows.size()) != static_cast<int64_t>(ids.size()) * dim) {
    return absl::InvalidArgumentError(absl::StrCat("hidden rows have ", rows.size(),
                                                   " values, expected ", ids.size(), " × ", dim));
  }
  std::vector<double> acc(dim, 0.0);
  double total = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= static_cast<int64_t>(idf.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", ids[t], " is outside the IDF table (size ", idf.size(), ")"));
    }
    const double w = idf[ids[t]];
    const float* row = rows.data() + static_cast<int64_t>(t) * dim;
    for (int64_t i = 0; i < dim; ++i) acc[i] += w * row[i];
    total += w;
  }
  std::vector<float> out(dim);
  for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(total > 0 ? acc[i] / total : 0);
  return out;
}

std::vector<float> ProjectFeature(const FeatureSpace& space, absl::Span<const float> raw) {
  std::vector<float> out(space.rank, 0.0f);
  const int64_t d = space.dim;
  double norm2 = 0;
  for (int64_t r = 0; r < space.rank; ++r) {
    const float* row = space.basis.data() + r * d;
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += static_cast<double>(row[i]) * (raw[i] - space.mean[i]);
    out[r] = static_cast<float>(s);
    norm2 += s * s;
  }
  double norm = std::sqrt(norm2);
  if (norm > 1e-12) {
    for (float& v : out) v = static_cast<float>(v / norm);
  }
  return out;
}

}  // namespace swarm::router
