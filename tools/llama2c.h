// Conversion of Karpathy's llama2.c checkpoints (`run.c` / `runq.c` .bin files) and tokenizers
// (tokenizer.bin) into a Hugging Face model directory (config.json, model.safetensors,
// tokenizer.json) that the rest of Swarm loads like any other Llama checkpoint. Used by
// `swarm convert-llama2c` and its tests; `SentencePieceBpeJson` is shared with `swarm synth`.
//
// Formats read:
//  - version 0 ("legacy"): 7 int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//    vocab_size — negative means an unshared classifier follows —, seq_len), then fp32 weights;
//  - version 1: 256-byte header starting with magic "ak42" (uint32 0x616b3432), fp32 weights;
//  - version 2: same header plus a Q8_0 group size; norms fp32, matrices int8 + fp32 scales
//    (dequantised to fp32 on conversion).
// llama2.c applies RoPE to interleaved pairs (2i, 2i+1); Hugging Face's Llama rotates halves
// (i, i + head_dim/2). q_proj and k_proj rows are permuted accordingly, as transformers'
// convert_llama_weights_to_hf.py does. Files are assumed little-endian (as written by llama2.c).
//
// All functions are free functions without shared state; safe to call from any thread.
#ifndef SWARM_TOOLS_LLAMA2C_H_
#define SWARM_TOOLS_LLAMA2C_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/safetensors.h"

namespace swarm::tools {

struct Llama2cHeader {
  int version = 0;  // 0 (legacy), 1 (fp32) or 2 (Q8_0).
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // Always positive here (the legacy sign is decoded).
  int32_t seq_len = 0;
  bool shared_classifier = true;
  int32_t group_size = 0;  // Version 2 only.

  int64_t head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }
  int64_t kv_dim() const { return head_dim() * n_kv_heads; }
};

// A llama2.c checkpoint's weights under Hugging Face Llama names (model.embed_tokens.weight,
// model.layers.N.self_attn.q_proj.weight, ..., lm_head.weight only when unshared), fp32, with
// q/k rows already permuted to the rotate-half layout.
struct Llama2cModel {
  Llama2cHeader header;
  std::vector<model::TensorToWrite> tensors;
};

// Reads a llama2.c checkpoint (any of versions 0, 1, 2). Errors (InvalidArgument/DataLoss/
// NotFound) name the file and say what is wrong: unreadable, bad header values (non-positive
// sizes, dim not divisible by n_heads, n_heads not divisible by n_kv_heads, odd head size),
// unsupported version, or a size that does not match what the header implies (truncated or
// trailing bytes).
absl::StatusOr<Llama2cModel> ReadLlama2cCheckpoint(const std::string& path);

// A llama2.c tokenizer.bin: max_token_length, then per token a float score, an int32 length and
// the bytes. Pieces are returned as stored (spaces, "\n<s>\n" and all).
struct Llama2cVocab {
  int32_t max_token_length = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

// Reads exactly `vocab_size` tokens from `path` (the count comes from the checkpoint, as in
// run.c). Errors name the file: missing, truncated, a negative/oversized length, or bytes left
// over after the last token (the tokenizer does not belong to this model).
absl::StatusOr<Llama2cVocab> ReadLlama2cTokenizer(const std::string& path, int64_t vocab_size);

// Hugging Face token strings of a llama2.c vocabulary: ids 0, 1, 2 become "<unk>", "<s>",
// "</s>", spaces become "▁", "<0xNN>" byte tokens are kept. InvalidArgument when two ids map to
// the same string.
absl::StatusOr<std::vector<std::string>> Llama2cTokenStrings(const Llama2cVocab& vocab);

// BPE merges equivalent to llama2.c's encoder (which repeatedly merges the adjacent pair whose
// concatenation has the highest score): for every token that splits into two vocabulary tokens,
// every such split, ordered by the merged token's score (descending, ties in id order), splits
// of one token by (left id, right id). This is what transformers' SentencePiece converter emits.
std::vector<std::pair<std::string, std::string>> MergesFromScores(
    const std::vector<std::string>& tokens, absl::Span<const float> scores);

// tokenizer.json text for a SentencePiece-style BPE (Prepend/Replace "▁" normaliser, byte
// fallback, Replace/ByteFallback/Fuse/Strip decoder, a template adding <s>) over `tokens`
// (index = id; ids 0/1/2 must be <unk>/<s>/</s>) and `merges`. Pretty-printed, 2-space indent,
// as transformers writes it.
std::string SentencePieceBpeJson(const std::vector<std::string>& tokens,
                                 const std::vector<std::pair<std::string, std::string>>& merges);

// config.json text (LlamaForCausalLM, rope_theta 10000, rms_norm_eps 1e-5, bos 1, eos 2,
// max_position_embeddings = seq_len, tie_word_embeddings = shared classifier).
std::string Llama2cConfigJson(const Llama2cHeader& header);

// Permutes the rows of a [n_heads * head_dim, cols] projection from llama2.c's interleaved
// rotary layout to Hugging Face's rotate-half layout: within each head, row 2i + j moves to
// row i + j * head_dim / 2. `w` is row-major; returns the permuted copy. head_dim must be even.
std::vector<float> InterleavedToHalfRotary(absl::Span<const float> w, int64_t n_heads,
                                           int64_t head_dim, int64_t cols);

struct ConvertLlama2cOptions {
  std::string checkpoint_path;
  std::string tokenizer_path;  // Empty: no tokenizer.json is written.
  std::string out_dir;         // Created if missing; existing files are overwritten.
};

// What a conversion wrote, for the CLI to report.
struct ConvertLlama2cResult {
  Llama2cHeader header;
  std::vector<std::string> files;  // Paths written.
  int64_t num_merges = 0;
};

// Reads the checkpoint (and tokenizer) and writes out_dir/config.json, model.safetensors,
// generation_config.json and, with a tokenizer, tokenizer.json and tokenizer_config.json.
// Errors name the file at fault.
absl::StatusOr<ConvertLlama2cResult> ConvertLlama2c(const ConvertLlama2cOptions& options);

}  // namespace swarm::tools

#endif  // SWARM_TOOLS_LLAMA2C_H_
