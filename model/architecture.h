// An architecture family: model/llama.cc (Llama, Mistral, Qwen2) or model/gpt2.cc (GPT-2). This
// half, torch-free, is how the family's checkpoints name their tensors; Checkpoint answers every
// naming question through it (Resolve, LayerTensorNames, the embedding and head tensors), and the
// router reads the token embedding's names. The other half, model/architecture_torch.h (only
// model/*.cc see it), is how the family's layers load and compute on the shared building blocks.
//
// Architecture::Create is the one place a ModelConfig's family is chosen; nothing else branches
// on the architecture. Created by Checkpoint::Open and owned by the Checkpoint; immutable, so
// thread-safe.
#ifndef SWARM_MODEL_ARCHITECTURE_H_
#define SWARM_MODEL_ARCHITECTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace swarm::model {

class ArchitectureFamily;  // model/architecture_torch.h

class Architecture {
 public:
  // The family of `config`, reading the checkpoint's naming variant from `store` where the family
  // has several (GPT-2: with or without the "transformer." prefix).
  static std::unique_ptr<const Architecture> Create(const ModelConfig& config,
                                                    const TensorStore& store);
  virtual ~Architecture() = default;
  Architecture(const Architecture&) = delete;
  Architecture& operator=(const Architecture&) = delete;

  const ModelConfig& config() const { return config_; }

  // The logical name of tensor `rest` of layer `layer`: "model.layers.7.mlp.up_proj.weight",
  // "h.7.mlp.c_fc.weight".
  virtual std::string LayerTensor(int layer, absl::string_view rest) const = 0;
  // The name in the checkpoint's files of a logical name. The identity unless the family's
  // checkpoints vary (GPT-2: the optional "transformer." prefix on all but lm_head.weight).
  virtual std::string FileName(absl::string_view logical) const;
  // True for a file tensor among a layer's that holds no weights (GPT-2's attention mask buffers
  // attn.bias and attn.masked_bias); Checkpoint::LayerTensorNames leaves those out.
  virtual bool IsBuffer(absl::string_view file_name) const;
  // Logical names the token embedding table may have, preferred first.
  virtual std::vector<std::string> TokenEmbeddingNames() const = 0;
  // Logical names of the embedding tensors (token, and learned positions where the family has
  // them) and of the head tensors (final norm, lm_head.weight); a checkpoint may lack some (a
  // tied LM head).
  virtual std::vector<std::string> EmbeddingTensors() const = 0;
  virtual std::vector<std::string> HeadTensors() const = 0;

  // The compute half of this family (model/architecture_torch.h; model/*.cc only).
  virtual const ArchitectureFamily& family() const = 0;

 protected:
  explicit Architecture(const ModelConfig& config) : config_(config) {}

 private:
  const ModelConfig config_;
};

// The families, defined in model/llama.cc and model/gpt2.cc; callers use Architecture::Create.
std::unique_ptr<const Architecture> NewLlamaFamily(const ModelConfig& config);
std::unique_ptr<const Architecture> NewGpt2Family(const ModelConfig& config,
                                                  const TensorStore& store);

}  // namespace swarm::model

#endif  // SWARM_MODEL_ARCHITECTURE_H_
