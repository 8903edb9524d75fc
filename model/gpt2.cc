// The GPT-2 family (GPT2LMHeadModel): pre-norm layers with LayerNorm (weights and biases), learned
// position embeddings added to the token embeddings (no rotary), full multi-head attention, a GELU
// MLP (gelu_new: the tanh approximation, unless the config says gelu), biases everywhere. Its
// checkpoints store Conv1D weights [in, out], used here transposed (as views), and name tensors
// "h.N.attn.c_attn.weight", with or without a "transformer." prefix (on all but lm_head.weight).
#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/architecture_torch.h"

namespace swarm::model {
namespace {

constexpr char kLmHead[] = "lm_head.weight";

struct Gpt2Weights {
  NormWeights ln_1, ln_2;
  AttentionWeights attention;
  MlpWeights mlp;
};

class Gpt2Layer final : public DecoderLayer {
 public:
  Gpt2Layer(const ModelConfig& config, int index, Gpt2Weights weights)
      : index_(index),
        eps_(config.norm_eps),
        gelu_(config.hidden_act == "gelu" ? Gelu::kErf : Gelu::kTanh),
        hidden_(config.hidden_size),
        shape_(AttentionShape::Of(config)),
        w_(std::move(weights)),
        rows_supported_(model::RowsSupported(w_.attention) && model::RowsSupported(w_.mlp)),
        ln_1_(rows_supported_ ? RowNorm::From(w_.ln_1) : RowNorm()),
        ln_2_(rows_supported_ ? RowNorm::From(w_.ln_2) : RowNorm()) {}

  at::Tensor Forward(const at::Tensor& x, const BatchRows& batch) const override {
    at::Tensor h = x + Attention(w_.attention, shape_, /*rotary=*/nullptr,
                                 LayerNorm(x, w_.ln_1, eps_), batch, index_);
    return h + Mlp(w_.mlp, gelu_, LayerNorm(h, w_.ln_2, eps_), batch.invariant_rows);
  }

  bool RowsSupported() const override { return rows_supported_; }
  void ForwardRows(float* x, RowStep& step) const override {
    const int64_t T = step.rows(), d = hidden_;
    float* xn = step.Scratch(RowStep::kNorm, T * d);
    RowsLayerNorm(x, T, d, ln_1_, eps_, xn);
    RowsAttention(w_.attention, shape_, /*rotary=*/nullptr, xn, x, step, index_);
    RowsLayerNorm(x, T, d, ln_2_, eps_, xn);
    RowsMlp(w_.mlp, gelu_, xn, x, step);
  }

 private:
  const int index_;
  const double eps_;
  const Gelu gelu_;
  const int64_t hidden_;
  const AttentionShape shape_;
  const Gpt2Weights w_;
  const bool rows_supported_;
  const RowNorm ln_1_, ln_2_;  // f32 copies for ForwardRows.
};

class Gpt2Family final : public ArchitectureFamily {
 public:
  Gpt2Family(const ModelConfig& config, const TensorStore& store)
      : ArchitectureFamily(config),
        prefix_(store.Has("transformer.wte.weight") ? "transformer." : "") {}

  std::string LayerTensor(int layer, absl::string_view rest) const override {
    return absl::StrCat("h.", layer, ".", rest);
  }
  std::string FileName(absl::string_view logical) const override {
    return logical == kLmHead ? std::string(logical) : absl::StrCat(prefix_, logical);
  }
  bool IsBuffer(absl::string_view file_name) const override {
    // ".attn.bias", not "attn.bias": "attn.c_attn.bias" is c_attn's bias, a weight.
    return absl::EndsWith(file_name, ".attn.bias") ||
           absl::EndsWith(file_name, ".attn.masked_bias");
  }
  std::vector<std::string> TokenEmbeddingNames() const override {
    return {"wte.weight", "transformer.wte.weight"};
  }
  std::vector<std::string> EmbeddingTensors() const override {
    return {"wte.weight", "wpe.weight"};
  }
  std::vector<std::string> HeadTensors() const override {
    return {"ln_f.weight", "ln_f.bias", kLmHead};
  }

