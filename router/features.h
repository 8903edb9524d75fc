// The router's view of a prompt: an IDF-weighted mean of the prompt's token embedding rows, taken
// from the model's own embedding table, centred, projected on a PCA basis fitted on the
// calibration prompts, and L2-normalised. No transformer layer runs. The block0 feature
// (HiddenFeature) is the same IDF-weighted mean over the rows of block 0's output instead, for
// callers that have run block 0 (calibration and evaluation).
//
// EmbeddingTable reads rows straight from the checkpoint's memory map (f32, f16 or bf16 stored),
// so the router needs no LibTorch and no ModelEnds at request time; the rows equal
// ModelEnds::EmbeddingRows (tested). Used by the Router (coordinator side), by calibration and by
// evaluation. Immutable after creation; safe to use from any thread.
#ifndef SWARM_ROUTER_FEATURES_H_
#define SWARM_ROUTER_FEATURES_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/checkpoint.h"
#include "model/model_ends.h"
#include "model/safetensors.h"

namespace swarm::router {

class EmbeddingTable {
 public:
  // Finds the token embedding tensor of `checkpoint` (Llama/Mistral/Qwen2 "embed_tokens", GPT-2
  // "wte") and checks its shape against the config. Keeps `checkpoint` alive.
  static absl::StatusOr<std::unique_ptr<EmbeddingTable>> Open(
      std::shared_ptr<const model::Checkpoint> checkpoint);

  int64_t vocab_size() const { return vocab_; }
  int64_t dim() const { return dim_; }
  // acc[0..dim) += weight * row(id). InvalidArgument for an id outside the table.
  absl::Status Accumulate(int64_t id, float weight, float* acc) const;
  // Row `id` as floats (tests).
  absl::StatusOr<std::vector<float>> Row(int64_t id) const;

 private:
  EmbeddingTable() = default;
  std::shared_ptr<const model::Checkpoint> checkpoint_;
  model::TensorView view_;
  int64_t vocab_ = 0;
  int64_t dim_ = 0;
};

// Smoothed inverse document frequency over `prompts`: idf(t) = ln((1 + P) / (1 + df(t))) + 1,
// where df(t) counts the prompts containing t. Ids outside [0, vocab) are ignored. [vocab].
std::vector<float> ComputeIdf(const std::vector<std::vector<int64_t>>& prompts, int64_t vocab);

// Σ idf(t)·row(t) / Σ idf(t) over the prompt's tokens (repeats count). InvalidArgument for an
// empty prompt or an id outside the table; `idf` must have vocab_size entries.
absl::StatusOr<std::vector<float>> RawFeature(const EmbeddingTable& table,
                                              absl::Span<const float> idf,
                                              absl::Span<const int64_t> ids);

// Σ idf(t_i)·rows[i] / Σ idf(t_i): the IDF-weighted mean of one hidden row per prompt token
// (`rows` is [ids.size(), dim] row-major, e.g. block 0's output). InvalidArgument for an empty
// prompt, a row count that is not ids.size(), or an id outside `idf`.
absl::StatusOr<std::vector<float>> HiddenFeature(absl::Span<const float> rows, int64_t dim,
                                                 absl::Span<const float> idf,
                                                 absl::Span<const int64_t> ids);

// Centring and PCA reduction fitted at calibration.
struct FeatureSpace {
  int64_t dim = 0;           // Embedding width d.
  int64_t rank = 0;          // Reduced width r.
  std::vector<float> mean;   // [d]
  std::vector<float> basis;  // [r, d], rows orthonormal.
};

// (raw − mean) projected on the basis, then L2-normalised (left zero when its norm is ~0). [r].
std::vector<float> ProjectFeature(const FeatureSpace& space, absl::Span<const float> raw);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_FEATURES_H_
