#include "tools/llama2c.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/hf_files.h"

namespace swarm::tools {
namespace {

constexpr uint32_t kMagic = 0x616b3432;  // "ak42" as a little-endian uint32.
constexpr int64_t kVersionedHeaderBytes = 256;
constexpr int64_t kLegacyHeaderBytes = 7 * 4;

using ordered_json = nlohmann::ordered_json;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

absl::StatusOr<FilePtr> OpenForRead(const std::string& path, absl::string_view what) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, " '", path, "' does not exist"));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is a directory"));
  }
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (f == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", what, " '", path, "': ", std::strerror(errno)));
  }
  return f;
}

// Sequential reader that names the file and the item on a short read.
class Reader {
 public:
  Reader(std::FILE* f, std::string path, uint64_t size)
      : f_(f), path_(std::move(path)), size_(size) {}

  absl::Status Read(void* dst, uint64_t n, absl::string_view what) {
    if (pos_ + n > size_) {
      return absl::DataLossError(absl::StrCat("'", path_, "' is truncated: reading ", what,
                                              " needs ", n, " bytes at offset ", pos_,
                                              " but the file has ", size_));
    }
    if (n > 0 && std::fread(dst, 1, n, f_) != n) {
      return absl::DataLossError(
          absl::StrCat("'", path_, "': read error at offset ", pos_, " reading ", what));
    }
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    if (pos_ + n > size_) {
      return absl::DataLossError(absl::StrCat("'", path_, "' is truncated: skipping ", what,
                                              " needs ", n, " bytes at offset ", pos_,
                                              " but the file has ", size_));
    }
    if (fseeko(f_, static_cast<off_t>(pos_ + n), SEEK_SET) != 0) {
      return absl::DataLossError(absl::StrCat("'", path_, "': seek failed at offset ", pos_));
    }
    pos_ += n;
    return absl::OkStatus();
  }

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }

 private:
  std::FILE* f_;
  std::string path_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// How a tensor's rows must be permuted on the way to HF layout.
enum class Rotary { kNone, kQuery, kKey };

// One weight in file order.
struct Slot {
  std::string name;  // HF name; empty = skipped (freq_cis).
  std::vector<int64_t> shape;
  Rotary rotary = Rotary::kNone;

