#include "tools/synth.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/hf_files.h"
#include "tools/llama2c.h"

namespace swarm::tools {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr uint64_t kChunkBytes = 8 << 20;

uint64_t NumElements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t Mix64(uint64_t x) {  // splitmix64's finaliser: a bijection with full avalanche.
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t HashName(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ull;
  return Mix64(Mix64(seed) ^ h);
}

// Both values of Box-Muller pair `pair` of stream `key`.
inline void NormalPair(uint64_t key, uint64_t pair, float* z0, float* z1) {
  const uint64_t a = Mix64(key ^ Mix64(2 * pair));
  const uint64_t b = Mix64(key ^ Mix64(2 * pair + 1));
  const double u1 = (static_cast<double>(a >> 11) + 0.5) * 0x1.0p-53;  // (0, 1)
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;          // [0, 1)
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * M_PI * u2;
  *z0 = static_cast<float>(r * std::cos(theta));
  *z1 = static_cast<float>(r * std::sin(theta));
}

// Writes elements [first, first + count) of a tensor's values (as f32) into `out`.
void GenerateValues(uint64_t key, SynthTensorSpec::Init init, double std_dev, uint64_t first,
                    uint64_t count, float* out) {
  const float scale = static_cast<float>(std_dev);
  const float bias = init == SynthTensorSpec::Init::kNorm ? 1.0f : 0.0f;
  uint64_t e = first;
  const uint64_t end = first + count;
  float z[2];
  while (e < end) {
    NormalPair(key, e / 2, &z[0], &z[1]);
    for (uint64_t j = e % 2; j < 2 && e < end; ++j, ++e) *out++ = bias + scale * z[j];
  }
}

// Fills elements [first, first + count) in `dtype` (F32 or BF16) into dst, on a few threads when
// the range is large enough to be worth it.
void GenerateInto(uint64_t key, SynthTensorSpec::Init init, double std_dev, model::StDType dtype,
                  uint64_t first, uint64_t count, char* dst) {
  auto work = [&](uint64_t begin, uint64_t n) {
    if (dtype == model::StDType::kF32) {
      GenerateValues(key, init, std_dev, first + begin, n, reinterpret_cast<float*>(dst) + begin);
      return;
    }
    std::vector<float> tmp(n);
    GenerateValues(key, init, std_dev, first + begin, n, tmp.data());
    uint16_t* out = reinterpret_cast<uint16_t*>(dst) + begin;
    for (uint64_t i = 0; i < n; ++i) out[i] = FloatToBf16(tmp[i]);
  };
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t threads = std::min<uint64_t>({hw, 8, count / (1 << 16) + 1});
  if (threads <= 1) {
    work(0, count);
    return;
  }
  std::vector<std::thread> pool;
  const uint64_t per = (count + threads - 1) / threads;
  for (uint64_t t = 0; t < threads; ++t) {
    const uint64_t begin = t * per;
    if (begin >= count) break;
    pool.emplace_back(work, begin, std::min(per, count - begin));
  }
  for (std::thread& th : pool) th.join();
}

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};

bool IsQwen2(const SynthOptions& o) { return o.arch == "qwen2"; }

int64_t HeadDim(const SynthOptions& o) {
  if (o.head_dim > 0) return o.head_dim;
  return o.heads > 0 ? o.hidden / o.heads : 0;
}

int64_t KvHeads(const SynthOptions& o) { return o.kv_heads > 0 ? o.kv_heads : o.heads; }

double RopeTheta(const SynthOptions& o) {
  if (o.rope_theta > 0) return o.rope_theta;
  return IsQwen2(o) ? 1e6 : 10000.0;
}

// Values of tensor `spec` of the planted model (SynthOptions::planted_groups), f32, row-major.
std::vector<float> PlantedValues(const SynthOptions& o, const SynthTensorSpec& spec) {
  const int64_t G = o.planted_groups, D = o.hidden, V = o.vocab, L = o.layers;
  const int64_t bos_coord = 2 * G, first_out = 2 * G + 1, R = D - first_out;
  const uint64_t key = HashName(o.seed, spec.name);
  std::vector<float> v(NumElements(spec.shape), 0.0f);
  if (spec.init == SynthTensorSpec::Init::kNorm) {
    std::fill(v.begin(), v.end(), 1.0f);
    return v;
  }
  auto group_of = [&](int64_t t) { return (t - 3) * G / (V - 3); };
  const std::string& n = spec.name;
  if (n == "model.embed_tokens.weight" || n == "lm_head.weight") {
    const bool head = n == "lm_head.weight";
    for (int64_t t = 0; t < V; ++t) {
      float* row = v.data() + t * D;
      if (t >= 3) {
        row[head ? G + group_of(t) : group_of(t)] = head ? 3.0f : 1.0f;
      } else if (!head) {
        row[bos_coord] = 1.0f;
      }
      const float noise = head ? 0.5f : 0.1f;
      for (int64_t i = first_out; i < D; ++i) {
        row[i] = noise * SynthNormal(key, static_cast<uint64_t>(t * D + i));
      }
    }
    return v;
  }
  int64_t layer = -1;
  if (std::sscanf(n.c_str(), "model.layers.%lld.", reinterpret_cast<long long*>(&layer)) != 1) {
    return v;
  }
  auto ends_with = [&](const char* suffix) {
    const size_t m = std::strlen(suffix);
    return n.size() >= m && n.compare(n.size() - m, m, suffix) == 0;
  };
  const int64_t q = o.heads * HeadDim(o);
  if (layer == 0) {
    // Uniform attention (q = k = 0): value dims 0..G-1 of head 0 carry the range indicators,
    // o_proj writes their prefix mean into the context coordinates G..2G-1.
    if (ends_with("self_attn.v_proj.weight")) {
      for (int64_t g = 0; g < G; ++g) v[g * D + g] = 1.0f;
    } else if (ends_with("self_attn.o_proj.weight")) {
      for (int64_t g = 0; g < G; ++g) v[(G + g) * q + g] = 0.15f;
    }
    return v;
  }
  if (layer >= L - 1) return v;  // The last layer: the identity.
  const int64_t g = (layer - 1) % G;
  const int64_t I = o.intermediate;
  if (ends_with("mlp.gate_proj.weight") || ends_with("mlp.up_proj.weight")) {
    v[0 * D + G + g] = 0.4f;  // Unit 0 reads the context of range g: silu(0.4 c)·0.4 c.
  } else if (ends_with("mlp.down_proj.weight")) {
    // A random unit direction in the output coordinates, strength 0.2–0.4 by layer.
    const float strength =
        0.2f + 0.2f * static_cast<float>(Mix64(o.seed * 31 + layer) >> 11) * 0x1.0p-53f;
    std::vector<double> dir(R);
    double norm = 0;
    for (int64_t i = 0; i < R; ++i) {
      dir[i] = SynthNormal(key, static_cast<uint64_t>(i));
      norm += dir[i] * dir[i];
    }
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < R; ++i) {
      v[(first_out + i) * I + 0] = static_cast<float>(strength * dir[i] / norm);
    }
  }
  return v;
}

}  // namespace

