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

namespace swarm::cli {

// Parsed `--name value` / `--name=value` / `--flag` arguments. Boolean flags are declared up
// front so that `--json --prompt x` parses unambiguously.
class Flags {
 public:
  // `args` excludes the program and subcommand names. Every flag must be in `value_flags` or
  // `bool_flags`; anything else is InvalidArgument ("unknown flag --x"). Positional arguments are
  // rejected too.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags);

  bool Has(const std::string& name) const;
  bool Bool(const std::string& name) const;  // True when the boolean flag was given.
  // The value, or `fallback` when absent.
  std::string String(const std::string& name, const std::string& fallback = "") const;
  // The value, or InvalidArgument naming the missing flag.
  absl::StatusOr<std::string> Required(const std::string& name) const;
  // Parsed numbers; InvalidArgument naming the flag and the text when malformed.
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> Double(const std::string& name, double fallback) const;
  // "1,2,3" → {1,2,3}; InvalidArgument when an element is not an integer.
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& name) const;

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> bools_;
};

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
