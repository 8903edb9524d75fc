// Tokenizer: assembles the tokenizer.json pipeline (added tokens → normalizer → pre-tokenizer →
// BPE → post-processor; decoder for the way back) from the stages in tokenizer_internal.h, and
// StreamDecoder.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tokenizer/tokenizer_internal.h"
#include "utf8proc.h"

namespace swarm::tokenizer {

namespace {

using internal::BpeModel;
using internal::Decoder;
using internal::Json;
using internal::Normalizer;
using internal::Piece;
using internal::PostProcessor;
using internal::PreTokenizer;

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A byte trie over added-token contents, for leftmost-longest matching (what the Rust library's
// Aho-Corasick automaton with MatchKind::LeftmostLongest finds).
class TokenTrie {
 public:
  TokenTrie() : nodes_(1) {}

  void Insert(absl::string_view s, int32_t value) {
    int32_t node = 0;
    for (char c : s) {
      const auto byte = static_cast<unsigned char>(c);
      int32_t next = Child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(byte, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    if (node != 0) nodes_[node].value = value;
  }

  bool empty() const { return nodes_.size() == 1; }

  // The value of the longest key that starts at text[pos], or -1; its length goes to `*len`.
  int32_t LongestAt(absl::string_view text, size_t pos, size_t* len) const {
    int32_t node = 0, best = -1;
    for (size_t i = pos; i < text.size(); ++i) {
      node = Child(node, static_cast<unsigned char>(text[i]));
      if (node < 0) break;
      if (nodes_[node].value >= 0) {
        best = nodes_[node].value;
        *len = i + 1 - pos;
      }
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t value = -1;
  };
  int32_t Child(int32_t node, unsigned char byte) const {
    for (const auto& [b, child] : nodes_[node].children) {
      if (b == byte) return child;
    }
    return -1;
  }
  std::vector<Node> nodes_;
};

// A piece of the input: either plain text or an added token (index into the token list).
struct Segment {
  size_t start, end;
  int32_t added;  // -1 for text.
};

bool IsWordChar(char32_t cp) {
  if (cp == '_') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

char32_t LastCodePoint(absl::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return internal::NextCodePoint(s, &start);
}

// Splits `text` around the added tokens found by `trie` (AddedVocabulary::find_matches).
std::vector<Segment> FindAddedTokens(absl::string_view text, const TokenTrie& trie,
                                     const std::vector<AddedToken>& tokens) {
  std::vector<Segment> segments;
  if (trie.empty() || text.empty()) {
    segments.push_back({0, text.size(), -1});
    return segments;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = 0;
    const int32_t index = trie.LongestAt(text, pos, &len);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens[index];
    size_t start = pos, stop = pos + len;
    pos = stop;
    if (token.single_word) {
      const bool start_space = start == 0 || !IsWordChar(LastCodePoint(text.substr(0, start)));
      size_t p = stop;
      const bool stop_space = stop == text.size() || !IsWordChar(internal::NextCodePoint(text, &p));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > start_offset) {
        size_t c = s - 1;
        while (c > 0 && (static_cast<unsigned char>(text[c]) & 0xC0) == 0x80) --c;
        size_t q = c;
        if (!internal::IsUnicodeWhitespace(internal::NextCodePoint(text, &q))) {
          break;
        }
        s = c;
      }
      start = s;
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t q = stop;
        if (!internal::IsUnicodeWhitespace(internal::NextCodePoint(text, &q))) {
          break;
        }
        stop = q;
      }
      pos = stop;
    }
    if (start_offset < start) segments.push_back({start_offset, start, -1});
    segments.push_back({start, stop, index});
    start_offset = stop;
  }
  if (start_offset != text.size()) segments.push_back({start_offset, text.size(), -1});
  return segments;
}

// Reads the token named by tokenizer_config.json's `key`: a string, {"content": ...}, or null.
// Returns nullopt when the key is absent, "" for an explicit null.
std::optional<std::string> ConfigToken(const Json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const Json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
    return v.at("content").get<std::string>();
  }
  return std::string();
}

class BpeTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(const Json& root,
                                                              internal::BpeTables tables);

  absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text,
                                              bool add_special_tokens) const override;
  std::string Decode(absl::Span<const int64_t> ids, bool skip_special) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int64_t> TokenToId(absl::string_view token) const override;
  std::optional<std::string> IdToToken(int64_t id) const override;
  std::optional<int64_t> bos_id() const override { return bos_id_; }
  std::optional<int64_t> eos_id() const override { return eos_id_; }

  // Overrides BOS/EOS with tokenizer_config.json's bos_token/eos_token where it names them.
  void ApplyConfig(const Json& config);

 private:
  const std::string* TokenOf(int64_t id) const;
  absl::Status EncodeText(std::string text, bool at_origin, std::vector<int32_t>* ids) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;

  std::vector<AddedToken> added_;
  absl::flat_hash_map<int64_t, int32_t> added_by_id_;
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  absl::flat_hash_set<std::string> special_contents_;
  TokenTrie raw_trie_;         // Tokens with normalized=false, matched in the raw input.
  TokenTrie normalized_trie_;  // Tokens with normalized=true, matched after normalization.

  int64_t vocab_size_ = 0;
  std::optional<int64_t> bos_id_;
  std::optional<int64_t> eos_id_;
};

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(const Json& root,
                                                                   internal::BpeTables tables) {
  if (!root.is_object()) return absl::InvalidArgumentError("top level is not a JSON object");
  if (!root.contains("model") || !root.at("model").is_object()) {
    return absl::InvalidArgumentError("no \"model\" object");
  }
  const Json& model = root.at("model");
  // Files from older tokenizers versions omit "type" for BPE; the vocab+merges shape says it.
  const std::string type = model.contains("type") ? model.at("type").get<std::string>()
                           : tables.has_merges    ? "BPE"
                                                  : "";
  if (type != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported model type '", type, "' (only BPE tokenizers are supported)"));
  }
  if (model.contains("dropout") && model.at("dropout").is_number() &&
      model.at("dropout").get<double>() > 0.0) {
    return absl::InvalidArgumentError("BPE dropout is not supported (inference only)");
  }

  auto tok = std::unique_ptr<BpeTokenizer>(new BpeTokenizer());
  ASSIGN_OR_RETURN(tok->model_, BpeModel::Create(model, std::move(tables)));
  auto field = [&root](const char* key) -> const Json& {
    static const Json* null = new Json(nullptr);
    return root.contains(key) ? root.at(key) : *null;
  };
  {
    auto n = internal::MakeNormalizer(field("normalizer"));
    if (!n.ok()) return Annotate(n.status(), "normalizer");
    tok->normalizer_ = *std::move(n);
    auto p = internal::MakePreTokenizer(field("pre_tokenizer"));
    if (!p.ok()) return Annotate(p.status(), "pre_tokenizer");
    tok->pre_tokenizer_ = *std::move(p);
    auto pp = internal::MakePostProcessor(field("post_processor"));
    if (!pp.ok()) return Annotate(pp.status(), "post_processor");
    tok->post_processor_ = *std::move(pp);
    auto d = internal::MakeDecoder(field("decoder"));
    if (!d.ok()) return Annotate(d.status(), "decoder");
    tok->decoder_ = *std::move(d);
  }

  int64_t max_id = tok->model_->max_id();
  const Json& added = field("added_tokens");
  if (!added.is_null() && !added.is_array()) {
    return absl::InvalidArgumentError("added_tokens is not an array");
  }
  for (const Json& a : added.is_array() ? added : Json::array()) {
    AddedToken t;
    if (!a.is_object() || !a.contains("id") || !a.contains("content") ||
        !a.at("id").is_number_integer() || !a.at("content").is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("added_tokens entry ", a.dump(), " needs an integer id and a content"));
    }
    t.id = a.at("id").get<int64_t>();
    t.content = a.at("content").get<std::string>();
    if (t.id < 0 || t.content.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("added_tokens entry ", a.dump(), " has a negative id or empty content"));
    }
    t.special = a.value("special", false);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    t.single_word = a.value("single_word", false);
    t.normalized = a.value("normalized", !t.special);
    max_id = std::max(max_id, t.id);
    const auto index = static_cast<int32_t>(tok->added_.size());
    tok->added_by_id_[t.id] = index;
    tok->added_by_content_[t.content] = index;
    if (t.special) tok->special_contents_.insert(t.content);
    if (t.normalized && tok->normalizer_ != nullptr) {
      std::string key = t.content;
      RETURN_IF_ERROR(tok->normalizer_->Normalize(&key));
      tok->normalized_trie_.Insert(key, index);
    } else {
      tok->raw_trie_.Insert(t.content, index);
    }
    tok->added_.push_back(std::move(t));
  }
  tok->vocab_size_ = max_id + 1;

