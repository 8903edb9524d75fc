// `swarm memory` in the torch-free front binary: --server is answered here (memory_remote.h);
// --model (reading a checkpoint) is swarm-tools' (tools_exec.h).
#include <string>
#include <vector>

#include "client/cli/command.h"
#include "client/cli/memory_remote.h"
#include "client/cli/tools_exec.h"

namespace swarm::cli {
namespace {

int MemoryFrontCommand(const std::vector<std::string>& args) {
  auto flags = MemoryFlags().Parse(args);
  if (!flags.ok()) return Fail("memory", flags.status());
  if (!flags->Has("server")) {
    std::vector<std::string> argv = {"swarm", "memory"};
    argv.insert(argv.end(), args.begin(), args.end());
    return ExecTools(argv);
  }
  absl::Status s = RemoteMemory(*flags);
  if (!s.ok()) return Fail("memory", s);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(memory, "memory", MemoryFrontCommand, MemoryFlags);

}  // namespace swarm::cli
