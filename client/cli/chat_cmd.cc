// `swarm chat`: an interactive chat with a coordinator's model in the terminal. Each line read
// from stdin is a user turn; the whole conversation (an optional --system message, then the
// turns so far) goes to the coordinator as GenerateRequest::messages, which it renders with the
// model's chat template; the assistant's reply streams to stdout and joins the history. `/reset`
// clears the history (the --system message stays); EOF ends the chat. With stdin not a terminal
// (a file, a pipe) no "> " prompt is printed, so the output is the replies, one after another,
// each followed by a newline.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "client/cli/connect_flags.h"
#include "client/cli/sampling_flags.h"
#include "client/client.h"
#include "common/flags.h"

namespace swarm::cli {
namespace {

const FlagSet& ChatFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm chat", "chat with a coordinator's model in the terminal (its chat template)");
    f.Required("server", "HOST:PORT", "the coordinator")
        .Value("system", "TEXT", "", "a system message that starts the conversation")
        .Value("timeout", "SECONDS", "600", "deadline of each reply");
    AddSamplingFlags(f);
    f.Note(
        "Reads one user message a line from stdin until EOF; `/reset` clears the history. The "
        "model needs a chat template (tokenizer_config.json or chat_template.jinja).");
    AddConnectFlags(f);
    AddResumeFlags(f);
    return f;
  }();
  return flags;
}

int ChatCommand(const std::vector<std::string>& args) {
  auto flags = ChatFlags().Parse(args);
  if (!flags.ok()) return Fail("chat", flags.status());
  auto server = flags->Required("server");
  if (!server.ok()) return Fail("chat", server.status());
  auto params = ReadSamplingFlags(*flags);
  if (!params.ok()) return Fail("chat", params.status());
  if (params->logprobs) {
    return Fail("chat", absl::InvalidArgumentError(
                            "--logprobs: swarm chat prints text only (swarm generate --json has "
                            "logprobs)"));
  }
  auto timeout = flags->Double("timeout");
  if (!timeout.ok()) return Fail("chat", timeout.status());
  auto client = Client::Connect(*server, ConnectOptions(*flags));
  if (!client.ok()) return Fail("chat", client.status());

  GenerateRequest req;
  SetSampling(*params, req);
  req.timeout = absl::Seconds(*timeout);
  std::vector<ChatMessage> history;
  if (flags->Has("system")) history.push_back({"system", flags->String("system")});
  const size_t keep = history.size();

  const bool interactive = isatty(STDIN_FILENO) != 0;
  int failures = 0;
  std::string line;
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    if (absl::StripAsciiWhitespace(line) == "/reset") {
      history.resize(keep);
      if (interactive) std::fputs("(history cleared)\n", stdout);
      continue;
    }
    history.push_back({"user", line});
    req.messages = history;
    auto result = (*client)->Generate(req, [](const GenerateChunk& chunk) {
      std::fputs(chunk.text.c_str(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (!result.ok()) {
      // The turn is dropped: the next line starts from the history before it.
      history.pop_back();
      Fail("chat", result.status());
      ++failures;
      continue;
    }
    history.push_back({"assistant", result->text});
  }
  if (interactive) std::fputs("\n", stdout);
  return failures == 0 ? 0 : 1;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(chat, "chat", ChatCommand, ChatFlags);

}  // namespace swarm::cli
