// Model configuration read from a Hugging Face `config.json`: the four supported families
// (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel) normalised into one
// struct the layer math reads. Pure value type; thread-compatible.
#ifndef SWARM_MODEL_CONFIG_H_
#define SWARM_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/weight_format.h"

namespace swarm::model {

enum class Arch { kLlama, kMistral, kQwen2, kGpt2 };

const char* ArchName(Arch arch);

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string architecture;  // As written in config.json, e.g. "LlamaForCausalLM".
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;                 // hidden_size / num_heads unless config says otherwise.
  int64_t max_position_embeddings = 0;  // The context limit.
  double norm_eps = 1e-5;               // rms_norm_eps or layer_norm_epsilon.
  double rope_theta = 10000.0;
  int64_t sliding_window = 0;  // 0 = full attention.
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2: always).
  bool mlp_bias = false;
  std::string hidden_act = "silu";  // "silu" (gated MLP) or "gelu_new" (GPT-2).
  // A checkpoint written by `swarm quantize`: its config.json's "swarm_quantization":
  // {"format": "q8"|"q4", "group_size": 32}; its linear weights are stored quantized
  // (docs/cli.md "swarm quantize"). kNone for ordinary checkpoints.
  WeightQuant quantization = WeightQuant::kNone;
  std::vector<int64_t> bos_token_ids;
  std::vector<int64_t> eos_token_ids;

  bool IsGpt2() const { return arch == Arch::kGpt2; }
  // Deterministic digest of the fields that make two processes' views of a model compatible.
  std::string Fingerprint() const;
};

// Parses config.json text. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source = "config.json");
// Reads and parses DIR/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace swarm::model

#endif  // SWARM_MODEL_CONFIG_H_
