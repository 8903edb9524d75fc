// Private to the tokenizer implementation (model/tokenizer*.cc); nothing else includes this.
// The pipeline stages of a Hugging Face tokenizer.json, each built from its JSON object:
// normalizers, pre-tokenizers, the BPE model, decoders and post-processors, plus the UTF-8 and
// PCRE2 helpers they share. tokenizer.cc assembles them into a swarm::tokenizer::Tokenizer.
// The semantics follow the Rust `tokenizers` library (which tokenizers.json files are written
// for) stage by stage, so that encodings match it id for id.
// Threading: every stage is immutable after construction and safe to call from many threads; the
// BPE word cache is guarded by its own mutex.
#ifndef SWARM_TOKENIZER_TOKENIZER_INTERNAL_H_
#define SWARM_TOKENIZER_TOKENIZER_INTERNAL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace swarm::tokenizer::internal {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8.

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool IsValidUtf8(absl::string_view s);

// Length of the UTF-8 sequence that `lead` starts (1 for ASCII and for stray bytes).
int Utf8SequenceLength(unsigned char lead);

// Decodes the code point at `s[*pos]` and advances `*pos` past it. `s` must be valid UTF-8.
char32_t NextCodePoint(absl::string_view s, size_t* pos);

// Appends the UTF-8 encoding of `cp`.
void AppendUtf8(char32_t cp, std::string* out);

// Rust's String::from_utf8_lossy: every maximal ill-formed subsequence becomes U+FFFD.
std::string Utf8Lossy(absl::string_view bytes);

// The bytes of the file at `path`; NotFound naming it when it cannot be opened.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Unicode White_Space (what Rust's char::is_whitespace and regex \\s accept).
bool IsUnicodeWhitespace(char32_t cp);

// The UTF-8 encoding of U+FFFD REPLACEMENT CHARACTER.
inline constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

// GPT-2's byte-level alphabet: byte b ↔ one printable code point. ByteLevelChar(b) is the UTF-8
// text of that code point; ByteLevelByte(cp) is the inverse (-1 for code points outside it).
const std::array<std::string, 256>& ByteLevelChars();
int ByteLevelByte(char32_t cp);

// ---------------------------------------------------------------------------------------------
// Patterns.

// A compiled PCRE2 regular expression (UTF + UCP, JIT when available). Immutable; matching
// allocates its own match data, so one Regex serves many threads.
class Regex {
 public:
  // InvalidArgument with PCRE2's message and offset when `pattern` does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [start, end) byte ranges of the successive non-overlapping matches in `text`
  // (which must be valid UTF-8), as a left-to-right `find_iter` would.
  absl::Status FindAll(absl::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*; kept opaque so that pcre2.h stays in one .cc.
};

// tokenizer.json's {"String": "..."} or {"Regex": "..."} pattern.
class Pattern {
 public:
  static absl::StatusOr<Pattern> FromJson(const Json& j);
  absl::Status FindAll(absl::string_view text,
                       std::vector<std::pair<size_t, size_t>>* matches) const;
  // Replaces every match by `content`.
  absl::StatusOr<std::string> ReplaceAll(absl::string_view text, absl::string_view content) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;  // Set for {"Regex": ...}.
};

// ---------------------------------------------------------------------------------------------
// Normalizers: rewrite one segment of text (between added tokens) in place.

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual absl::Status Normalize(std::string* text) const = 0;
};

// Builds the normalizer described by `j`; nullptr for JSON null. InvalidArgument naming the
// unsupported type otherwise.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& j);

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: split segments into the words that the model tokenizes independently.

struct Piece {
  std::string text;
  // True when the piece starts at byte 0 of the encoded input (Metaspace's "first" scheme).
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual absl::Status PreTokenize(std::vector<Piece>* pieces) const = 0;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& j);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `piece` around `matches` (sorted, non-overlapping byte ranges) the way the Rust
// NormalizedString::split does, appending the non-empty results to `out`.
void SplitPiece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                SplitBehavior behavior, bool invert, std::vector<Piece>* out);

// ---------------------------------------------------------------------------------------------
// Loading.

// model.vocab and model.merges, taken out of the JSON while it is parsed: a DOM of a 150k-entry
// vocab and 150k merges costs several times more than the tables themselves.
struct BpeTables {
  struct Merge {
    std::string first;  // The whole "a b" line when !is_pair.
    std::string second;
    bool is_pair = false;
  };
  bool has_vocab = false;  // model.vocab was a JSON object (and is in `vocab`).
  bool has_merges = false;
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<Merge> merges;
};

// Parses tokenizer.json text into `*root`, except that an object at model.vocab and an array at
// model.merges go to `*tables` instead of the DOM. InvalidArgument describing the syntax error
// (with its byte offset) or the malformed vocab/merges entry.
absl::Status ParseTokenizerJson(absl::string_view text, Json* root, BpeTables* tables);

// ---------------------------------------------------------------------------------------------
// The BPE model.

class BpeModel {
 public:
  // Builds the model from tokenizer.json's "model" object (type BPE) and the vocab/merges that
  // ParseTokenizerJson took out of it. InvalidArgument on missing vocab/merges or merges that
  // name tokens outside the vocab.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const Json& model, BpeTables tables);

  // Appends the ids of one pre-tokenized word. Characters that are neither in the vocab nor
  // covered by byte fallback become the unk token (fused when fuse_unk), or are dropped when the
  // model has no unk token, as in the Rust library.
  absl::Status Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // nullptr when no vocab entry has that id.
  const std::string* IdToToken(int32_t id) const;
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void MergeWord(absl::string_view word, std::vector<int32_t>* ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, MergeInfo> merges_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> ids, -1 where absent.

  static constexpr size_t kCacheCapacity = 10000;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

// ---------------------------------------------------------------------------------------------
// Decoders: token strings → text, chained as in Rust's decode_chain.

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& j);

// ---------------------------------------------------------------------------------------------
// Post-processors: add special tokens around a single sequence.

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Wraps `ids` (one sequence) with the special tokens of the "single" template.
  virtual void Process(std::vector<int64_t>* ids) const = 0;

  // The ids that Process puts before (`*prefix`) and after (`*suffix`) a sequence, e.g. BOS.
  void Surroundings(std::vector<int64_t>* prefix, std::vector<int64_t>* suffix) const;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const Json& j);

}  // namespace swarm::tokenizer::internal

#endif  // SWARM_TOKENIZER_TOKENIZER_INTERNAL_H_
