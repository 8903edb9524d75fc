// `swarm`: the command-line front end. Subcommands register themselves (see command.h).
#include <cstdio>
#include <string>
#include <vector>

#include "client/cli/command.h"

int main(int argc, char** argv) {
  const auto& commands = swarm::cli::Commands();
  auto usage = [&](FILE* out) {
    std::fprintf(out, "usage: swarm <command> [flags]\n\ncommands:\n");
    for (const auto& [name, command] : commands) std::fprintf(out, "  %s\n", command.usage);
  };
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "help" || name == "--help" || name == "-h") {
    usage(stdout);
    return 0;
  }
  auto it = commands.find(name);
  if (it == commands.end()) {
    std::fprintf(stderr, "swarm: unknown command '%s' (try 'swarm help')\n", name.c_str());
    return 2;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  return it->second.run(args);
}
