// A model directory opened lazily: config.json parsed (model/config.h), the safetensors single or
// sharded mapped (model/safetensors.h), no tensor bytes read, and the architecture family that
// names its tensors chosen (model/architecture.h). Every loader and size estimate starts here:
// LayerHost, ModelEnds and Engine, the worker and coordinator, the router's features and memory
// estimate, the CLI. Shared as std::shared_ptr<const Checkpoint>; immutable after Open, so
// thread-safe.
#ifndef SWARM_MODEL_CHECKPOINT_H_
#define SWARM_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/architecture.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace swarm::model {

class Checkpoint {
 public:
  // Opens DIR: config.json and the safetensors (single or sharded). Reads no tensor data. Errors
  // name the file at fault.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(const std::string& model_dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const TensorStore& store() const { return *store_; }
  // How this checkpoint's family names its tensors.
  const Architecture& architecture() const { return *architecture_; }

  // The file names of layer `layer`'s weight tensors (buffers such as GPT-2's masks left out).
  std::vector<std::string> LayerTensorNames(int layer) const;
  // File names of the embedding tensors (token, and learned positions) and of the head tensors
  // (final norm, lm_head) present in the checkpoint.
  std::vector<std::string> EmbeddingTensorNames() const;
  std::vector<std::string> HeadTensorNames() const;
  // Bytes of those tensors as stored (not as loaded in another dtype). HeadBytes counts no
  // lm_head when the head is tied to the embeddings and not stored.
  int64_t LayerBytes(int layer) const;
  int64_t EmbeddingBytes() const;
  int64_t HeadBytes() const;
  // Resolves a logical name ("model.embed_tokens.weight", "h.0.attn.c_attn.weight", ...) to the
  // name present in the file, or NotFound naming the tensor and the directory.
  absl::StatusOr<std::string> Resolve(absl::string_view logical_name) const;

 private:
  Checkpoint() = default;
  // File names of `logical` that are present.
  std::vector<std::string> Present(const std::vector<std::string>& logical) const;
  int64_t BytesOf(const std::vector<std::string>& file_names) const;

  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<TensorStore> store_;
  std::unique_ptr<const Architecture> architecture_;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_CHECKPOINT_H_