  int64_t NumElements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

std::string LayerName(int layer, absl::string_view suffix) {
  return absl::StrCat("model.layers.", layer, ".", suffix);
}

// Appends one slot per layer: `suffix` tensors of `shape`.
void AddPerLayer(std::vector<Slot>* slots, const Llama2cHeader& h, absl::string_view suffix,
                 std::vector<int64_t> shape, Rotary rotary = Rotary::kNone) {
  for (int l = 0; l < h.n_layers; ++l) slots->push_back({LayerName(l, suffix), shape, rotary});
}

// Matrices in the order every format stores them (after the norms / embeddings).
void AddMatrices(std::vector<Slot>* slots, const Llama2cHeader& h) {
  const int64_t dim = h.dim, kv_dim = h.kv_dim();
  AddPerLayer(slots, h, "self_attn.q_proj.weight", {dim, dim}, Rotary::kQuery);
  AddPerLayer(slots, h, "self_attn.k_proj.weight", {kv_dim, dim}, Rotary::kKey);
  AddPerLayer(slots, h, "self_attn.v_proj.weight", {kv_dim, dim});
  AddPerLayer(slots, h, "self_attn.o_proj.weight", {dim, dim});
}

void AddNorms(std::vector<Slot>* slots, const Llama2cHeader& h) {
  AddPerLayer(slots, h, "input_layernorm.weight", {h.dim});
  AddPerLayer(slots, h, "post_attention_layernorm.weight", {h.dim});
  slots->push_back({"model.norm.weight", {h.dim}});
}

void AddFfn(std::vector<Slot>* slots, const Llama2cHeader& h) {
  const int64_t dim = h.dim, hidden = h.hidden_dim;
  AddPerLayer(slots, h, "mlp.gate_proj.weight", {hidden, dim});  // w1
  AddPerLayer(slots, h, "mlp.down_proj.weight", {dim, hidden});  // w2
  AddPerLayer(slots, h, "mlp.up_proj.weight", {hidden, dim});    // w3
}

// The file's weights in storage order. For version 2 the norms are the fp32 part and the rest
// is quantised, so `fp32_slots` and `q8_slots` are returned separately.
void LayoutSlots(const Llama2cHeader& h, std::vector<Slot>* fp32_slots,
                 std::vector<Slot>* q8_slots) {
  const int64_t dim = h.dim, vocab = h.vocab_size;
  const Slot embed{"model.embed_tokens.weight", {vocab, dim}};
  const Slot head{"lm_head.weight", {vocab, dim}};
  if (h.version == 0) {
    const int64_t freq = static_cast<int64_t>(h.seq_len) * (h.head_dim() / 2);
    std::vector<Slot>& s = *fp32_slots;
    s.push_back(embed);
    AddPerLayer(&s, h, "input_layernorm.weight", {dim});
    AddMatrices(&s, h);
    AddPerLayer(&s, h, "post_attention_layernorm.weight", {dim});
    AddFfn(&s, h);
    s.push_back({"model.norm.weight", {dim}});
    s.push_back({"", {freq}});  // freq_cis_real
    s.push_back({"", {freq}});  // freq_cis_imag
    if (!h.shared_classifier) s.push_back(head);
    return;
  }
  AddNorms(fp32_slots, h);
  std::vector<Slot>& m = h.version == 1 ? *fp32_slots : *q8_slots;
  m.push_back(embed);
  AddMatrices(&m, h);
  AddFfn(&m, h);
  if (!h.shared_classifier) m.push_back(head);
}

absl::Status ValidateHeader(const Llama2cHeader& h, const std::string& path) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", path, "' has a bad llama2.c header (dim ", h.dim, ", hidden_dim ",
        h.hidden_dim, ", n_layers ", h.n_layers, ", n_heads ", h.n_heads, ", n_kv_heads ",
        h.n_kv_heads, ", vocab_size ", h.vocab_size, ", seq_len ", h.seq_len, "): ", why));
  };
  // Upper bounds keep the size arithmetic far from overflow and reject files that are not
  // llama2.c checkpoints at all.
  if (h.dim <= 0 || h.dim > (1 << 20)) return bad("dim out of range");
  if (h.hidden_dim <= 0 || h.hidden_dim > (1 << 22)) return bad("hidden_dim out of range");
  if (h.n_layers <= 0 || h.n_layers > 4096) return bad("n_layers out of range");
  if (h.n_heads <= 0 || h.n_heads > h.dim) return bad("n_heads out of range");
  if (h.n_kv_heads <= 0 || h.n_kv_heads > h.n_heads) return bad("n_kv_heads out of range");
  if (h.vocab_size <= 0 || h.vocab_size > (1 << 24)) return bad("vocab_size out of range");
  if (h.seq_len <= 0 || h.seq_len > (1 << 24)) return bad("seq_len out of range");
  if (h.dim % h.n_heads != 0) return bad("dim is not a multiple of n_heads");
  if (h.n_heads % h.n_kv_heads != 0) return bad("n_heads is not a multiple of n_kv_heads");
  if (h.head_dim() % 2 != 0) return bad("head size (dim / n_heads) is odd");
  if (h.version == 2 && h.group_size <= 0) {
    return bad(absl::StrCat("version 2 group_size ", h.group_size, " is not positive"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Llama2cHeader> ReadHeader(Reader& reader, const std::string& path) {
  Llama2cHeader h;
  uint32_t magic = 0;
  RETURN_IF_ERROR(reader.Read(&magic, 4, "the header"));
  int32_t params[7];
  if (magic == kMagic) {
    int32_t version = 0;
    RETURN_IF_ERROR(reader.Read(&version, 4, "the header version"));
    if (version != 1 && version != 2) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint '", path,
                                                     "' has llama2.c format version ", version,
                                                     "; supported: 0 (legacy), 1, 2"));
    }
    h.version = version;
    RETURN_IF_ERROR(reader.Read(params, sizeof(params), "the header"));
    uint8_t shared = 0;
    RETURN_IF_ERROR(reader.Read(&shared, 1, "the header"));
    h.shared_classifier = shared != 0;
    if (version == 2) {
      RETURN_IF_ERROR(reader.Read(&h.group_size, 4, "the header"));
    }
    RETURN_IF_ERROR(reader.Skip(kVersionedHeaderBytes - reader.pos(), "the header padding"));
  } else {
    params[0] = static_cast<int32_t>(magic);
    RETURN_IF_ERROR(reader.Read(params + 1, sizeof(int32_t) * 6, "the header"));
  }
  h.dim = params[0];
  h.hidden_dim = params[1];
  h.n_layers = params[2];
  h.n_heads = params[3];
  h.n_kv_heads = params[4];
  h.vocab_size = params[5];
  h.seq_len = params[6];
  if (h.version == 0) {
    h.shared_classifier = h.vocab_size > 0;
    if (h.vocab_size < 0 && h.vocab_size != INT32_MIN) h.vocab_size = -h.vocab_size;
  }
  RETURN_IF_ERROR(ValidateHeader(h, path));
  return h;
}

