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
#include "common/memory_estimate.h"
#include "model/checkpoint.h"

namespace swarm::router {

struct MemoryOptions {
  int num_blocks = 0;
  int top_k = 0;                  // 0 = all blocks.
  std::optional<BlockMask> keep;  // Default: first and last block.
  std::optional<DType> dtype;     // Bytes as loaded in this dtype; default as stored.
  // q8/q4: the linear weights (2-D layer tensors, the LM head, a quantized copy of tied
  // embeddings) counted quantized (common/weight_format.h), the rest in f32.
  WeightQuant quant = WeightQuant::kNone;
  int num_workers = 1;  // Blocks spread contiguously, earlier workers take more.
};

// The figures (common/memory_estimate.h: torch-free, so that the CLI's front binary can print a
// coordinator's answer). A distinct type, so that it can be forward-declared.
struct MemoryEstimate : WeightMemoryEstimate {};

// InvalidArgument for N outside 1..num_layers, top_k outside |keep|..N, workers < 1 or > N.
absl::StatusOr<MemoryEstimate> EstimateMemory(const model::Checkpoint& checkpoint,
                                              const MemoryOptions& options);

// Human-readable table; JSON object (common/memory_estimate.h).
inline std::string FormatMemory(const MemoryEstimate& m) { return FormatWeightMemory(m); }
inline std::string MemoryJson(const MemoryEstimate& m) { return WeightMemoryJson(m); }

}  // namespace swarm::router

#endif  // SWARM_ROUTER_MEMORY_H_
