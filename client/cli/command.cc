#include "client/cli/command.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace swarm::cli {

namespace {
std::map<std::string, Command>& Registry() {
  static auto* registry = new std::map<std::string, Command>();
  return *registry;
}
}  // namespace

CommandRegistrar::CommandRegistrar(const Command& command) { Registry()[command.name] = command; }

const std::map<std::string, Command>& Commands() { return Registry(); }

std::string CommandHelp(const Command& command) {
  if (command.flags != nullptr) return command.flags().Help();
  return absl::StrCat("usage: swarm ", command.usage == nullptr ? command.name : command.usage,
                      "\n");
}

std::string CommandListLine(const Command& command) {
  if (command.flags != nullptr) {
    return absl::StrFormat("  %-16s %s", command.name, command.flags().summary());
  }
  return absl::StrCat("  ", command.usage == nullptr ? command.name : command.usage);
}

bool WantsHelp(const Command& command, const std::vector<std::string>& args) {
  if (command.flags != nullptr) {
    absl::StatusOr<Flags> flags = command.flags().Parse(args);
    return flags.ok() && flags->help();
  }
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

int Fail(absl::string_view command, const absl::Status& status) {
  std::fprintf(stderr, "swarm %s: %s\n", std::string(command).c_str(),
               std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace swarm::cli
