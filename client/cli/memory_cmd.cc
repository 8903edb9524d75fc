// `swarm memory` in swarm-tools: weight bytes in total, per block, active for top-k blocks and per
// worker, from the checkpoint's tensor sizes (router/memory.h). Reads no weights. With --server
// instead of --model, the coordinator computes it (memory_remote.h, which the torch-free front
// binary runs itself).
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "client/cli/memory_remote.h"
#include "common/block_set.h"
#include "common/flags.h"
#include "common/host_tensor.h"
#include "common/weight_format.h"
#include "model/checkpoint.h"
#include "router/memory.h"

namespace swarm::cli {
namespace {

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
    auto format = ParseWeightFormat(flags.String("dtype"));
    if (!format.ok()) return format.status();
    if (format->quant == WeightQuant::kNone) options.dtype = format->dtype;
    options.quant = format->quant;
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
  auto flags = MemoryFlags().Parse(args);
  if (!flags.ok()) return Fail("memory", flags.status());
  absl::Status s = Memory(*flags);
  if (!s.ok()) return Fail("memory", s);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(memory, "memory", MemoryCommand, MemoryFlags);

}  // namespace swarm::cli