  // BOS/EOS defaults: what the post-processor adds, else the conventional names.
  if (tok->post_processor_ != nullptr) {
    std::vector<int64_t> prefix, suffix;
    tok->post_processor_->Surroundings(&prefix, &suffix);
    if (!prefix.empty()) tok->bos_id_ = prefix.front();
    if (!suffix.empty()) tok->eos_id_ = suffix.back();
  }
  if (!tok->bos_id_.has_value()) {
    for (const char* name : {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"}) {
      if (auto id = tok->TokenToId(name); id.has_value()) {
        tok->bos_id_ = id;
        break;
      }
    }
  }
  if (!tok->eos_id_.has_value()) {
    for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>"}) {
      if (auto id = tok->TokenToId(name); id.has_value()) {
        tok->eos_id_ = id;
        break;
      }
    }
  }
  return tok;
}

void BpeTokenizer::ApplyConfig(const Json& config) {
  if (std::optional<std::string> bos = ConfigToken(config, "bos_token"); bos.has_value()) {
    bos_id_ = bos->empty() ? std::nullopt : TokenToId(*bos);
  }
  if (std::optional<std::string> eos = ConfigToken(config, "eos_token"); eos.has_value()) {
    if (std::optional<int64_t> id = eos->empty() ? std::nullopt : TokenToId(*eos)) eos_id_ = id;
  }
}

