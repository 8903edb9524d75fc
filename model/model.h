// The model's compute, behind a torch-free interface. Callers (engine, worker, coordinator,
// router, CLI) see HostTensor; LibTorch stays inside model/*.cc.
//
//  - Checkpoint: a model directory opened lazily: config.json parsed, safetensors mapped, no
//    tensor bytes read. Shared (std::shared_ptr<const Checkpoint>) and immutable; thread-safe.
//  - LayerHost: a set of transformer layers (not necessarily contiguous) loaded onto a device in
//    a dtype. Loading touches only those layers' tensors. Forward is const and thread-safe for
//    different KvCaches; one KvCache must not be used by two threads at once.
//  - KvCache: the keys/values one session has written into the layers of one LayerHost.
//  - ModelEnds: embeddings, final norm and LM head — what the coordinator hosts.
//
// A *block* (the unit the router and scheduler work with) is a contiguous range of layers; see
// common/block_layout.h.
#ifndef SWARM_MODEL_MODEL_H_
#define SWARM_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"
#include "model/combine.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace swarm::model {

class Checkpoint {
 public:
  // Opens DIR: config.json and the safetensors (single or sharded). Reads no tensor data.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(const std::string& model_dir);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const TensorStore& store() const { return *store_; }

  // The checkpoint names of layer `layer`'s tensors (prefix handling for GPT-2 included).
  std::vector<std::string> LayerTensorNames(int layer) const;
  // Bytes of the tensors as stored (not as loaded in another dtype).
  int64_t LayerBytes(int layer) const;
  int64_t EmbeddingBytes() const;  // Token (+ position) embeddings.
  int64_t HeadBytes() const;       // Final norm + lm_head (0 extra when tied).
  // Resolves a logical name ("model.embed_tokens.weight", "h.0.attn.c_attn.weight", ...) to the
  // name present in the file, or NotFound naming the tensor and the directory.
  absl::StatusOr<std::string> Resolve(absl::string_view logical_name) const;

 private:
  Checkpoint() = default;
  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<TensorStore> store_;
  std::string gpt2_prefix_;  // "transformer." or "" for GPT-2 checkpoints.
};

struct LoadOptions {
  std::string device = "cpu";  // "cpu" or "cuda:N".
  DType dtype = DType::kF32;   // Compute/storage dtype on the device.
  // CPU, checkpoint dtype == dtype: true copies weights into huge-page-backed memory (fastest
  // decode); false keeps them as views of the file mapping (zero copy, shared page cache between
  // processes on one host, paged in on first use). Other cases always convert into new memory.
  bool copy_weights = true;
};

class KvCache {
 public:
  virtual ~KvCache() = default;
  // Positions written so far into `layer` (0 for a layer never run).
  virtual int64_t Length(int layer) const = 0;
  // Bytes currently allocated.
  virtual int64_t Bytes() const = 0;
};

class LayerHost {
 public:
  // Loads `layers` (sorted, unique, each < num_layers) from `checkpoint` onto options.device.
  // Errors name the tensor at fault (missing, wrong shape or dtype for the config).
  static absl::StatusOr<std::unique_ptr<LayerHost>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, std::vector<int> layers,
      const LoadOptions& options);
  virtual ~LayerHost() = default;

  virtual const std::vector<int>& layers() const = 0;
  virtual bool Hosts(int layer) const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int64_t WeightBytes() const = 0;  // As resident on the device.
  // Bytes one token of KV cache takes across all hosted layers.
  virtual int64_t KvBytesPerToken() const = 0;

  // A new, empty cache. With `capacity` > 0 each layer's first write allocates room for exactly
  // that many positions (a session's known maximum, so a KV budget reserves what is allocated);
  // past it, or without a hint, capacity grows geometrically up to the context.
  virtual std::unique_ptr<KvCache> NewCache(int64_t capacity = 0) const = 0;

  // Runs `layers` (each hosted, in the given order) over hidden states `h` [T, hidden_size]
  // holding positions start_pos .. start_pos+T-1, appending their keys/values to `cache`.
  // Every layer in `layers` must have Length(layer) == start_pos in the cache
  // (FailedPrecondition otherwise) and start_pos + T must not exceed the context
  // (OutOfRange). Output keeps h's dtype. The layers run ungated: a sparse block's gate is
  // applied by whoever combines block outputs, through model/combine.h.
  virtual absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                             absl::Span<const int> layers,
                                             KvCache* cache) const = 0;
};

class ModelEnds {
 public:
  // Loads the token (and GPT-2 position) embeddings, final norm and LM head.
  static absl::StatusOr<std::unique_ptr<ModelEnds>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, const LoadOptions& options);
  virtual ~ModelEnds() = default;

  virtual const ModelConfig& config() const = 0;
  virtual int64_t WeightBytes() const = 0;
  // [T, hidden] embeddings of `ids` at positions start_pos.. (f32). InvalidArgument for an id
  // outside the vocabulary, OutOfRange past the context.
  virtual absl::StatusOr<HostTensor> Embed(absl::Span<const int64_t> ids,
                                           int64_t start_pos) const = 0;
  // Final norm applied to h [T, hidden].
  virtual absl::StatusOr<HostTensor> FinalNorm(const HostTensor& h) const = 0;
  // Logits [T, vocab] (or only the last row when last_only) of h, final norm included.
  virtual absl::StatusOr<HostTensor> Logits(const HostTensor& h, bool last_only) const = 0;
  // Rows of the token embedding table as f32 [ids.size(), hidden] (for the router's features).
  virtual absl::StatusOr<HostTensor> EmbeddingRows(absl::Span<const int64_t> ids) const = 0;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_MODEL_H_
