// The compute half of an architecture family (model/architecture.h has the naming half), internal
// to model/: how the family's layers and ends load through WeightLoader and compute on the
// building blocks of model/layers_torch.h. One file per family implements it (model/llama.cc,
// model/gpt2.cc); LayerHost and ModelEnds (model/layer_host.cc, model/model_ends.cc) drive it and
// know no family. Reached as checkpoint.architecture().family(). Immutable; thread-safe.
#ifndef SWARM_MODEL_ARCHITECTURE_TORCH_H_
#define SWARM_MODEL_ARCHITECTURE_TORCH_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/architecture.h"
#include "model/cpu_layer_torch.h"
#include "model/kv_cache_torch.h"
#include "model/layers_torch.h"
#include "model/weights_torch.h"

namespace swarm::model {

// One transformer layer of a family, loaded onto a device. Forward is const and thread-safe for
// different caches.
class DecoderLayer {
 public:
  virtual ~DecoderLayer() = default;
  // The batch x [T, hidden] (on the layer's device, in the compute dtype; rows, positions and
  // caches as `batch` says) through the layer: row-wise parts (norms, projections, MLP) over all
  // rows at once, attention per sequence; appends each sequence's keys and values to its cache.
  // A single sequence is the batch of one. May throw (LibTorch): the caller runs it inside
  // TorchCall.
  virtual at::Tensor Forward(const at::Tensor& x, const BatchRows& batch) const = 0;

  // The fused CPU path (model/cpu_layer_torch.h): whether ForwardRows runs this layer (its weights
  // on the CPU, in types the row kernel reads).
  virtual bool RowsSupported() const { return false; }
  // x: step.rows() rows of f32 hidden states [rows, hidden] through the layer, in place, the
  // rows and caches as `step` says; appends each sequence's keys and values to its cache.
  // Precondition: RowsSupported(). May throw (LibTorch, a cache growing): inside TorchCall.
  virtual void ForwardRows(float* x, RowStep& step) const {
    (void)x;
    (void)step;
  }
};

// What the family loads for ModelEnds (the LM head is the same for every family; ModelEnds
// loads it).
struct EndsWeights {
  at::Tensor embed;      // Token embeddings [vocab, hidden].
  at::Tensor positions;  // Learned position embeddings [context, hidden], or undefined.
  NormWeights norm;      // The final norm.
};

class ArchitectureFamily : public Architecture {
 public:
  const ArchitectureFamily& family() const final { return *this; }

  // Loads `layers` (valid layer indices) through `loader`: one DecoderLayer each, in order. Tables
  // the layers share on the device (rotary) are built once per call. Errors name the tensor at
  // fault (missing, wrong shape or dtype for the config).
  virtual absl::StatusOr<std::vector<std::unique_ptr<const DecoderLayer>>> LoadLayers(
      absl::Span<const int> layers, WeightLoader& loader) const = 0;
  // Loads the token (and position) embeddings and the final norm.
  virtual absl::StatusOr<EndsWeights> LoadEnds(WeightLoader& loader) const = 0;
  // The family's final norm of x [T, hidden]. May throw (LibTorch).
  virtual at::Tensor FinalNorm(const NormWeights& norm, const at::Tensor& x) const = 0;

 protected:
  using Architecture::Architecture;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_ARCHITECTURE_TORCH_H_