absl::Status BpeTokenizer::EncodeText(std::string text, bool at_origin,
                                      std::vector<int32_t>* ids) const {
  if (normalizer_ != nullptr) RETURN_IF_ERROR(normalizer_->Normalize(&text));
  std::vector<Segment> segments = FindAddedTokens(text, normalized_trie_, added_);
  std::vector<Piece> pieces;
  for (const Segment& seg : segments) {
    if (seg.added >= 0) {
      ids->push_back(static_cast<int32_t>(added_[seg.added].id));
      continue;
    }
    pieces.clear();
    pieces.push_back(
        Piece{text.substr(seg.start, seg.end - seg.start), at_origin && seg.start == 0});
    if (pre_tokenizer_ != nullptr) RETURN_IF_ERROR(pre_tokenizer_->PreTokenize(&pieces));
    for (const Piece& p : pieces) RETURN_IF_ERROR(model_->Tokenize(p.text, ids));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> BpeTokenizer::Encode(absl::string_view text,
                                                          bool add_special_tokens) const {
  if (!internal::IsValidUtf8(text)) {
    return absl::InvalidArgumentError("text to encode is not valid UTF-8");
  }
  std::vector<int32_t> ids;
  for (const Segment& seg : FindAddedTokens(text, raw_trie_, added_)) {
    if (seg.added >= 0) {
      ids.push_back(static_cast<int32_t>(added_[seg.added].id));
    } else {
      RETURN_IF_ERROR(EncodeText(std::string(text.substr(seg.start, seg.end - seg.start)),
                                 seg.start == 0, &ids));
    }
  }
  std::vector<int64_t> out(ids.begin(), ids.end());
  if (add_special_tokens && post_processor_ != nullptr) post_processor_->Process(&out);
  return out;
}

const std::string* BpeTokenizer::TokenOf(int64_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
    return &added_[it->second].content;
  }
  if (id < 0 || id > std::numeric_limits<int32_t>::max()) return nullptr;
  return model_->IdToToken(static_cast<int32_t>(id));
}

std::string BpeTokenizer::Decode(absl::Span<const int64_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    const std::string* token = TokenOf(id);
    if (token == nullptr) continue;  // Unknown ids decode to nothing, as in the Rust library.
    if (skip_special && special_contents_.contains(*token)) continue;
    tokens.push_back(*token);
  }
  if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
  decoder_->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

std::optional<int64_t> BpeTokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_by_content_.find(token); it != added_by_content_.end()) {
    return added_[it->second].id;
  }
  if (std::optional<int32_t> id = model_->TokenToId(token)) return *id;
  return std::nullopt;
}

