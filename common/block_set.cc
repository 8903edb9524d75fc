#include "common/block_set.h"

#include <algorithm>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace swarm {

int PopCount(BlockMask mask) { return __builtin_popcountll(mask); }

std::vector<int> MaskToBlocks(BlockMask mask) {
  std::vector<int> out;
  for (int b = 0; b < kMaxBlocks; ++b) {
    if (mask & (BlockMask{1} << b)) out.push_back(b);
  }
  return out;
}

BlockMask BlocksToMask(absl::Span<const int> blocks) {
  BlockMask mask = 0;
  for (int b : blocks) mask |= BlockMask{1} << b;
  return mask;
}

BlockMask FullMask(int num_blocks) {
  return num_blocks >= 64 ? ~BlockMask{0} : (BlockMask{1} << num_blocks) - 1;
}

std::string FormatBlocks(absl::Span<const int> blocks) {
  return absl::StrCat("[", absl::StrJoin(blocks, ", "), "]");
}

std::string FormatMask(BlockMask mask) { return FormatBlocks(MaskToBlocks(mask)); }

absl::StatusOr<BlockMask> MakeKeepMask(absl::Span<const int> keep, int num_blocks) {
  if (num_blocks < 1 || num_blocks > kMaxBlocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("number of blocks must be in 1..", kMaxBlocks, ", got ", num_blocks));
  }
  BlockMask mask = 0;
  for (int b : keep) {
    int block = b < 0 ? num_blocks + b : b;
    if (block < 0 || block >= num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("kept block ", b, " is outside 0..",
                                                     num_blocks - 1, " (N = ", num_blocks, ")"));
    }
    mask |= BlockMask{1} << block;
  }
  return mask;
}

BlockMask DefaultKeepMask(int num_blocks) {
  if (num_blocks <= 0) return 0;
  return 1 | (BlockMask{1} << (num_blocks - 1));
}

absl::Status ValidateTopK(int top_k, int num_blocks, BlockMask keep) {
  if (top_k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("top-k-blocks must be at least 1, got ", top_k));
  }
  if (top_k > num_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("top-k-blocks ", top_k, " exceeds the number of blocks N = ", num_blocks));
  }
  if (top_k < PopCount(keep)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top-k-blocks ", top_k, " is smaller than the ", PopCount(keep), " always-kept blocks ",
        FormatMask(keep), " (calibrate with --keep-blocks to change them)"));
  }
  return absl::OkStatus();
}

namespace {
uint64_t Binomial(int n, int r) {
  if (r < 0 || r > n) return 0;
  r = std::min(r, n - r);
  // Exact in 128-bit until it saturates.
  unsigned __int128 v = 1;
  for (int i = 1; i <= r; ++i) {
    v = v * (n - r + i) / i;
    if (v > std::numeric_limits<uint64_t>::max()) return std::numeric_limits<uint64_t>::max();
  }
  return static_cast<uint64_t>(v);
}
}  // namespace

uint64_t CountAdmissible(int num_blocks, BlockMask keep, int top_k) {
  int kept = PopCount(keep & FullMask(num_blocks));
  return Binomial(num_blocks - kept, top_k - kept);
}

std::vector<BlockMask> EnumerateAdmissible(int num_blocks, BlockMask keep, int top_k) {
  std::vector<BlockMask> out;
  keep &= FullMask(num_blocks);
  std::vector<int> free;
  for (int b = 0; b < num_blocks; ++b) {
    if (!(keep & (BlockMask{1} << b))) free.push_back(b);
  }
  int need = top_k - PopCount(keep);
  if (need < 0 || need > static_cast<int>(free.size())) return out;
  // Combinations of `free` choose `need` in lexicographic order of indices.
  std::vector<int> idx(need);
  for (int i = 0; i < need; ++i) idx[i] = i;
  while (true) {
    BlockMask m = keep;
    for (int i : idx) m |= BlockMask{1} << free[i];
    out.push_back(m);
    int i = need - 1;
    while (i >= 0 && idx[i] == static_cast<int>(free.size()) - need + i) --i;
    if (i < 0) break;
    ++idx[i];
    for (int j = i + 1; j < need; ++j) idx[j] = idx[j - 1] + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::vector<int>> ParseKeepList(const std::string& text, bool* is_default) {
  std::vector<int> out;
  absl::string_view t = absl::StripAsciiWhitespace(text);
  if (is_default) *is_default = t.empty() || t == "default";
  if (t.empty() || t == "default" || t == "none") return out;
  for (absl::string_view part : absl::StrSplit(t, ',', absl::SkipWhitespace())) {
    int v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("kept-block list '", text, "': '", part, "' is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace swarm
