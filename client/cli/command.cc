#include "client/cli/command.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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

int Fail(absl::string_view command, const absl::Status& status) {
  std::fprintf(stderr, "swarm %s: %s\n", std::string(command).c_str(),
               std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace swarm::cli