std::optional<std::string> BpeTokenizer::IdToToken(int64_t id) const {
  const std::string* token = TokenOf(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> ParseTokenizer(absl::string_view json_text,
                                                             absl::string_view source) {
  const std::string context = absl::StrCat("tokenizer '", source, "'");
  try {
    Json root;
    internal::BpeTables tables;
    absl::Status parsed = internal::ParseTokenizerJson(json_text, &root, &tables);
    if (!parsed.ok()) return Annotate(parsed, context);
    auto tok = BpeTokenizer::Create(root, std::move(tables));
    if (!tok.ok()) return Annotate(tok.status(), context);
    return tok;
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(context, ": ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view json_text,
                                                               absl::string_view source) {
  ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok, ParseTokenizer(json_text, source));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file(path);
  if (fs::is_directory(file, ec)) file /= "tokenizer.json";
  ASSIGN_OR_RETURN(std::string text, internal::ReadWholeFile(file.string()));
  ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tok, ParseTokenizer(text, file.string()));

  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(std::string config_text, internal::ReadWholeFile(config_path.string()));
    Json config = Json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer config '", config_path.string(), "': malformed JSON"));
    }
    tok->ApplyConfig(config);
  }
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder.

namespace {

// The length of `text` without trailing U+FFFD characters (which may be bytes of a character
// that later tokens complete) or a trailing incomplete UTF-8 sequence.
size_t StableLength(absl::string_view text) {
  size_t end = text.size();
  // An incomplete sequence at the very end (never produced by our decoders, but cheap to guard).
  size_t lead = end;
  while (lead > 0 && end - lead < 4 &&
         (static_cast<unsigned char>(text[lead - 1]) & 0xC0) == 0x80) {
    --lead;
  }
  if (lead > 0) {
    const auto b = static_cast<unsigned char>(text[lead - 1]);
    if (b >= 0xC0 && internal::Utf8SequenceLength(b) > static_cast<int>(end - (lead - 1))) {
      end = lead - 1;
    }
  }
  const absl::string_view r = internal::kReplacementChar;
  while (end >= r.size() && text.substr(end - r.size(), r.size()) == r) end -= r.size();
  return end;
}

constexpr size_t kStreamWindow = 8;

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer* tokenizer, std::vector<int64_t> prefix_ids,
                             bool skip_special)
    : tokenizer_(tokenizer), ids_(std::move(prefix_ids)), skip_special_(skip_special) {
  emitted_bytes_ = StableLength(tokenizer_->Decode(ids_, skip_special_));
}

std::string StreamDecoder::Push(int64_t id) {
  ids_.push_back(id);
  const std::string text = tokenizer_->Decode(ids_, skip_special_);
  const size_t stable = StableLength(text);
  std::string piece;
  if (stable > emitted_bytes_) {
    piece = text.substr(emitted_bytes_, stable - emitted_bytes_);
    emitted_bytes_ = stable;
  }
  // Keep the decoded window short: restart it a few tokens back once everything is emitted and
  // the restarted window decodes to a clean suffix of the text (decoders act token-locally, so
  // later pieces come out the same).
  if (stable == text.size() && emitted_bytes_ == text.size() && ids_.size() >= 2 * kStreamWindow) {
    std::vector<int64_t> tail(ids_.end() - kStreamWindow, ids_.end());
    const std::string tail_text = tokenizer_->Decode(tail, skip_special_);
    if (absl::string_view(tail_text).find(internal::kReplacementChar) == absl::string_view::npos &&
        tail_text.size() <= text.size() &&
        text.compare(text.size() - tail_text.size(), tail_text.size(), tail_text) == 0) {
      ids_ = std::move(tail);
      emitted_bytes_ = tail_text.size();
    }
  }
  return piece;
}

std::string StreamDecoder::Flush() {
  const std::string text = tokenizer_->Decode(ids_, skip_special_);
  std::string piece;
  if (text.size() > emitted_bytes_) piece = text.substr(emitted_bytes_);
  emitted_bytes_ = text.size();
  return piece;
}

namespace internal {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading '", path, "'"));
  return ss.str();
}

}  // namespace internal

}  // namespace swarm::tokenizer
