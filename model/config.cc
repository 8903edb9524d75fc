#include "model/config.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace swarm::model {
namespace {

using json = nlohmann::json;

// Reads an integer field, accepting any of `names`; NotFound when none is present and required.
absl::StatusOr<int64_t> GetInt(const json& j, std::initializer_list<const char*> names,
                               absl::string_view source, std::optional<int64_t> fallback) {
  for (const char* name : names) {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field '", name, "' must be an integer, got ", it->dump()));
    }
    return it->get<int64_t>();
  }
  if (fallback.has_value()) return *fallback;
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": missing required field '", *names.begin(), "'"));
}

absl::StatusOr<double> GetDouble(const json& j, std::initializer_list<const char*> names,
                                 absl::string_view source, double fallback) {
  for (const char* name : names) {
    auto it = j.find(name);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field '", name, "' must be a number, got ", it->dump()));
    }
    return it->get<double>();
  }
  return fallback;
}

std::vector<int64_t> GetIds(const json& j, const char* name) {
  std::vector<int64_t> out;
  auto it = j.find(name);
  if (it == j.end()) return out;
  if (it->is_number_integer()) out.push_back(it->get<int64_t>());
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (v.is_number_integer()) out.push_back(v.get<int64_t>());
    }
  }
  return out;
}

