// The Llama family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM. Pre-norm layers with
// RMSNorm, rotary positions, grouped-query attention (Mistral and Qwen2 optionally within a
// sliding window), a SwiGLU MLP, and optional q/k/v and MLP biases (Qwen2: q/k/v biases).
// Checkpoints name tensors as transformers' Llama modules do ("model.layers.N.self_attn.q_proj").
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/architecture_torch.h"

namespace swarm::model {
namespace {

constexpr char kEmbedTokens[] = "model.embed_tokens.weight";
constexpr char kFinalNorm[] = "model.norm.weight";
constexpr char kLmHead[] = "lm_head.weight";

struct LlamaWeights {
  NormWeights input_norm, post_attention_norm;
  AttentionWeights attention;
  GatedMlpWeights mlp;
};

class LlamaLayer final : public DecoderLayer {
 public:
  LlamaLayer(const ModelConfig& config, int index, std::shared_ptr<const Rotary> rotary,
             LlamaWeights weights)
      : index_(index),
        eps_(config.norm_eps),
        intermediate_(config.intermediate_size),
        hidden_(config.hidden_size),
        shape_(AttentionShape::Of(config)),
        rotary_(std::move(rotary)),
        w_(std::move(weights)),
        rows_supported_(model::RowsSupported(w_.attention) && model::RowsSupported(w_.mlp) &&
                        rotary_->CosF32(0) != nullptr),
        input_norm_(rows_supported_ ? RowNorm::From(w_.input_norm) : RowNorm()),
        post_attention_norm_(rows_supported_ ? RowNorm::From(w_.post_attention_norm) : RowNorm()) {}

  at::Tensor Forward(const at::Tensor& x, const BatchRows& batch) const override {
    at::Tensor h = x + Attention(w_.attention, shape_, rotary_.get(),
                                 RmsNorm(x, w_.input_norm, eps_), batch, index_);
    return h + GatedMlp(w_.mlp, intermediate_, RmsNorm(h, w_.post_attention_norm, eps_),
                        batch.invariant_rows);
  }

  bool RowsSupported() const override { return rows_supported_; }
  void ForwardRows(float* x, RowStep& step) const override {
    const int64_t T = step.rows(), d = hidden_;
    float* xn = step.Scratch(RowStep::kNorm, T * d);
    RowsRmsNorm(x, T, d, input_norm_, eps_, xn);
    RowsAttention(w_.attention, shape_, rotary_.get(), xn, x, step, index_);
    RowsRmsNorm(x, T, d, post_attention_norm_, eps_, xn);
    RowsGatedMlp(w_.mlp, intermediate_, xn, x, step);
  }

 private:
  const int index_;
  const double eps_;
  const int64_t intermediate_;
  const int64_t hidden_;
  const AttentionShape shape_;
  const std::shared_ptr<const Rotary> rotary_;
  const LlamaWeights w_;
  const bool rows_supported_;
  const RowNorm input_norm_, post_attention_norm_;  // f32 copies for ForwardRows.
};

class LlamaFamily final : public ArchitectureFamily {
 public:
  explicit LlamaFamily(const ModelConfig& config) : ArchitectureFamily(config) {}

  std::string LayerTensor(int layer, absl::string_view rest) const override {
    return absl::StrCat("model.layers.", layer, ".", rest);
  }
  std::vector<std::string> TokenEmbeddingNames() const override {
    return {kEmbedTokens, "embed_tokens.weight"};
  }
  std::vector<std::string> EmbeddingTensors() const override { return {kEmbedTokens}; }
  std::vector<std::string> HeadTensors() const override { return {kFinalNorm, kLmHead}; }

