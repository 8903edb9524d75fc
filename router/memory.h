// Memory estimate for sparse serving (`swarm memory`, the EstimateMemory RPC): weight bytes in
// total, per block, active for top_k blocks, the savings ratio, and bytes per worker, computed
// from the checkpoint's real tensor sizes (no weights read). Pure function of a Checkpoint;
// thread-safe.
#ifndef SWARM_ROUTER_MEMORY_H_
#define SWARM_ROUTER_MEMORY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/block_set.h"
#include "common/host_tensor.h"
#include "model/checkpoint.h"

namespace swarm::router {

struct MemoryOptions {
  int num_blocks = 0;
  int top_k = 0;                  // 0 = all blocks.
  std::optional<BlockMask> keep;  // Default: first and last block.
  std::optional<DType> dtype;     // Bytes as loaded in this dtype; default as stored.
  int num_workers = 1;            // Blocks spread contiguously, earlier workers take more.
};

struct MemoryEstimate {
  int num_blocks = 0;
  int top_k = 0;
  std::string dtype;                 // "as stored" or the dtype name.
  int64_t embedding_bytes = 0;       // Coordinator side: token (+ position) embeddings.
  int64_t head_bytes = 0;            // Final norm + LM head (0 when tied).
  std::vector<int64_t> layer_bytes;  // [L]
  std::vector<int64_t> block_bytes;  // [N]
  int64_t blocks_bytes = 0;          // Σ block_bytes.
  int64_t total_bytes = 0;           // Ends + all blocks.
  // Largest bytes any admissible top_k choice keeps resident: kept blocks plus the largest free
  // ones. Active = ends + that.
  int64_t active_block_bytes = 0;
  int64_t active_bytes = 0;
  double savings_ratio = 0;           // 1 − active / total.
  double block_savings_ratio = 0;     // 1 − active_block_bytes / blocks_bytes.
  std::vector<int64_t> worker_bytes;  // [num_workers] block weights each worker hosts.
  std::vector<std::vector<int>> worker_blocks;
  int64_t kv_bytes_per_token = 0;  // All layers, in the same dtype (f32 as stored).
};

// InvalidArgument for N outside 1..num_layers, top_k outside |keep|..N, workers < 1 or > N.
absl::StatusOr<MemoryEstimate> EstimateMemory(const model::Checkpoint& checkpoint,
                                              const MemoryOptions& options);

// Human-readable table; JSON object.
std::string FormatMemory(const MemoryEstimate& m);
std::string MemoryJson(const MemoryEstimate& m);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_MEMORY_H_
