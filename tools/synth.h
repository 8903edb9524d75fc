// Synthetic Hugging Face checkpoints: `swarm synth` writes a randomly initialised model of any
// shape (config.json, model.safetensors, tokenizer.json) so that memory, speed and scheduling can
// be exercised at sizes no real checkpoint in ../shared has (up to tens of GB). Weights are a
// pure function of (seed, tensor name, element index): the same options give the same bytes, and
// tensors are generated and written chunk by chunk, so a model of any size needs only a few MiB
// of memory to write. Also home of `WriteSafetensorsStreamed`, a safetensors writer that takes
// tensor bytes from a callback instead of memory.
//
// Free functions without shared state; safe to call from any thread. WriteSynthModel uses a few
// worker threads of its own (joined before it returns) to generate random numbers.
#ifndef SWARM_TOOLS_SYNTH_H_
#define SWARM_TOOLS_SYNTH_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/host_tensor.h"
#include "model/safetensors.h"

namespace swarm::tools {

struct SynthOptions {
  std::string arch = "llama";  // "llama", "mistral" or "qwen2".
  int64_t layers = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;  // 0: same as heads.
  int64_t head_dim = 0;  // 0: hidden / heads.
  int64_t vocab = 0;
  int64_t max_position = 2048;
  DType dtype = DType::kF32;  // kF32 or kBF16.
  uint64_t seed = 0;
  bool tie_embeddings = false;  // No lm_head tensor; the head reuses embed_tokens.
  int64_t sliding_window = 0;   // Mistral only; 0 = full attention.
  double rope_theta = 0;        // 0: 10000 (llama, mistral) or 1e6 (qwen2).
  double init_std = 0.02;       // Weights ~ N(0, init_std²); norm weights ~ 1 + N(0, init_std²).
  // > 0: a planted model (llama only) instead of random weights, the router's positive control.
  // Token ids 3..vocab-1 fall into `planted_groups` contiguous ranges; layer 0's attention
  // writes the prompt's mix of ranges into context coordinates; each middle layer l (1..L-2) is
  // an MLP that fires only on the context of range (l-1) mod G, writing a random direction the
  // head reads; the last layer is the identity; the head prefers tokens of the ranges already in
  // the context, so a sampled text stays in its first token's range. Skipping a layer of range g
  // hurts only prompts from range g: which blocks matter depends on the prompt, by design.
  int64_t planted_groups = 0;
  std::string out_dir;
  // Called as the weights are written with (bytes written, total bytes) (may be null).
  std::function<void(int64_t done, int64_t total)> progress;
};

// InvalidArgument naming the offending option: unknown arch or dtype, non-positive sizes,
// heads not a multiple of kv_heads, hidden not divisible by heads (without head_dim), odd
// head_dim, vocab < 3 (the tokenizer's specials), sliding window on a non-Mistral arch; for a
// planted model also: arch other than llama, tied embeddings, fewer than 3 layers, hidden below
// 2·groups + 8, head dim below groups, vocab below 3 + groups.
absl::Status ValidateSynthOptions(const SynthOptions& options);

// What one tensor of the synthetic model is, and how it is initialised.
struct SynthTensorSpec {
  enum class Init { kNormal, kNorm };  // N(0, σ²) / 1 + N(0, σ²).
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::kNormal;
};

// The tensors of the model `options` describes, Hugging Face names, in name order.
std::vector<SynthTensorSpec> SynthTensorSpecs(const SynthOptions& options);

// config.json text for `options` (architectures, model_type, sizes, rope, eps, bos 1, eos 2, ...).
std::string SynthConfigJson(const SynthOptions& options);

// A minimal valid SentencePiece-style BPE tokenizer.json with exactly `vocab` ids: <unk> <s>
// </s>, the 256 <0xNN> byte tokens, "▁" and the printable ASCII characters, "▁x" pairs (with
// their merges), then "<unused_N>" fillers. Smaller vocabularies keep a prefix of that list.
std::string SynthTokenizerJson(int64_t vocab);

// The k-th value of the deterministic N(0, 1) stream keyed by `key` (Box-Muller on a counter-
// based hash): reproducible and computable out of order.
float SynthNormal(uint64_t key, uint64_t k);

struct SynthResult {
  std::vector<std::string> files;
  int64_t num_parameters = 0;
  int64_t weight_bytes = 0;  // Size of model.safetensors.
};

// Validates `options`, creates out_dir and writes config.json, generation_config.json,
// tokenizer.json, tokenizer_config.json and model.safetensors (streamed; written to a temporary
// name and renamed at the end, so an interrupted run leaves no truncated model.safetensors).
absl::StatusOr<SynthResult> WriteSynthModel(const SynthOptions& options);

// Streaming safetensors writer. `tensors` are laid out in the given order; `fill(i, offset,
// dst, n)` must write bytes [offset, offset + n) of tensor i into dst (offset and n are
// multiples of the element size; a tensor may be requested in several consecutive pieces).
// The file is a standard safetensors file: u64 header length, JSON header (with `metadata`
// under "__metadata__") padded with spaces to 8 bytes, then the data. Errors name the file
// (or come from `fill`).
struct StreamedTensor {
  std::string name;
  model::StDType dtype = model::StDType::kF32;
  std::vector<int64_t> shape;
};
using TensorFill =
    std::function<absl::Status(size_t index, uint64_t offset, char* dst, uint64_t nbytes)>;
absl::Status WriteSafetensorsStreamed(const std::string& path,
                                      const std::vector<StreamedTensor>& tensors,
                                      const std::map<std::string, std::string>& metadata,
                                      const TensorFill& fill);

}  // namespace swarm::tools

#endif  // SWARM_TOOLS_SYNTH_H_
