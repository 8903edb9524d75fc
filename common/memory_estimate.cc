#include "common/memory_estimate.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/block_set.h"

namespace swarm {
namespace {

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

// A double that reads back to the same value; JSON has no NaN or infinity (null then).
std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return absl::StrFormat("%.17g", v);
}

// `s` as a JSON string (the dtype names: ASCII, but escaped properly all the same).
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

std::string FormatWeightMemory(const WeightMemoryEstimate& m) {
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

std::string WeightMemoryJson(const WeightMemoryEstimate& m) {
  std::string j = "{";
  auto key = [&](const char* k) { absl::StrAppend(&j, j.size() > 1 ? "," : "", "\"", k, "\":"); };
  auto ints = [](const std::vector<int64_t>& v) {
    return absl::StrCat("[", absl::StrJoin(v, ","), "]");
  };
  key("num_blocks");
  absl::StrAppend(&j, m.num_blocks);
  key("top_k_blocks");
  absl::StrAppend(&j, m.top_k);
  key("dtype");
  absl::StrAppend(&j, JsonString(m.dtype));
  key("total_bytes");
  absl::StrAppend(&j, m.total_bytes);
  key("embedding_bytes");
  absl::StrAppend(&j, m.embedding_bytes);
  key("head_bytes");
  absl::StrAppend(&j, m.head_bytes);
  key("block_bytes");
  absl::StrAppend(&j, ints(m.block_bytes));
  key("active_bytes");
  absl::StrAppend(&j, m.active_bytes);
  key("active_block_bytes");
  absl::StrAppend(&j, m.active_block_bytes);
  key("savings_ratio");
  absl::StrAppend(&j, JsonNumber(m.savings_ratio));
  key("block_savings_ratio");
  absl::StrAppend(&j, JsonNumber(m.block_savings_ratio));
  key("worker_bytes");
  absl::StrAppend(&j, ints(m.worker_bytes));
  key("worker_blocks");
  std::vector<std::string> blocks;
  for (const std::vector<int>& w : m.worker_blocks) {
    blocks.push_back(absl::StrCat("[", absl::StrJoin(w, ","), "]"));
  }
  absl::StrAppend(&j, "[", absl::StrJoin(blocks, ","), "]");
  key("kv_bytes_per_token");
  absl::StrAppend(&j, m.kv_bytes_per_token);
  j += "}";
  return j;
}

}  // namespace swarm