  absl::StatusOr<std::vector<std::unique_ptr<const DecoderLayer>>> LoadLayers(
      absl::Span<const int> layers, WeightLoader& loader) const override {
    std::vector<std::unique_ptr<const DecoderLayer>> out;
    if (layers.empty()) return out;
    const ModelConfig& c = config();
    std::shared_ptr<const Rotary> rotary;
    RETURN_IF_ERROR(TorchCall("building rotary tables", [&]() -> absl::Status {
      rotary = std::make_shared<const Rotary>(c.head_dim, c.max_position_embeddings, c.rope_theta,
                                              loader.device(), loader.dtype());
      return absl::OkStatus();
    }));
    for (int l : layers) {
      ASSIGN_OR_RETURN(LlamaWeights w, LoadLayer(l, loader));
      RETURN_IF_ERROR(TorchCall("preparing layer", [&]() -> absl::Status {
        out.push_back(std::make_unique<LlamaLayer>(c, l, rotary, std::move(w)));
        return absl::OkStatus();
      }));
      loader.LayerLoaded();
    }
    return out;
  }

  absl::StatusOr<EndsWeights> LoadEnds(WeightLoader& loader) const override {
    const ModelConfig& c = config();
    EndsWeights ends;
    ASSIGN_OR_RETURN(ends.embed, loader.Load(kEmbedTokens, {c.vocab_size, c.hidden_size}));
    ASSIGN_OR_RETURN(ends.norm.weight, loader.Load(kFinalNorm, {c.hidden_size}));
    return ends;
  }

  at::Tensor FinalNorm(const NormWeights& norm, const at::Tensor& x) const override {
    return RmsNorm(x, norm, config().norm_eps);
  }

 private:
  absl::StatusOr<LlamaWeights> LoadLayer(int l, WeightLoader& w) const {
    const ModelConfig& c = config();
    const int64_t d = c.hidden_size, I = c.intermediate_size;
    const int64_t qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
    auto name = [&](absl::string_view rest) { return LayerTensor(l, rest); };
    LlamaWeights layer;
    ASSIGN_OR_RETURN(layer.input_norm.weight, w.Load(name("input_layernorm.weight"), {d}));
    ASSIGN_OR_RETURN(layer.post_attention_norm.weight,
                     w.Load(name("post_attention_layernorm.weight"), {d}));
    // Fused [q;k;v] and [gate;up] unless zero-copy: decode makes 4 matmuls a layer, not 7.
    ASSIGN_OR_RETURN(std::vector<LinearWeights> qkv_w,
                     w.LoadSplitLinear({{name("self_attn.q_proj.weight"), {qd, d}},
                                        {name("self_attn.k_proj.weight"), {kvd, d}},
                                        {name("self_attn.v_proj.weight"), {kvd, d}}}));
    ASSIGN_OR_RETURN(std::vector<LinearWeights> gate_up_w,
                     w.LoadSplitLinear({{name("mlp.gate_proj.weight"), {I, d}},
                                        {name("mlp.up_proj.weight"), {I, d}}}));
    std::vector<at::Tensor> qkv_b, gate_up_b;
    if (c.attention_bias) {
      ASSIGN_OR_RETURN(qkv_b, w.LoadSplit({{name("self_attn.q_proj.bias"), {qd}},
                                           {name("self_attn.k_proj.bias"), {kvd}},
                                           {name("self_attn.v_proj.bias"), {kvd}}}));
    }
    if (c.mlp_bias) {
      ASSIGN_OR_RETURN(gate_up_b, w.LoadSplit({{name("mlp.gate_proj.bias"), {I}},
                                               {name("mlp.up_proj.bias"), {I}}}));
    }
    layer.attention.qkv = SplitLinearWeights::From(std::move(qkv_w), std::move(qkv_b));
    layer.mlp.gate_up = SplitLinearWeights::From(std::move(gate_up_w), std::move(gate_up_b));
    ASSIGN_OR_RETURN(layer.attention.out, w.LoadLinear({name("self_attn.o_proj.weight"), {d, qd}}));
    ASSIGN_OR_RETURN(layer.mlp.down, w.LoadLinear({name("mlp.down_proj.weight"), {d, I}}));
    if (c.mlp_bias) {
      ASSIGN_OR_RETURN(layer.mlp.down.bias, w.Load(name("mlp.down_proj.bias"), {d}));
    }
    return layer;
  }
};

}  // namespace

std::unique_ptr<const Architecture> NewLlamaFamily(const ModelConfig& config) {
  return std::make_unique<const LlamaFamily>(config);
}

}  // namespace swarm::model
