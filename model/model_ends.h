// The two ends of the model around the layers: token (and learned position) embeddings, the final
// norm and the LM head. The coordinator and the in-process engine host them (embed a step's
// tokens, turn the last layer's output into logits); the router reads embedding rows for its
// features. Torch-free interface; the family's pieces come from the checkpoint's architecture.
//
// Threading: every method is const and thread-safe.
#ifndef SWARM_MODEL_MODEL_ENDS_H_
#define SWARM_MODEL_MODEL_ENDS_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/cpu_matmul.h"
#include "model/weights.h"

namespace swarm::model {

// Rows one Logits call computes batch-invariantly on the CPU (below); more go through gemm, faster
// for a long sequence's every row. At least the sequences of any step the scheduler batches by
// default (max_batch_sequences 64); LastRowLogits splits beyond it.
inline constexpr int64_t kInvariantHeadRows = 256;

class ModelEnds {
 public:
  // Loads the token (and GPT-2 position) embeddings, final norm and LM head (the embeddings when
  // tied and lm_head.weight is absent). Errors name the tensor at fault, or the device.
  static absl::StatusOr<std::unique_ptr<ModelEnds>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, const LoadOptions& options);
  virtual ~ModelEnds() = default;

  virtual const ModelConfig& config() const = 0;
  virtual int64_t WeightBytes() const = 0;
  // [T, hidden] embeddings of `ids` at positions start_pos.. (f32). InvalidArgument for an id
  // outside the vocabulary, OutOfRange past the context.
  virtual absl::StatusOr<HostTensor> Embed(absl::Span<const int64_t> ids,
                                           int64_t start_pos) const = 0;
  // Final norm applied to h [T, hidden] (f32 out). InvalidArgument for another shape.
  virtual absl::StatusOr<HostTensor> FinalNorm(const HostTensor& h) const = 0;
  // Logits [T, vocab] (or only the last row when last_only) of h, final norm included (f32). The
  // rows may be of different sequences (the last rows of a batched step: h [B, hidden]). With at
  // most kInvariantHeadRows rows and weights on the CPU, each row's logits are batch-invariant
  // (the row kernel: the same bits whatever the other rows); LastRowLogits keeps that for any
  // number of sequences.
  virtual absl::StatusOr<HostTensor> Logits(const HostTensor& h, bool last_only) const = 0;
  // Rows of the token embedding table as f32 [ids.size(), hidden] (for the router's features).
  virtual absl::StatusOr<HostTensor> EmbeddingRows(absl::Span<const int64_t> ids) const = 0;
};

// The logits [B, vocab] of h [B, hidden], one row per sequence (a batched step's last rows), in
// groups of at most kInvariantHeadRows rows: on the CPU each row's logits are the same bits
// whatever the other rows and however many there are. Errors: Logits'.
absl::StatusOr<HostTensor> LastRowLogits(const ModelEnds& ends, const HostTensor& h);

}  // namespace swarm::model

#endif  // SWARM_MODEL_MODEL_ENDS_H_
