// Block subsets as bitmasks: which of the N blocks a sparse request runs. Shared by the router's
// calibration, scoring, load balancing and evaluation, and by callers that validate a user's
// `--top-k-blocks`. Pure functions on values; thread-safe.
//
// Vocabulary: `keep` is the set of blocks every request runs (the first and last block by
// default: they map embeddings into and out of the residual stream); the other blocks are
// `free`. A subset of size k is *admissible* when it contains every kept block.
#ifndef SWARM_COMMON_BLOCK_SET_H_
#define SWARM_COMMON_BLOCK_SET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace swarm {

using BlockMask = uint64_t;
inline constexpr int kMaxBlocks = 64;

int PopCount(BlockMask mask);
// Blocks in increasing order.
std::vector<int> MaskToBlocks(BlockMask mask);
// Blocks must be in [0, kMaxBlocks); duplicates collapse.
BlockMask BlocksToMask(absl::Span<const int> blocks);
// All N blocks.
BlockMask FullMask(int num_blocks);
// "[0, 2, 4]".
std::string FormatBlocks(absl::Span<const int> blocks);
std::string FormatMask(BlockMask mask);

// Validates `num_blocks` (1..kMaxBlocks) and `keep` (each in [0, N)); returns the kept mask.
// Negative entries count from the end (-1 = last block). Errors name the offending entry.
absl::StatusOr<BlockMask> MakeKeepMask(absl::Span<const int> keep, int num_blocks);
// The default: first and last block (just block 0 when N == 1).
BlockMask DefaultKeepMask(int num_blocks);

// InvalidArgument unless 1 <= top_k <= num_blocks and top_k >= |keep|; the message names the
// values and says how to fix it.
absl::Status ValidateTopK(int top_k, int num_blocks, BlockMask keep);

// Number of admissible subsets of size top_k (saturates at UINT64_MAX).
uint64_t CountAdmissible(int num_blocks, BlockMask keep, int top_k);
// Admissible subsets of size top_k in increasing numeric order. The caller bounds the count
// with CountAdmissible first.
std::vector<BlockMask> EnumerateAdmissible(int num_blocks, BlockMask keep, int top_k);

// Parses "0,-1" / "none" / "" (= default) into a keep list for MakeKeepMask.
absl::StatusOr<std::vector<int>> ParseKeepList(const std::string& text, bool* is_default);

}  // namespace swarm

#endif  // SWARM_COMMON_BLOCK_SET_H_