  absl::StatusOr<std::vector<std::unique_ptr<const DecoderLayer>>> LoadLayers(
      absl::Span<const int> layers, WeightLoader& loader) const override {
    std::vector<std::unique_ptr<const DecoderLayer>> out;
    for (int l : layers) {
      ASSIGN_OR_RETURN(Gpt2Weights w, LoadLayer(l, loader));
      RETURN_IF_ERROR(TorchCall("preparing layer", [&]() -> absl::Status {
        out.push_back(std::make_unique<Gpt2Layer>(config(), l, std::move(w)));
        return absl::OkStatus();
      }));
      loader.LayerLoaded();
    }
    return out;
  }

  absl::StatusOr<EndsWeights> LoadEnds(WeightLoader& loader) const override {
    const ModelConfig& c = config();
    const int64_t d = c.hidden_size;
    EndsWeights ends;
    ASSIGN_OR_RETURN(ends.embed, loader.Load("wte.weight", {c.vocab_size, d}));
    ASSIGN_OR_RETURN(ends.positions, loader.Load("wpe.weight", {c.max_position_embeddings, d}));
    ASSIGN_OR_RETURN(ends.norm.weight, loader.Load("ln_f.weight", {d}));
    ASSIGN_OR_RETURN(ends.norm.bias, loader.Load("ln_f.bias", {d}));
    return ends;
  }

  at::Tensor FinalNorm(const NormWeights& norm, const at::Tensor& x) const override {
    return LayerNorm(x, norm, config().norm_eps);
  }

 private:
  absl::StatusOr<Gpt2Weights> LoadLayer(int l, WeightLoader& w) const {
    const ModelConfig& c = config();
    const int64_t d = c.hidden_size, I = c.intermediate_size;
    auto name = [&](absl::string_view rest) { return LayerTensor(l, rest); };
    Gpt2Weights layer;
    ASSIGN_OR_RETURN(layer.ln_1.weight, w.Load(name("ln_1.weight"), {d}));
    ASSIGN_OR_RETURN(layer.ln_1.bias, w.Load(name("ln_1.bias"), {d}));
    ASSIGN_OR_RETURN(layer.ln_2.weight, w.Load(name("ln_2.weight"), {d}));
    ASSIGN_OR_RETURN(layer.ln_2.bias, w.Load(name("ln_2.bias"), {d}));
    // Conv1D weights are [in, out]: transposed views give the [out, in] Linear() multiplies by.
    // c_attn is [q;k;v] fused already.
    ASSIGN_OR_RETURN(LinearWeights qkv, w.LoadLinear({name("attn.c_attn.weight"), {d, 3 * d}},
                                                     /*transposed=*/true));
    ASSIGN_OR_RETURN(qkv.bias, w.Load(name("attn.c_attn.bias"), {3 * d}));
    layer.attention.qkv.parts.push_back(std::move(qkv));
    ASSIGN_OR_RETURN(layer.attention.out,
                     w.LoadLinear({name("attn.c_proj.weight"), {d, d}}, /*transposed=*/true));
    ASSIGN_OR_RETURN(layer.attention.out.bias, w.Load(name("attn.c_proj.bias"), {d}));
    ASSIGN_OR_RETURN(layer.mlp.up,
                     w.LoadLinear({name("mlp.c_fc.weight"), {d, I}}, /*transposed=*/true));
    ASSIGN_OR_RETURN(layer.mlp.up.bias, w.Load(name("mlp.c_fc.bias"), {I}));
    ASSIGN_OR_RETURN(layer.mlp.down,
                     w.LoadLinear({name("mlp.c_proj.weight"), {I, d}}, /*transposed=*/true));
    ASSIGN_OR_RETURN(layer.mlp.down.bias, w.Load(name("mlp.c_proj.bias"), {d}));
    return layer;
  }

  const std::string prefix_;  // "transformer." or "".
};

}  // namespace

std::unique_ptr<const Architecture> NewGpt2Family(const ModelConfig& config,
                                                  const TensorStore& store) {
  return std::make_unique<const Gpt2Family>(config, store);
}

}  // namespace swarm::model