uint64_t ExpectedBytes(const Llama2cHeader& h, const std::vector<Slot>& fp32,
                       const std::vector<Slot>& q8) {
  uint64_t bytes = h.version == 0 ? kLegacyHeaderBytes : kVersionedHeaderBytes;
  for (const Slot& s : fp32) bytes += 4 * static_cast<uint64_t>(s.NumElements());
  for (const Slot& s : q8) {
    uint64_t n = static_cast<uint64_t>(s.NumElements());
    bytes += n + 4 * (n / static_cast<uint64_t>(h.group_size));
  }
  return bytes;
}

std::string FloatsToBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

// Permutes q/k rows as needed and wraps the values as an F32 tensor.
model::TensorToWrite MakeTensor(const Slot& slot, const Llama2cHeader& h,
                                std::vector<float> values) {
  if (slot.rotary != Rotary::kNone) {
    const int64_t heads = slot.rotary == Rotary::kQuery ? h.n_heads : h.n_kv_heads;
    values = InterleavedToHalfRotary(values, heads, h.head_dim(), h.dim);
  }
  model::TensorToWrite t;
  t.name = slot.name;
  t.dtype = model::StDType::kF32;
  t.shape = slot.shape;
  t.data = FloatsToBytes(values);
  return t;
}

std::string FileSizeMismatch(const std::string& path, const Llama2cHeader& h, uint64_t expected,
                             uint64_t actual) {
  return absl::StrCat(
      "checkpoint '", path, "' has ", actual, " bytes but its version-", h.version, " header (dim ",
      h.dim, ", hidden_dim ", h.hidden_dim, ", n_layers ", h.n_layers, ", n_heads ", h.n_heads,
      ", n_kv_heads ", h.n_kv_heads, ", vocab_size ", h.vocab_size, ", seq_len ", h.seq_len,
      h.shared_classifier ? ", shared classifier" : ", own classifier", ") implies ", expected,
      actual < expected ? " (truncated)" : " (trailing bytes: not this format?)");
}

}  // namespace

std::vector<float> InterleavedToHalfRotary(absl::Span<const float> w, int64_t n_heads,
                                           int64_t head_dim, int64_t cols) {
  std::vector<float> out(w.size());
  const int64_t half = head_dim / 2;
  for (int64_t head = 0; head < n_heads; ++head) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t src = head * head_dim + 2 * i + j;
        const int64_t dst = head * head_dim + j * half + i;
        std::memcpy(out.data() + dst * cols, w.data() + src * cols, cols * sizeof(float));
      }
    }
  }
  return out;
}