float SynthNormal(uint64_t key, uint64_t k) {
  float z[2];
  NormalPair(key, k / 2, &z[0], &z[1]);
  return z[k % 2];
}

absl::Status ValidateSynthOptions(const SynthOptions& o) {
  auto bad = [](absl::string_view why) { return absl::InvalidArgumentError(why); };
  if (o.arch != "llama" && o.arch != "mistral" && o.arch != "qwen2") {
    return bad(absl::StrCat("--arch '", o.arch, "' is not one of llama, mistral, qwen2"));
  }
  if (o.dtype != DType::kF32 && o.dtype != DType::kBF16) {
    return bad("--dtype must be f32 or bf16");
  }
  struct Positive {
    const char* flag;
    int64_t value;
  };
  for (const Positive& p :
       {Positive{"--layers", o.layers}, Positive{"--hidden", o.hidden},
        Positive{"--intermediate", o.intermediate}, Positive{"--heads", o.heads},
        Positive{"--vocab", o.vocab}, Positive{"--max-position", o.max_position}}) {
    if (p.value <= 0) return bad(absl::StrCat(p.flag, " must be positive (got ", p.value, ")"));
    if (p.value > (int64_t{1} << 24)) {
      return bad(absl::StrCat(p.flag, " ", p.value, " is too large"));
    }
  }
  if (o.kv_heads < 0)
    return bad(absl::StrCat("--kv-heads must be positive (got ", o.kv_heads, ")"));
  if (o.head_dim < 0)
    return bad(absl::StrCat("--head-dim must be positive (got ", o.head_dim, ")"));
  if (o.heads % KvHeads(o) != 0) {
    return bad(absl::StrCat("--heads ", o.heads, " is not a multiple of --kv-heads ", KvHeads(o)));
  }
  if (o.head_dim == 0 && o.hidden % o.heads != 0) {
    return bad(absl::StrCat("--hidden ", o.hidden, " is not a multiple of --heads ", o.heads,
                            " (or give --head-dim)"));
  }
  if (HeadDim(o) % 2 != 0) {
    return bad(absl::StrCat("head dim ", HeadDim(o), " is odd; rotary embeddings need it even"));
  }
  if (o.vocab < 3) return bad(absl::StrCat("--vocab ", o.vocab, " < 3 (<unk>, <s>, </s>)"));
  if (o.sliding_window < 0) return bad("--sliding-window must not be negative");
  if (o.sliding_window > 0 && o.arch != "mistral") {
    return bad("--sliding-window is only supported with --arch mistral");
  }
  if (!(o.init_std > 0) || !std::isfinite(o.init_std)) return bad("init std must be positive");
  if (o.planted_groups < 0) return bad("--planted groups must not be negative");
  if (o.planted_groups > 0) {
    const int64_t g = o.planted_groups;
    if (o.arch != "llama") return bad("--planted needs --arch llama");
    if (o.tie_embeddings) return bad("--planted needs an untied head (no --tie-embeddings)");
    if (o.layers < 3) return bad(absl::StrCat("--planted needs at least 3 layers, got ", o.layers));
    if (o.hidden < 2 * g + 8) {
      return bad(absl::StrCat("--planted ", g, " needs --hidden >= ", 2 * g + 8));
    }
    if (HeadDim(o) < g) {
      return bad(absl::StrCat("--planted ", g, " needs a head dim >= ", g, ", got ", HeadDim(o)));
    }
    if (o.vocab < 3 + g) return bad(absl::StrCat("--planted ", g, " needs --vocab >= ", 3 + g));
  }
  if (o.out_dir.empty()) return bad("missing output directory (--out)");
  return absl::OkStatus();
}

