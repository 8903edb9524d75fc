// `swarm tokenize --tokenizer PATH [--no-special]`: reads one JSON string per line on stdin and
// writes the ids of each as one JSON array per line on stdout (flushed line by line, so the
// command can serve as a co-process). Blank lines are skipped. PATH is a tokenizer.json file or
// a model directory holding one. With --no-special the post-processor's BOS etc. are not added
// (special tokens written in the text are still recognised).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace swarm::cli {
namespace {

constexpr char kName[] = "tokenize";

const FlagSet& TokenizeFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm tokenize",
              "token ids of text: stdin one JSON string per line, stdout one JSON array of ids "
              "per line");
    f.Required("tokenizer", "PATH", "a tokenizer.json file or a model directory holding one")
        .Bool("no-special", "do not add the post-processor's special tokens (BOS, ...)");
    return f;
  }();
  return flags;
}

int TokenizeCommand(const std::vector<std::string>& args) {
  absl::StatusOr<Flags> flags = TokenizeFlags().Parse(args);
  if (!flags.ok()) return Fail(kName, flags.status());
  absl::StatusOr<std::string> path = flags->Required("tokenizer");
  if (!path.ok()) return Fail(kName, path.status());
  auto tokenizer = tokenizer::Tokenizer::FromFile(*path);
  if (!tokenizer.ok()) return Fail(kName, tokenizer.status());
  const bool add_special = !flags->Bool("no-special");

  std::string line;
  int64_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_string()) {
      return Fail(kName, absl::InvalidArgumentError(
                             absl::StrCat("stdin line ", line_no, " is not a JSON string")));
    }
    absl::StatusOr<std::vector<int64_t>> ids =
        (*tokenizer)->Encode(j.get_ref<const std::string&>(), add_special);
    if (!ids.ok()) {
      return Fail(kName,
                  absl::Status(ids.status().code(),
                               absl::StrCat("stdin line ", line_no, ": ", ids.status().message())));
    }
    const std::string out = absl::StrCat("[", absl::StrJoin(*ids, ","), "]\n");
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0) {
      return Fail(kName, absl::UnavailableError("cannot write to stdout"));
    }
  }
  if (std::cin.bad()) return Fail(kName, absl::DataLossError("error reading stdin"));
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(tokenize, "tokenize", TokenizeCommand, TokenizeFlags);

}  // namespace swarm::cli
