// Hugging Face tokenizer.json BPE tokenizers, both families:
//  - SentencePiece-style (Prepend/Replace "▁" normalizer, byte_fallback <0xNN> tokens, string
//    merges "a b"), e.g. Llama-2, Mistral, stories260K;
//  - byte-level (NFC normalizer, Split pre-tokenizer regex with lookahead via PCRE2, ByteLevel
//    byte↔unicode mapping, merges as "a b" strings or ["a","b"] pairs), e.g. GPT-2, Llama-3, Qwen.
// Added/special tokens are matched in the raw text before normalisation; the TemplateProcessing
// post-processor adds BOS (and friends) when `add_special_tokens` is true.
// A Tokenizer is immutable after creation and safe to use from many threads.
#ifndef SWARM_MODEL_TOKENIZER_H_
#define SWARM_MODEL_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace swarm::model {

class Tokenizer {
 public:
  // Reads and parses a tokenizer.json file. Errors name the file and what is malformed.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Parses tokenizer.json text; `source` names it in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json_text,
                                                             absl::string_view source);
  virtual ~Tokenizer() = default;

  // Encodes `text`. With `add_special_tokens` the post-processor's template is applied (BOS etc.).
  virtual absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text,
                                                      bool add_special_tokens = true) const = 0;
  // Decodes ids to text as Hugging Face's decode(skip_special_tokens=skip_special) does.
  virtual std::string Decode(absl::Span<const int64_t> ids, bool skip_special = false) const = 0;

  virtual int64_t vocab_size() const = 0;  // Including added tokens.
  virtual std::optional<int64_t> TokenToId(absl::string_view token) const = 0;
  virtual std::optional<std::string> IdToToken(int64_t id) const = 0;
  virtual std::optional<int64_t> bos_id() const = 0;  // From the post-processor / added tokens.
  virtual std::optional<int64_t> eos_id() const = 0;
};

// Incremental decoding for streaming: feed ids one at a time; each call returns the text that is
// now final. Never returns a partial UTF-8 character (bytes are held back until complete), and the
// concatenation of all returned pieces plus Flush() equals Decode(all ids).
class StreamDecoder {
 public:
  // `prefix_ids` (e.g. the prompt) give context for leading-space handling; their text is not
  // emitted.
  explicit StreamDecoder(const Tokenizer* tokenizer, std::vector<int64_t> prefix_ids = {});
  std::string Push(int64_t id);
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::vector<int64_t> ids_;
  size_t prefix_len_ = 0;
  size_t emitted_bytes_ = 0;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_TOKENIZER_H_