std::vector<SynthTensorSpec> SynthTensorSpecs(const SynthOptions& o) {
  using Init = SynthTensorSpec::Init;
  const int64_t d = o.hidden, hd = HeadDim(o), q = o.heads * hd, kv = KvHeads(o) * hd;
  std::vector<SynthTensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {o.vocab, d}, Init::kNormal});
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    specs.push_back({p + "input_layernorm.weight", {d}, Init::kNorm});
    specs.push_back({p + "self_attn.q_proj.weight", {q, d}, Init::kNormal});
    specs.push_back({p + "self_attn.k_proj.weight", {kv, d}, Init::kNormal});
    specs.push_back({p + "self_attn.v_proj.weight", {kv, d}, Init::kNormal});
    if (IsQwen2(o)) {
      specs.push_back({p + "self_attn.q_proj.bias", {q}, Init::kNormal});
      specs.push_back({p + "self_attn.k_proj.bias", {kv}, Init::kNormal});
      specs.push_back({p + "self_attn.v_proj.bias", {kv}, Init::kNormal});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {d, q}, Init::kNormal});
    specs.push_back({p + "post_attention_layernorm.weight", {d}, Init::kNorm});
    specs.push_back({p + "mlp.gate_proj.weight", {o.intermediate, d}, Init::kNormal});
    specs.push_back({p + "mlp.up_proj.weight", {o.intermediate, d}, Init::kNormal});
    specs.push_back({p + "mlp.down_proj.weight", {d, o.intermediate}, Init::kNormal});
  }
  specs.push_back({"model.norm.weight", {d}, Init::kNorm});
  if (!o.tie_embeddings) specs.push_back({"lm_head.weight", {o.vocab, d}, Init::kNormal});
  std::sort(specs.begin(), specs.end(),
            [](const SynthTensorSpec& a, const SynthTensorSpec& b) { return a.name < b.name; });
  return specs;
}

