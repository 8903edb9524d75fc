#include "client/cli/memory_remote.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/cli/connect_flags.h"
#include "client/client.h"
#include "common/block_set.h"
#include "common/memory_estimate.h"

namespace swarm::cli {
namespace {

// The SDK's answer in the library's struct, for one formatting path.
WeightMemoryEstimate FromSdk(const MemoryEstimate& e) {
  WeightMemoryEstimate m;
  m.num_blocks = e.num_blocks;
  m.top_k = e.top_k_blocks;
  m.dtype = e.dtype;
  m.embedding_bytes = e.embedding_bytes;
  m.head_bytes = e.head_bytes;
  m.layer_bytes = e.layer_bytes;
  m.block_bytes = e.block_bytes;
  m.blocks_bytes = e.blocks_bytes;
  m.total_bytes = e.total_bytes;
  m.active_block_bytes = e.active_block_bytes;
  m.active_bytes = e.active_bytes;
  m.savings_ratio = e.savings_ratio;
  m.block_savings_ratio = e.block_savings_ratio;
  m.worker_bytes = e.worker_bytes;
  for (auto [begin, end] : e.worker_blocks) {
    std::vector<int> blocks;
    for (int b = begin; b < end; ++b) blocks.push_back(b);
    m.worker_blocks.push_back(std::move(blocks));
  }
  m.kv_bytes_per_token = e.kv_bytes_per_token;
  return m;
}

}  // namespace

// --server: N defaults to the coordinator's router (or one block per layer), workers to its own.
absl::Status RemoteMemory(const Flags& flags) {
  if (flags.Has("model")) {
    return absl::InvalidArgumentError("give one of --model or --server, not both");
  }
  MemoryRequest req;
  auto n = flags.Int("num-blocks", 0);
  auto k = flags.Int("top-k-blocks", 0);
  auto workers = flags.Int("workers", 0);
  for (const absl::Status& s : {n.status(), k.status(), workers.status()}) {
    if (!s.ok()) return s;
  }
  if (flags.Has("top-k-blocks") && *k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("top-k-blocks must be at least 1, got ", *k));
  }
  req.num_blocks = static_cast<int>(*n);
  req.top_k_blocks = static_cast<int>(*k);
  req.num_workers = static_cast<int>(*workers);
  req.dtype = flags.String("dtype");
  auto keep = ParseKeepList(flags.String("keep-blocks"), &req.keep_default);
  if (!keep.ok()) return keep.status();
  req.keep_blocks = *keep;
  auto client = Client::Connect(flags.String("server"), ConnectOptions(flags));
  if (!client.ok()) return client.status();
  auto e = (*client)->EstimateMemory(req);
  if (!e.ok()) return e.status();
  const WeightMemoryEstimate m = FromSdk(*e);
  if (flags.Bool("json")) {
    std::printf("%s\n", WeightMemoryJson(m).c_str());
  } else {
    std::fputs(FormatWeightMemory(m).c_str(), stdout);
  }
  return absl::OkStatus();
}

const FlagSet& MemoryFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm memory",
              "weight bytes in total, per block, active for top-k blocks and per worker (reads no "
              "weights)");
    f.Value("model", "DIR", "", "estimate from this checkpoint's tensor sizes")
        .Value("server", "HOST:PORT", "", "ask this coordinator, for the model it serves")
        .Value("num-blocks", "N", "",
               "blocks the layers are split into (required with --model; with --server default: "
               "the coordinator's router, or one block per layer)")
        .Value("top-k-blocks", "K", "", "blocks a request runs (default: all N)")
        .Value("workers", "W", "",
               "workers the blocks spread over (default: 1, or the "
               "coordinator's)")
        .Value("dtype", "f32|bf16|f16|q8|q4", "",
               "bytes as loaded in this dtype or quantized format (default: as stored)")
        .Value("keep-blocks", "0,-1|none", "",
               "blocks every request runs (default: the first "
               "and the last)")
        .Bool("json", "print one JSON object")
        .Note("Give one of --model or --server.");
    AddConnectFlags(f);
    return f;
  }();
  return flags;
}

}  // namespace swarm::cli