absl::StatusOr<Llama2cModel> ReadLlama2cCheckpoint(const std::string& path) {
  ASSIGN_OR_RETURN(FilePtr f, OpenForRead(path, "checkpoint"));
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("cannot stat checkpoint '", path, "': ", ec.message()));
  }
  Reader reader(f.get(), path, size);
  ASSIGN_OR_RETURN(Llama2cHeader h, ReadHeader(reader, path));

  std::vector<Slot> fp32_slots, q8_slots;
  LayoutSlots(h, &fp32_slots, &q8_slots);
  for (const Slot& s : q8_slots) {
    if (s.NumElements() % h.group_size != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint '", path, "': tensor ", s.name, " has ", s.NumElements(),
                       " elements, not a multiple of the Q8_0 group size ", h.group_size));
    }
  }
  const uint64_t expected = ExpectedBytes(h, fp32_slots, q8_slots);
  if (expected > size) return absl::DataLossError(FileSizeMismatch(path, h, expected, size));
  if (expected < size) {
    return absl::InvalidArgumentError(FileSizeMismatch(path, h, expected, size));
  }

  Llama2cModel model;
  model.header = h;
  for (const Slot& slot : fp32_slots) {
    const uint64_t n = static_cast<uint64_t>(slot.NumElements());
    const std::string what = slot.name.empty() ? "freq_cis" : slot.name;
    if (slot.name.empty()) {
      RETURN_IF_ERROR(reader.Skip(n * sizeof(float), what));
      continue;
    }
    std::vector<float> values(n);
    RETURN_IF_ERROR(reader.Read(values.data(), n * sizeof(float), what));
    model.tensors.push_back(MakeTensor(slot, h, std::move(values)));
  }
  if (!q8_slots.empty()) {
    // All int8 payloads come first, then all scales (runq.c keeps the weights contiguous).
    std::vector<std::vector<int8_t>> quants;
    quants.reserve(q8_slots.size());
    for (const Slot& slot : q8_slots) {
      std::vector<int8_t> q(slot.NumElements());
      RETURN_IF_ERROR(reader.Read(q.data(), q.size(), absl::StrCat(slot.name, " (int8)")));
      quants.push_back(std::move(q));
    }
    for (size_t k = 0; k < q8_slots.size(); ++k) {
      const std::vector<int8_t>& q = quants[k];
      std::vector<float> scales(q.size() / h.group_size);
      RETURN_IF_ERROR(reader.Read(scales.data(), scales.size() * sizeof(float),
                                  absl::StrCat(q8_slots[k].name, " (scales)")));
      std::vector<float> values(q.size());
      for (size_t i = 0; i < q.size(); ++i) values[i] = q[i] * scales[i / h.group_size];
      quants[k].clear();
      quants[k].shrink_to_fit();
      model.tensors.push_back(MakeTensor(q8_slots[k], h, std::move(values)));
    }
  }
  return model;
}

absl::StatusOr<Llama2cVocab> ReadLlama2cTokenizer(const std::string& path, int64_t vocab_size) {
  ASSIGN_OR_RETURN(FilePtr f, OpenForRead(path, "tokenizer"));
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("cannot stat tokenizer '", path, "': ", ec.message()));
  }
  Reader reader(f.get(), path, size);
  Llama2cVocab vocab;
  RETURN_IF_ERROR(reader.Read(&vocab.max_token_length, 4, "max_token_length"));
  if (vocab.max_token_length <= 0 || vocab.max_token_length > (1 << 16)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer '", path, "': max_token_length ",
                                                   vocab.max_token_length, " is out of range"));
  }
  vocab.pieces.reserve(vocab_size);
  vocab.scores.reserve(vocab_size);
  for (int64_t i = 0; i < vocab_size; ++i) {
    float score = 0;
    int32_t len = 0;
    const std::string what = absl::StrCat("token ", i, " of ", vocab_size);
    RETURN_IF_ERROR(reader.Read(&score, 4, what));
    RETURN_IF_ERROR(reader.Read(&len, 4, what));
    if (len < 0 || len > vocab.max_token_length) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer '", path, "': token ", i,
                                                     " has length ", len, " (max_token_length ",
                                                     vocab.max_token_length, ")"));
    }
    std::string piece(len, '\0');
    RETURN_IF_ERROR(reader.Read(piece.data(), len, what));
    vocab.pieces.push_back(std::move(piece));
    vocab.scores.push_back(score);
  }
  if (reader.pos() != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer '", path, "' has ", size - reader.pos(), " bytes left after ",
                     vocab_size, " tokens: it does not match the checkpoint's vocab_size"));
  }
  return vocab;
}