std::string SynthConfigJson(const SynthOptions& o) {
  static const std::map<std::string, std::pair<const char*, const char*>> kArch = {
      {"llama", {"LlamaForCausalLM", "llama"}},
      {"mistral", {"MistralForCausalLM", "mistral"}},
      {"qwen2", {"Qwen2ForCausalLM", "qwen2"}}};
  const auto& [architecture, model_type] = kArch.at(o.arch);
  const char* dtype = o.dtype == DType::kBF16 ? "bfloat16" : "float32";
  ordered_json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  if (!IsQwen2(o)) {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["head_dim"] = HeadDim(o);
  j["hidden_act"] = "silu";
  j["hidden_size"] = o.hidden;
  j["initializer_range"] = o.init_std;
  j["intermediate_size"] = o.intermediate;
  j["max_position_embeddings"] = o.max_position;
  j["num_attention_heads"] = o.heads;
  j["num_hidden_layers"] = o.layers;
  j["num_key_value_heads"] = KvHeads(o);
  j["rms_norm_eps"] = IsQwen2(o) ? 1e-6 : 1e-5;
  // Both spellings: transformers 4.x reads rope_theta, 5.x rope_parameters.
  j["rope_theta"] = RopeTheta(o);
  j["rope_parameters"] = {{"rope_theta", RopeTheta(o)}, {"rope_type", "default"}};
  if (o.arch == "mistral") {
    j["sliding_window"] = o.sliding_window > 0 ? ordered_json(o.sliding_window) : ordered_json();
  }
  if (IsQwen2(o)) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = o.layers;
  }
  j["tie_word_embeddings"] = o.tie_embeddings;
  j["torch_dtype"] = dtype;
  j["dtype"] = dtype;
  j["use_cache"] = true;
  j["vocab_size"] = o.vocab;
  j["swarm_synth"] = {{"seed", o.seed}, {"init_std", o.init_std}};
  if (o.planted_groups > 0) j["swarm_synth"]["planted_groups"] = o.planted_groups;
  return j.dump(2) + "\n";
}

std::string SynthTokenizerJson(int64_t vocab) {
  const std::string kSpace = "\xE2\x96\x81";  // ▁
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) tokens.push_back(absl::StrFormat("<0x%02X>", b));
  tokens.push_back(kSpace);
  for (char c = 0x21; c < 0x7F; ++c) tokens.push_back(std::string(1, c));
  std::vector<std::pair<std::string, std::string>> merges;
  for (char c = 0x21; c < 0x7F; ++c) {
    tokens.push_back(kSpace + c);
    merges.emplace_back(kSpace, std::string(1, c));
  }
  const size_t v = static_cast<size_t>(std::max<int64_t>(vocab, 0));
  if (tokens.size() > v) tokens.resize(v);
  for (size_t i = tokens.size(); i < v; ++i) tokens.push_back(absl::StrCat("<unused_", i, ">"));
  // Keep only merges whose tokens all survived the truncation.
  const size_t first_pair = 3 + 256 + 1 + 94;
  if (v <= first_pair) {
    merges.clear();
  } else {
    merges.resize(std::min(merges.size(), v - first_pair));
  }
  return SentencePieceBpeJson(tokens, merges);
}

