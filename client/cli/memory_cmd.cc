// `swarm memory`: weight bytes in total, per block, active for top-k blocks and per worker, from
// the checkpoint's tensor sizes (router/memory.h). Reads no weights. With --server instead of
// --model, the coordinator computes it (the EstimateMemory RPC) for the model it serves.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "client/cli/connect_flags.h"
#include "client/client.h"
#include "common/block_set.h"
#include "common/flags.h"
#include "common/host_tensor.h"
#include "model/checkpoint.h"
#include "router/memory.h"

namespace swarm::cli {
namespace {

// The SDK's answer in the library's struct, for one formatting path.
router::MemoryEstimate FromSdk(const MemoryEstimate& e) {
  router::MemoryEstimate m;
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
  const router::MemoryEstimate m = FromSdk(*e);
  if (flags.Bool("json")) {
    std::printf("%s\n", router::MemoryJson(m).c_str());
  } else {
    std::fputs(router::FormatMemory(m).c_str(), stdout);
  }
  return absl::OkStatus();
}

absl::Status Memory(const Flags& flags) {
  if (flags.Has("server")) return RemoteMemory(flags);
  auto dir = flags.Required("model");
  if (!dir.ok()) return dir.status();
  if (!flags.Has("num-blocks")) {
    return absl::InvalidArgumentError("missing required flag --num-blocks");
  }
  auto n = flags.Int("num-blocks", 0);
  if (!n.ok()) return n.status();
  auto k = flags.Int("top-k-blocks", *n);
  if (!k.ok()) return k.status();
  auto workers = flags.Int("workers", 1);
  if (!workers.ok()) return workers.status();
  router::MemoryOptions options;
  options.num_blocks = static_cast<int>(*n);
  options.top_k = static_cast<int>(*k);
  options.num_workers = static_cast<int>(*workers);
  if (flags.Has("top-k-blocks") && *k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("top-k-blocks must be at least 1, got ", *k));
  }
  if (flags.Has("dtype")) {
    auto dtype = ParseDType(flags.String("dtype"));
    if (!dtype.ok()) return dtype.status();
    options.dtype = *dtype;
  }
  bool default_keep = true;
  auto keep = ParseKeepList(flags.String("keep-blocks"), &default_keep);
  if (!keep.ok()) return keep.status();
  if (!default_keep) {
    auto mask = MakeKeepMask(*keep, options.num_blocks);
    if (!mask.ok()) return mask.status();
    options.keep = *mask;
  }
  auto checkpoint = model::Checkpoint::Open(*dir);
  if (!checkpoint.ok()) return checkpoint.status();
  auto m = router::EstimateMemory(**checkpoint, options);
  if (!m.ok()) return m.status();
  if (flags.Bool("json")) {
    std::printf("%s\n", router::MemoryJson(*m).c_str());
  } else {
    std::fputs(router::FormatMemory(*m).c_str(), stdout);
  }
  return absl::OkStatus();
}

int MemoryCommand(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args,
                            WithConnectFlags({"model", "server", "num-blocks", "top-k-blocks",
                                              "keep-blocks", "dtype", "workers"}),
                            {"json"});
  if (!flags.ok()) return Fail("memory", flags.status());
  absl::Status s = Memory(*flags);
  if (!s.ok()) return Fail("memory", s);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND(
    memory, "memory",
    "memory (--model DIR --num-blocks N | --server HOST:PORT [--num-blocks N]) "
    "[--top-k-blocks K] [--workers W] "
    "[--dtype f32|bf16|f16] [--keep-blocks 0,-1|none] [--json]" SWARM_CONNECT_USAGE,
    MemoryCommand);

}  // namespace swarm::cli