absl::StatusOr<std::vector<std::string>> Llama2cTokenStrings(const Llama2cVocab& vocab) {
  static const char* const kSpecials[] = {"<unk>", "<s>", "</s>"};
  std::vector<std::string> tokens;
  tokens.reserve(vocab.pieces.size());
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    std::string token =
        i < 3 ? kSpecials[i] : absl::StrReplaceAll(vocab.pieces[i], {{" ", "\xE2\x96\x81"}});
    auto [it, inserted] = seen.emplace(token, i);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: ids ", it->second, " and ", i, " are both '", token, "'"));
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

std::vector<std::pair<std::string, std::string>> MergesFromScores(
    const std::vector<std::string>& tokens, absl::Span<const float> scores) {
  std::unordered_map<std::string, int64_t> ids;
  ids.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) ids.emplace(tokens[i], static_cast<int64_t>(i));

  struct Merge {
    int64_t left, right;
    float score;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    std::vector<Merge> local;
    for (size_t cut = 1; cut < t.size(); ++cut) {
      // Only cut at UTF-8 character boundaries (continuation bytes are 10xxxxxx).
      if ((static_cast<unsigned char>(t[cut]) & 0xC0) == 0x80) continue;
      auto l = ids.find(t.substr(0, cut));
      auto r = ids.find(t.substr(cut));
      if (l == ids.end() || r == ids.end()) continue;
      local.push_back({l->second, r->second, i < scores.size() ? scores[i] : 0.0f});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const Merge& m : merges) out.emplace_back(tokens[m.left], tokens[m.right]);
  return out;
}

std::string SentencePieceBpeJson(const std::vector<std::string>& tokens,
                                 const std::vector<std::pair<std::string, std::string>>& merges) {
  const std::string kSpace = "\xE2\x96\x81";  // ▁
  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  static const char* const kSpecials[] = {"<unk>", "<s>", "</s>"};
  for (int id = 0; id < 3 && id < static_cast<int>(tokens.size()); ++id) {
    ordered_json t;
    t["id"] = id;
    t["content"] = kSpecials[id];
    t["single_word"] = false;
    t["lstrip"] = false;
    t["rstrip"] = false;
    t["normalized"] = false;
    t["special"] = true;
    added.push_back(t);
  }
  j["added_tokens"] = added;
  ordered_json prepend = {{"type", "Prepend"}, {"prepend", kSpace}};
  ordered_json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {prepend, replace}}};
  j["pre_tokenizer"] = nullptr;
  auto special = [](const char* id) {
    return ordered_json{{"SpecialToken", {{"id", id}, {"type_id", 0}}}};
  };
  auto sequence = [](const char* id) {
    return ordered_json{{"Sequence", {{"id", id}, {"type_id", 0}}}};
  };
  ordered_json post;
  post["type"] = "TemplateProcessing";
  post["single"] = {special("<s>"), sequence("A")};
  post["pair"] = {special("<s>"), sequence("A"), special("<s>"), sequence("B")};
  ordered_json bos;
  bos["id"] = "<s>";
  bos["ids"] = {1};
  bos["tokens"] = {"<s>"};
  post["special_tokens"] = {{"<s>", bos}};
  j["post_processor"] = post;
  ordered_json decoder;
  decoder["type"] = "Sequence";
  ordered_json strip = {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}};
  decoder["decoders"] = {
      ordered_json{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
      ordered_json{{"type", "ByteFallback"}}, ordered_json{{"type", "Fuse"}}, strip};
  j["decoder"] = decoder;
  ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = "<unk>";
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = true;
  model["byte_fallback"] = true;
  model["ignore_merges"] = false;
  ordered_json vocab = ordered_json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  model["vocab"] = std::move(vocab);
  ordered_json merge_list = ordered_json::array();
  for (const auto& [l, r] : merges) merge_list.push_back({l, r});
  model["merges"] = std::move(merge_list);
  j["model"] = std::move(model);
  // Token strings come from files and may hold invalid UTF-8; replace rather than throw.
  return j.dump(2, ' ', false, ordered_json::error_handler_t::replace);
}