absl::Status WriteSafetensorsStreamed(const std::string& path,
                                      const std::vector<StreamedTensor>& tensors,
                                      const std::map<std::string, std::string>& metadata,
                                      const TensorFill& fill) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const StreamedTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || header.contains(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing '", path, "': bad or duplicate tensor name '", t.name, "'"));
    }
    const uint64_t nbytes =
        NumElements(t.shape) * static_cast<uint64_t>(model::StDTypeSize(t.dtype));
    header[t.name] = {{"dtype", model::StDTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    sizes.push_back(nbytes);
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("writing '", path, "': ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", path, "': ", std::strerror(errno)));
  }
  auto write = [&](const void* data, size_t n) -> absl::Status {
    if (n > 0 && std::fwrite(data, 1, n, f.get()) != n) {
      return absl::DataLossError(
          absl::StrCat("writing '", path, "' failed: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  };
  const uint64_t header_len = text.size();
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<uint8_t>(header_len >> (8 * i));
  RETURN_IF_ERROR(write(len_bytes, 8));
  RETURN_IF_ERROR(write(text.data(), text.size()));
  std::vector<char> buffer;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t elem = static_cast<uint64_t>(model::StDTypeSize(tensors[i].dtype));
    const uint64_t step = std::max<uint64_t>(elem, kChunkBytes / elem * elem);
    for (uint64_t pos = 0; pos < sizes[i]; pos += step) {
      const uint64_t n = std::min(step, sizes[i] - pos);
      if (buffer.size() < n) buffer.resize(n);
      RETURN_IF_ERROR(fill(i, pos, buffer.data(), n));
      RETURN_IF_ERROR(write(buffer.data(), n));
    }
  }
  if (std::fflush(f.get()) != 0) {
    return absl::DataLossError(absl::StrCat("writing '", path, "' failed: ", std::strerror(errno)));
  }
  if (std::fclose(f.release()) != 0) {
    return absl::DataLossError(absl::StrCat("closing '", path, "' failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SynthResult> WriteSynthModel(const SynthOptions& options) {
  RETURN_IF_ERROR(ValidateSynthOptions(options));
  RETURN_IF_ERROR(CreateOutputDir(options.out_dir));
  const std::filesystem::path dir(options.out_dir);
  SynthResult result;

  const std::string config_path = (dir / "config.json").string();
  RETURN_IF_ERROR(WriteTextFile(config_path, SynthConfigJson(options)));
  result.files.push_back(config_path);

  RETURN_IF_ERROR(WriteLlamaSideFiles(dir.string(), options.max_position,
                                      SynthTokenizerJson(options.vocab), &result.files));

  const std::vector<SynthTensorSpec> specs = SynthTensorSpecs(options);
  const model::StDType dtype =
      options.dtype == DType::kBF16 ? model::StDType::kBF16 : model::StDType::kF32;
  std::vector<StreamedTensor> tensors;
  std::vector<uint64_t> keys;
  for (const SynthTensorSpec& s : specs) {
    tensors.push_back({s.name, dtype, s.shape});
    keys.push_back(HashName(options.seed, s.name));
    result.num_parameters += static_cast<int64_t>(NumElements(s.shape));
  }
  const uint64_t elem = static_cast<uint64_t>(model::StDTypeSize(dtype));
  const int64_t total_bytes = result.num_parameters * static_cast<int64_t>(elem);
  int64_t written_bytes = 0;
  std::vector<float> planted;  // The current planted tensor's values.
  size_t planted_index = specs.size();
  TensorFill fill = [&](size_t i, uint64_t offset, char* dst, uint64_t nbytes) {
    if (options.planted_groups > 0) {
      if (planted_index != i) {
        planted = PlantedValues(options, specs[i]);
        planted_index = i;
      }
      const float* src = planted.data() + offset / elem;
      for (uint64_t e = 0; e < nbytes / elem; ++e) {
        if (dtype == model::StDType::kF32) {
          std::memcpy(dst + e * 4, &src[e], 4);
        } else {
          const uint16_t b = FloatToBf16(src[e]);
          std::memcpy(dst + e * 2, &b, 2);
        }
      }
    } else {
      GenerateInto(keys[i], specs[i].init, options.init_std, dtype, offset / elem, nbytes / elem,
                   dst);
    }
    written_bytes += static_cast<int64_t>(nbytes);
    if (options.progress) options.progress(written_bytes, total_bytes);
    return absl::OkStatus();
  };
  const std::string weights_path = (dir / "model.safetensors").string();
  const std::string tmp_path = weights_path + ".tmp";
  std::error_code ec;
  absl::Status written = WriteSafetensorsStreamed(tmp_path, tensors, {{"format", "pt"}}, fill);
  if (!written.ok()) {
    std::filesystem::remove(tmp_path, ec);
    return written;
  }
  std::filesystem::rename(tmp_path, weights_path, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("renaming '", tmp_path, "' to '", weights_path, "': ", ec.message()));
  }
  result.weight_bytes = static_cast<int64_t>(std::filesystem::file_size(weights_path, ec));
  result.files.push_back(weights_path);
  return result;
}

}  // namespace swarm::tools
