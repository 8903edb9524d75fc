// The `swarm` CLI's subcommand registry and flag parser. Each subcommand lives in its own
// client/cli/<name>_cmd.cc and registers itself; main.cc dispatches, and answers
// `swarm CMD --help` / `swarm help CMD` from the command's declared flags.
//
// A command declares its flags once, in a function returning a static FlagSet (common/flags.h),
// and registers with it:
//
//   const FlagSet& StatusFlags() {
//     static const FlagSet* f = &(new FlagSet("swarm status", "the coordinator's view ..."))
//         ->Required("server", "HOST:PORT", "the coordinator")
//         .Value("timeout", "SECONDS", "10", "deadline of the call")
//         .Bool("json", "print one JSON object");
//     return *f;
//   }
//   int StatusCommand(const std::vector<std::string>& args) {
//     auto flags = StatusFlags().Parse(args); ...
//   }
//   SWARM_REGISTER_COMMAND_FLAGS(status, "status", StatusCommand, StatusFlags);
//
// The older SWARM_REGISTER_COMMAND(ident, name, usage line, run) still works: --help then prints
// the usage line.
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
using FlagSet = ::swarm::FlagSet;

// A subcommand: `run` gets the arguments after the subcommand name and returns the exit code.
struct Command {
  const char* name;
  // One line: "run --model DIR [--prompt TEXT | --ids 1,2,3] ...". Unused (may be null) when
  // `flags` is set: the list and --help come from the FlagSet.
  const char* usage;
  int (*run)(const std::vector<std::string>& args);
  const FlagSet& (*flags)() = nullptr;  // The declared flags, when the command declares them.
};

// Registers a command at static-initialisation time.
class CommandRegistrar {
 public:
  explicit CommandRegistrar(const Command& command);
};
const std::map<std::string, Command>& Commands();

// The text `swarm CMD --help` prints: the FlagSet's help, or "usage: swarm " + the usage line.
std::string CommandHelp(const Command& command);
// One line of `swarm help`'s list: the name and the summary (or the usage line).
std::string CommandListLine(const Command& command);
// True when `args` ask for help: the FlagSet parse says so, or (older commands) an argument is
// exactly --help or -h.
bool WantsHelp(const Command& command, const std::vector<std::string>& args);

// Prints "swarm <cmd>: <message>" on stderr and returns 1 (or 2 for InvalidArgument usage errors).
int Fail(absl::string_view command, const absl::Status& status);

}  // namespace swarm::cli

#define SWARM_REGISTER_COMMAND(ident, ...) \
  static const ::swarm::cli::CommandRegistrar ident##_registrar(::swarm::cli::Command{__VA_ARGS__})
// A command whose flags are declared in `flags_fn` (a `const FlagSet& ()`).
#define SWARM_REGISTER_COMMAND_FLAGS(ident, name, run_fn, flags_fn) \
  static const ::swarm::cli::CommandRegistrar ident##_registrar(    \
      ::swarm::cli::Command{name, nullptr, run_fn, flags_fn})

#endif  // SWARM_CLIENT_CLI_COMMAND_H_