std::string Llama2cConfigJson(const Llama2cHeader& h) {
  ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["head_dim"] = h.head_dim();
  j["hidden_act"] = "silu";
  j["hidden_size"] = h.dim;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = h.hidden_dim;
  j["max_position_embeddings"] = h.seq_len;
  j["mlp_bias"] = false;
  j["num_attention_heads"] = h.n_heads;
  j["num_hidden_layers"] = h.n_layers;
  j["num_key_value_heads"] = h.n_kv_heads;
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = 1e-5;
  // Both spellings: transformers 4.x reads rope_theta, 5.x rope_parameters.
  j["rope_theta"] = 10000.0;
  j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}};
  j["tie_word_embeddings"] = h.shared_classifier;
  j["torch_dtype"] = "float32";
  j["use_cache"] = true;
  j["vocab_size"] = h.vocab_size;
  return j.dump(2);
}

absl::StatusOr<ConvertLlama2cResult> ConvertLlama2c(const ConvertLlama2cOptions& options) {
  if (options.checkpoint_path.empty()) {
    return absl::InvalidArgumentError("no llama2.c checkpoint given");
  }
  if (options.out_dir.empty()) return absl::InvalidArgumentError("no output directory given");
  ASSIGN_OR_RETURN(Llama2cModel model, ReadLlama2cCheckpoint(options.checkpoint_path));
  const Llama2cHeader& h = model.header;

  // Read and check the tokenizer before writing anything, so a bad tokenizer leaves no
  // half-converted directory behind.
  std::string tokenizer_json;
  int64_t num_merges = 0;
  if (!options.tokenizer_path.empty()) {
    ASSIGN_OR_RETURN(Llama2cVocab vocab,
                     ReadLlama2cTokenizer(options.tokenizer_path, h.vocab_size));
    auto tokens = Llama2cTokenStrings(vocab);
    if (!tokens.ok()) return Annotate(tokens.status(), options.tokenizer_path);
    auto merges = MergesFromScores(*tokens, vocab.scores);
    num_merges = static_cast<int64_t>(merges.size());
    tokenizer_json = SentencePieceBpeJson(*tokens, merges);
  }

  RETURN_IF_ERROR(CreateOutputDir(options.out_dir));
  const std::filesystem::path dir(options.out_dir);
  ConvertLlama2cResult result;
  result.header = h;
  result.num_merges = num_merges;

  const std::string config_path = (dir / "config.json").string();
  RETURN_IF_ERROR(WriteTextFile(config_path, Llama2cConfigJson(h) + "\n"));
  result.files.push_back(config_path);

  const std::string weights_path = (dir / "model.safetensors").string();
  RETURN_IF_ERROR(Annotate(model::WriteSafetensors(weights_path, model.tensors, {{"format", "pt"}}),
                           absl::StrCat("writing '", weights_path, "'")));
  result.files.push_back(weights_path);

  RETURN_IF_ERROR(WriteLlamaSideFiles(options.out_dir, h.seq_len, tokenizer_json, &result.files));
  return result;
}

}  // namespace swarm::tools
