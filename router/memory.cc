#include "router/memory.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/block_layout.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

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

std::string Human(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.2f %s", v, units[u]);
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
  m.dtype = options.dtype.has_value() ? DTypeName(*options.dtype) : "as stored";
  const model::TensorStore& store = checkpoint.store();
  auto bytes_of = [&](const std::string& name) -> int64_t {
    auto v = store.Get(name);
    return v.ok() ? TensorBytes(*v, options.dtype) : 0;
  };
  for (const std::string& name : checkpoint.EmbeddingTensorNames()) {
    m.embedding_bytes += bytes_of(name);
  }
  for (const std::string& name : checkpoint.HeadTensorNames()) m.head_bytes += bytes_of(name);
  m.layer_bytes.assign(L, 0);
  for (int l = 0; l < L; ++l) {
    for (const std::string& name : checkpoint.LayerTensorNames(l)) {
      m.layer_bytes[l] += bytes_of(name);
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
  int elem = options.dtype.has_value() ? DTypeSize(*options.dtype) : 4;
  m.kv_bytes_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * elem;
  return m;
}

std::string FormatMemory(const MemoryEstimate& m) {
  std::string out;
  absl::StrAppendFormat(&out, "weights (%s): total %s (%d B)\n", m.dtype, Human(m.total_bytes),
                        m.total_bytes);
  absl::StrAppendFormat(&out, "  coordinator: embeddings %s, final norm + head %s\n",
                        Human(m.embedding_bytes), Human(m.head_bytes));
  for (size_t b = 0; b < m.block_bytes.size(); ++b) {
    absl::StrAppendFormat(&out, "  block %d: %s (%d B)\n", b, Human(m.block_bytes[b]),
                          m.block_bytes[b]);
  }
  absl::StrAppendFormat(&out, "active for top-%d of %d blocks: %s (%d B), blocks %s\n", m.top_k,
                        m.num_blocks, Human(m.active_bytes), m.active_bytes,
                        Human(m.active_block_bytes));
  absl::StrAppendFormat(&out, "savings: %.1f %% of all weights, %.1f %% of block weights\n",
                        100 * m.savings_ratio, 100 * m.block_savings_ratio);
  for (size_t w = 0; w < m.worker_bytes.size(); ++w) {
    absl::StrAppendFormat(&out, "  worker %d (blocks %s): %s\n", w,
                          FormatBlocks(m.worker_blocks[w]), Human(m.worker_bytes[w]));
  }
  absl::StrAppendFormat(&out, "KV cache: %d B per token (all layers)\n", m.kv_bytes_per_token);
  return out;
}

std::string MemoryJson(const MemoryEstimate& m) {
  nlohmann::json j;
  j["num_blocks"] = m.num_blocks;
  j["top_k_blocks"] = m.top_k;
  j["dtype"] = m.dtype;
  j["total_bytes"] = m.total_bytes;
  j["embedding_bytes"] = m.embedding_bytes;
  j["head_bytes"] = m.head_bytes;
  j["block_bytes"] = m.block_bytes;
  j["active_bytes"] = m.active_bytes;
  j["active_block_bytes"] = m.active_block_bytes;
  j["savings_ratio"] = m.savings_ratio;
  j["block_savings_ratio"] = m.block_savings_ratio;
  j["worker_bytes"] = m.worker_bytes;
  j["worker_blocks"] = m.worker_blocks;
  j["kv_bytes_per_token"] = m.kv_bytes_per_token;
  return j.dump();
}

}  // namespace swarm::router
