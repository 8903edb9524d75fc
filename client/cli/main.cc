// `swarm`: the command-line front end. Subcommands register themselves (see command.h).
//
// Two binaries are built from this file (CMakeLists.txt). `swarm` is torch-free: it holds the
// client commands (status, generate, predict, ...) and starts in milliseconds; any other command
// (run, calibrate, up, ...), `swarm help` and an unknown command are handed, with the same
// arguments, to `swarm-tools` (tools_exec.h), which holds every command and links LibTorch.
#include <cstdio>
#include <string>
#include <vector>

#include "client/cli/command.h"
#include "common/flags.h"
#include "common/lock_checks.h"
#ifdef SWARM_CLI_FRONT
#include "client/cli/tools_exec.h"
#endif

namespace {

void PrintList(FILE* out) {
  std::fprintf(out,
               "usage: swarm <command> [flags]\n"
               "       swarm <command> --help     (or swarm help <command>)\n\ncommands:\n");
  for (const auto& [name, command] : swarm::cli::Commands()) {
    std::fprintf(out, "%s\n", swarm::cli::CommandListLine(command).c_str());
  }
}

int UnknownCommand(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& [n, command] : swarm::cli::Commands()) names.push_back(n);
  const std::string nearest = swarm::NearestFlag(name, names);
  if (nearest.empty()) {
    std::fprintf(stderr, "swarm: unknown command '%s' (try 'swarm help')\n", name.c_str());
  } else {
    std::fprintf(stderr, "swarm: unknown command '%s'; did you mean '%s'? (try 'swarm help')\n",
                 name.c_str(), nearest.c_str());
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  const auto& commands = swarm::cli::Commands();
  std::vector<std::string> all(argv, argv + argc);
#ifdef SWARM_CLI_FRONT
  // Everything this binary does not hold itself is swarm-tools' to answer.
  auto elsewhere = [&] { return swarm::cli::ExecTools(all); };
#else
  auto elsewhere = [&]() -> int { return -1; };
#endif
  if (argc < 2) {
    if (int rc = elsewhere(); rc >= 0) return rc;
    PrintList(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "help" || name == "--help" || name == "-h") {
    if (argc >= 3) {
      auto it = commands.find(argv[2]);
      if (it != commands.end()) {
        std::fputs(swarm::cli::CommandHelp(it->second).c_str(), stdout);
        return 0;
      }
      if (int rc = elsewhere(); rc >= 0) return rc;
      return UnknownCommand(argv[2]);
    }
    if (int rc = elsewhere(); rc >= 0) return rc;
    PrintList(stdout);
    return 0;
  }
  auto it = commands.find(name);
  if (it == commands.end()) {
    if (int rc = elsewhere(); rc >= 0) return rc;
    return UnknownCommand(name);
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  if (swarm::cli::WantsHelp(it->second, args)) {
    std::fputs(swarm::cli::CommandHelp(it->second).c_str(), stdout);
    return 0;
  }
  return it->second.run(args);
}
