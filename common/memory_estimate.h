// The weight-memory figures of sparse serving (total, per block, active for top-k blocks,
// savings, per worker) and their two printed forms, shared by `swarm memory` (from a checkpoint,
// router/memory.h, or from a coordinator's EstimateMemory answer) and the coordinator. Torch-free
// plain values; the functions are pure and thread-safe.
#ifndef SWARM_COMMON_MEMORY_ESTIMATE_H_
#define SWARM_COMMON_MEMORY_ESTIMATE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace swarm {

struct WeightMemoryEstimate {
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

// Human-readable table.
std::string FormatWeightMemory(const WeightMemoryEstimate& m);
// One JSON object: num_blocks, top_k_blocks, dtype, total_bytes, embedding_bytes, head_bytes,
// block_bytes, active_bytes, active_block_bytes, savings_ratio, block_savings_ratio,
// worker_bytes, worker_blocks, kv_bytes_per_token.
std::string WeightMemoryJson(const WeightMemoryEstimate& m);

}  // namespace swarm

#endif  // SWARM_COMMON_MEMORY_ESTIMATE_H_
