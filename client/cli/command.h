// The `swarm` CLI's subcommand registry and flag parser. Each subcommand lives in its own
// client/cli/<name>_cmd.cc and registers itself with SWARM_REGISTER_COMMAND; main.cc dispatches.
// Single-threaded (used at start-up only).
#ifndef SWARM_CLIENT_CLI_COMMAND_H_
#define SWARM_CLIENT_CLI_COMMAND_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/flags.h"

namespace swarm::cli {

using Flags = ::swarm::Flags;

// A subcommand: `run` gets the arguments after the subcommand name and returns the exit code.
struct Command {
  const char* name;
  const char* usage;  // One line: "swarm run --model DIR [--prompt TEXT | --ids 1,2,3] ..."
  int (*run)(const std::vector<std::string>& args);
};

// Registers a command at static-initialisation time.
class CommandRegistrar {
 public:
  explicit CommandRegistrar(const Command& command);
};
const std::map<std::string, Command>& Commands();

// Prints "swarm <cmd>: <message>" on stderr and returns 1 (or 2 for InvalidArgument usage errors).
int Fail(absl::string_view command, const absl::Status& status);

}  // namespace swarm::cli

#define SWARM_REGISTER_COMMAND(ident, ...) \
  static const ::swarm::cli::CommandRegistrar ident##_registrar(::swarm::cli::Command{__VA_ARGS__})

#endif  // SWARM_CLIENT_CLI_COMMAND_H_
