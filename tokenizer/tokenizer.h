// Hugging Face tokenizer.json BPE tokenizers, both families:
//  - SentencePiece-style (Prepend/Replace "▁" normalizer, byte_fallback <0xNN> tokens, string
//    merges "a b"), e.g. Llama-2, Mistral, stories260K;
//  - byte-level (NFC normalizer, Split pre-tokenizer regex with lookahead via PCRE2, ByteLevel
//    byte↔unicode mapping, merges as "a b" strings or ["a","b"] pairs), e.g. GPT-2, Llama-3, Qwen.
// Added/special tokens are matched in the raw text before normalisation; the TemplateProcessing
// post-processor adds BOS (and friends) when `add_special_tokens` is true.
// A Tokenizer is immutable after creation and safe to use from many threads.
#ifndef SWARM_TOKENIZER_TOKENIZER_H_
#define SWARM_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace swarm::tokenizer {

class Tokenizer {
 public:
  // Reads and parses a tokenizer.json file (or DIR/tokenizer.json when `path` is a directory).
  // A tokenizer_config.json next to it, when present, names BOS/EOS (bos_token, eos_token).
  // Errors (InvalidArgument, NotFound) name the file and what is malformed: bad JSON, missing
  // model/vocab/merges, a model type other than BPE, unsupported pipeline stages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Parses tokenizer.json text; `source` names it in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json_text,
                                                             absl::string_view source);
  virtual ~Tokenizer() = default;

  // Encodes `text` (InvalidArgument unless it is valid UTF-8). Added/special tokens written in the
  // text are always recognised; with `add_special_tokens` the post-processor's template is
  // applied too (BOS etc.).
  virtual absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text,
                                                      bool add_special_tokens = true) const = 0;
  // Decodes ids to text as Hugging Face's decode(skip_special_tokens=skip_special) does; ids
  // outside the vocabulary are ignored. Always valid UTF-8 (bad bytes become U+FFFD).
  virtual std::string Decode(absl::Span<const int64_t> ids, bool skip_special = false) const = 0;

  virtual int64_t vocab_size() const = 0;  // Largest id + 1, added tokens included.
  virtual std::optional<int64_t> TokenToId(absl::string_view token) const = 0;
  virtual std::optional<std::string> IdToToken(int64_t id) const = 0;
  // BOS / EOS: tokenizer_config.json's bos_token / eos_token when FromFile found one, else what
  // the post-processor adds, else a conventionally named token ("<s>", "<|begin_of_text|>";
  // "</s>", "<|end_of_text|>", "<|endoftext|>", ...).
  virtual std::optional<int64_t> bos_id() const = 0;
  virtual std::optional<int64_t> eos_id() const = 0;
};

// Incremental decoding for streaming: feed ids one at a time; each call returns the text that is
// now final. Never returns a partial UTF-8 character: trailing U+FFFD characters (bytes of a
// character that later ids may complete) are held back until they are completed or Flush() is
// called. With skip_special (the default, as for generated text) special tokens such as BOS/EOS
// produce no text.
// Contract: the concatenation of all pieces returned by Push() and Flush() equals
// Decode(prefix + pushed, skip_special) with the stable text of Decode(prefix, skip_special) cut
// from its front; with no prefix that is exactly Decode(pushed, skip_special).
// Cost: each Push() decodes a window of at most ~16 ids (the window restarts once its text is
// final), so streaming stays linear in the number of ids.
// Not thread-safe (one decoder per stream); the Tokenizer must outlive it.
class StreamDecoder {
 public:
  // `prefix_ids` (e.g. the prompt) give context, e.g. for SentencePiece's leading-space
  // stripping, which applies only at the start of a text; their text is not emitted.
  explicit StreamDecoder(const Tokenizer* tokenizer, std::vector<int64_t> prefix_ids = {},
                         bool skip_special = true);
  // Appends `id` and returns the text that became final (possibly empty).
  std::string Push(int64_t id);
  // Returns everything not yet returned, held-back bytes included (as U+FFFD). Call once at the
  // end of the stream.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::vector<int64_t> ids_;  // The decoding window: recent ids (prefix ids at first).
  bool skip_special_;
  size_t emitted_bytes_ = 0;  // Bytes of Decode(ids_) already returned (or the prefix's).
};

}  // namespace swarm::tokenizer

#endif  // SWARM_TOKENIZER_TOKENIZER_H_
