#include "router/memory.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/block_layout.h"
#include "common/status_macros.h"

namespace swarm::router {
namespace {

// Bytes of tensor `name` in `dtype` (or as stored); floating tensors convert, others stay.
int64_t TensorBytes(const model::TensorView& v, const std::optional<DType>& dtype) {
  if (!dtype.has_value()) return static_cast<int64_t>(v.nbytes);
  bool floating = v.dtype == model::StDType::kF32 || v.dtype == model::StDType::kF16 ||
                  v.dtype == model::StDType::kBF16 || v.dtype == model::StDType::kF64;
  if (!floating) return static_cast<int64_t>(v.nbytes);
  return v.NumElements() * DTypeSize(*dtype);
}

}  // namespace

absl::StatusOr<MemoryEstimate> EstimateMemory(const model::Checkpoint& checkpoint,
                                              const MemoryOptions& options) {
  const model::ModelConfig& config = checkpoint.config();
  const int L = static_cast<int>(config.num_layers);
  ASSIGN_OR_RETURN(BlockLayout layout, BlockLayout::Create(L, options.num_blocks));
  const int N = options.num_blocks;
  BlockMask keep = options.keep.has_value() ? *options.keep : DefaultKeepMask(N);
  if (keep & ~FullMask(N)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kept blocks ", FormatMask(keep), " outside N = ", N));
  }
  const int top_k = options.top_k > 0 ? options.top_k : N;
  RETURN_IF_ERROR(ValidateTopK(top_k, N, keep));
  if (options.num_workers < 1 || options.num_workers > N) {
    return absl::InvalidArgumentError(absl::StrCat("workers must be in 1..", N,
                                                   " (one block at "
                                                   "least each), got ",
                                                   options.num_workers));
  }
  MemoryEstimate m;
  m.num_blocks = N;
  m.top_k = top_k;
  const WeightQuant quant = options.quant;
  // Quantized: the rest is f32 (unless a dtype is also given).
  const std::optional<DType> dtype = quant != WeightQuant::kNone && !options.dtype.has_value()
                                         ? std::optional<DType>(DType::kF32)
                                         : options.dtype;
  m.dtype = quant != WeightQuant::kNone ? WeightQuantName(quant)
            : dtype.has_value()         ? DTypeName(*dtype)
                                        : "as stored";
  const model::TensorStore& store = checkpoint.store();
  auto bytes_of = [&](const std::string& name) -> int64_t {
    auto v = store.Get(name);
    return v.ok() ? TensorBytes(*v, dtype) : 0;
  };
  // A linear weight quantized: [out, in] (GPT-2's Conv1D layer weights are stored [in, out]).
  auto quantized_of = [&](const std::string& name, bool transposed) -> int64_t {
    auto v = store.Get(name);
    if (!v.ok()) return 0;
    if (v->shape.size() != 2 || v->dtype == model::StDType::kI8 ||
        v->dtype == model::StDType::kU8) {
      return TensorBytes(*v, dtype);
    }
    const int64_t out = transposed ? v->shape[1] : v->shape[0];
    const int64_t in = transposed ? v->shape[0] : v->shape[1];
    return QuantizedBytes(quant, out, in);
  };
  for (const std::string& name : checkpoint.EmbeddingTensorNames()) {
    m.embedding_bytes += bytes_of(name);
  }
  const bool tied = config.tie_word_embeddings && !store.Has("lm_head.weight");
  for (const std::string& name : checkpoint.HeadTensorNames()) {
    m.head_bytes += quant != WeightQuant::kNone && name == "lm_head.weight"
                        ? quantized_of(name, false)
                        : bytes_of(name);
    if (store.Has(name + ".scales")) m.head_bytes += bytes_of(name + ".scales");
  }
  if (quant != WeightQuant::kNone && tied) {  // The head is a quantized copy of the embeddings.
    m.head_bytes += QuantizedBytes(quant, config.vocab_size, config.hidden_size);
  }
  m.layer_bytes.assign(L, 0);
  for (int l = 0; l < L; ++l) {
    for (const std::string& name : checkpoint.LayerTensorNames(l)) {
      m.layer_bytes[l] +=
          quant != WeightQuant::kNone ? quantized_of(name, config.IsGpt2()) : bytes_of(name);
    }
  }
  m.block_bytes.assign(N, 0);
  for (int b = 0; b < N; ++b) {
    for (int l : layout.Layers(b)) m.block_bytes[b] += m.layer_bytes[l];
    m.blocks_bytes += m.block_bytes[b];
  }
  const int64_t ends = m.embedding_bytes + m.head_bytes;
  m.total_bytes = ends + m.blocks_bytes;
  std::vector<int64_t> free_sizes;
  for (int b = 0; b < N; ++b) {
    if (keep & (BlockMask{1} << b)) {
      m.active_block_bytes += m.block_bytes[b];
    } else {
      free_sizes.push_back(m.block_bytes[b]);
    }
  }
  std::sort(free_sizes.rbegin(), free_sizes.rend());
  for (int i = 0; i < top_k - PopCount(keep); ++i) m.active_block_bytes += free_sizes[i];
  m.active_bytes = ends + m.active_block_bytes;
  m.savings_ratio =
      m.total_bytes > 0 ? 1.0 - static_cast<double>(m.active_bytes) / m.total_bytes : 0.0;
  m.block_savings_ratio =
      m.blocks_bytes > 0 ? 1.0 - static_cast<double>(m.active_block_bytes) / m.blocks_bytes : 0.0;
  // Workers host contiguous block ranges, split like layers into blocks.
  ASSIGN_OR_RETURN(BlockLayout workers, BlockLayout::Create(N, options.num_workers));
  for (int w = 0; w < options.num_workers; ++w) {
    int64_t bytes = 0;
    for (int b : workers.Layers(w)) bytes += m.block_bytes[b];
    m.worker_bytes.push_back(bytes);
    m.worker_blocks.push_back(workers.Layers(w));
  }
  int elem = dtype.has_value() ? DTypeSize(*dtype) : 4;
  m.kv_bytes_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * elem;
  return m;
}

}  // namespace swarm::router