absl::StatusOr<ModelConfig> ParseJson(const json& j, absl::string_view source) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": expected a JSON object"));
  }
  ModelConfig c;
  std::string model_type = j.value("model_type", "");
  if (auto it = j.find("architectures");
      it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string()) {
    c.architecture = (*it)[0].get<std::string>();
  }
  const std::string& a = c.architecture;
  if (a == "LlamaForCausalLM" || (a.empty() && model_type == "llama")) {
    c.arch = Arch::kLlama;
  } else if (a == "MistralForCausalLM" || (a.empty() && model_type == "mistral")) {
    c.arch = Arch::kMistral;
  } else if (a == "Qwen2ForCausalLM" || (a.empty() && model_type == "qwen2")) {
    c.arch = Arch::kQwen2;
  } else if (a == "GPT2LMHeadModel" || (a.empty() && model_type == "gpt2")) {
    c.arch = Arch::kGpt2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": unsupported architecture '", a.empty() ? model_type : a,
        "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel)"));
  }
  if (c.architecture.empty()) c.architecture = ArchName(c.arch);

  absl::StatusOr<int64_t> v;
  if (c.IsGpt2()) {
    if (!(v = GetInt(j, {"n_embd", "hidden_size"}, source, std::nullopt)).ok()) return v.status();
    c.hidden_size = *v;
    if (!(v = GetInt(j, {"n_layer", "num_hidden_layers"}, source, std::nullopt)).ok())
      return v.status();
    c.num_layers = *v;
    if (!(v = GetInt(j, {"n_head", "num_attention_heads"}, source, std::nullopt)).ok())
      return v.status();
    c.num_heads = *v;
    c.num_kv_heads = c.num_heads;
    if (!(v = GetInt(j, {"n_inner"}, source, 4 * c.hidden_size)).ok()) return v.status();
    c.intermediate_size = *v;
    if (!(v = GetInt(j, {"n_positions", "max_position_embeddings"}, source, 1024)).ok())
      return v.status();
    c.max_position_embeddings = *v;
    auto eps = GetDouble(j, {"layer_norm_epsilon"}, source, 1e-5);
    if (!eps.ok()) return eps.status();
    c.norm_eps = *eps;
    c.hidden_act = j.value("activation_function", std::string("gelu_new"));
    if (c.hidden_act != "gelu_new" && c.hidden_act != "gelu_pytorch_tanh" &&
        c.hidden_act != "gelu") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": unsupported activation_function '", c.hidden_act, "'"));
    }
    c.tie_word_embeddings = j.value("tie_word_embeddings", true);
    c.attention_bias = true;
    c.mlp_bias = true;
    c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  } else {
    if (!(v = GetInt(j, {"hidden_size"}, source, std::nullopt)).ok()) return v.status();
    c.hidden_size = *v;
    if (!(v = GetInt(j, {"num_hidden_layers"}, source, std::nullopt)).ok()) return v.status();
    c.num_layers = *v;
    if (!(v = GetInt(j, {"num_attention_heads"}, source, std::nullopt)).ok()) return v.status();
    c.num_heads = *v;
    if (!(v = GetInt(j, {"num_key_value_heads"}, source, c.num_heads)).ok()) return v.status();
    c.num_kv_heads = *v;
    if (!(v = GetInt(j, {"intermediate_size"}, source, std::nullopt)).ok()) return v.status();
    c.intermediate_size = *v;
    if (!(v = GetInt(j, {"max_position_embeddings"}, source, 2048)).ok()) return v.status();
    c.max_position_embeddings = *v;
    if (!(v = GetInt(j, {"head_dim"}, source, c.num_heads > 0 ? c.hidden_size / c.num_heads : 0))
             .ok())
      return v.status();
    c.head_dim = *v;
    auto eps = GetDouble(j, {"rms_norm_eps"}, source, 1e-6);
    if (!eps.ok()) return eps.status();
    c.norm_eps = *eps;
    double theta = 10000.0;
    if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
      auto t = GetDouble(*rp, {"rope_theta"}, source, theta);
      if (!t.ok()) return t.status();
      theta = *t;
      std::string rope_type = rp->value("rope_type", std::string("default"));
      if (rope_type != "default") {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": unsupported rope_type '", rope_type, "'"));
      }
    }
    auto t = GetDouble(j, {"rope_theta"}, source, theta);
    if (!t.ok()) return t.status();
    c.rope_theta = *t;
    if (auto rs = j.find("rope_scaling"); rs != j.end() && !rs->is_null()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": rope_scaling is not supported (", rs->dump(), ")"));
    }
    c.hidden_act = j.value("hidden_act", std::string("silu"));
    if (c.hidden_act != "silu") {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": unsupported hidden_act '", c.hidden_act, "'"));
    }
    c.tie_word_embeddings = j.value("tie_word_embeddings", false);
    c.attention_bias = c.arch == Arch::kQwen2 || j.value("attention_bias", false);
    c.mlp_bias = j.value("mlp_bias", false);
    if (c.arch == Arch::kMistral ||
        (c.arch == Arch::kQwen2 && j.value("use_sliding_window", false))) {
      if (!(v = GetInt(j, {"sliding_window"}, source, 0)).ok()) return v.status();
      c.sliding_window = *v;
    }
  }
  if (!(v = GetInt(j, {"vocab_size"}, source, std::nullopt)).ok()) return v.status();
  c.vocab_size = *v;
  if (auto q = j.find("swarm_quantization"); q != j.end() && !q->is_null()) {
    if (!q->is_object() || !q->contains("format") || !(*q)["format"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": swarm_quantization must be an object with a string \"format\""));
    }
    auto format = ParseWeightQuant((*q)["format"].get<std::string>());
    if (!format.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": swarm_quantization: ", format.status().message()));
    }
    c.quantization = *format;
    if (!(v = GetInt(*q, {"group_size"}, source, std::nullopt)).ok()) return v.status();
    if (*v != kQuantGroup) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": swarm_quantization.group_size is ",
                                                     *v, ", only ", kQuantGroup, " is supported"));
    }
  }
  c.bos_token_ids = GetIds(j, "bos_token_id");
  c.eos_token_ids = GetIds(j, "eos_token_id");

  auto positive = [&](const char* name, int64_t value) -> absl::Status {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": ", name, " must be positive, got ", value));
    }
    return absl::OkStatus();
  };
  for (auto [name, value] : {std::pair<const char*, int64_t>{"hidden_size", c.hidden_size},
                             {"num_hidden_layers", c.num_layers},
                             {"num_attention_heads", c.num_heads},
                             {"num_key_value_heads", c.num_kv_heads},
                             {"intermediate_size", c.intermediate_size},
                             {"head_dim", c.head_dim},
                             {"vocab_size", c.vocab_size},
                             {"max_position_embeddings", c.max_position_embeddings}}) {
    absl::Status s = positive(name, value);
    if (!s.ok()) return s;
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": num_attention_heads ", c.num_heads,
                                                   " is not a multiple of num_key_value_heads ",
                                                   c.num_kv_heads));
  }
  if (c.head_dim % 2 != 0 && !c.IsGpt2()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": head_dim ", c.head_dim, " must be even for rotary embeddings"));
  }
  if (c.IsGpt2() && c.hidden_size % c.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": n_embd ", c.hidden_size,
                                                   " is not a multiple of n_head ", c.num_heads));
  }
  return c;
}

}  // namespace

const char* ArchName(Arch arch) {
  switch (arch) {
    case Arch::kLlama:
      return "LlamaForCausalLM";
    case Arch::kMistral:
      return "MistralForCausalLM";
    case Arch::kQwen2:
      return "Qwen2ForCausalLM";
    case Arch::kGpt2:
      return "GPT2LMHeadModel";
  }
  return "?";
}

std::string ModelConfig::Fingerprint() const {
  return absl::StrFormat("%s/v%d/d%d/i%d/l%d/h%d/kv%d/hd%d/ctx%d/theta%g/sw%d/tie%d", architecture,
                         vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
                         num_kv_heads, head_dim, max_position_embeddings, rope_theta,
                         sliding_window, tie_word_embeddings ? 1 : 0);
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON"));
  }
  // nlohmann's value()/get() throw on type mismatches; keep them inside.
  try {
    return ParseJson(j, source);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.what()));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return ParseModelConfig(buf.str(), path);
}

}  // namespace swarm::model
