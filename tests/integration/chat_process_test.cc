// `swarm chat` (the front binary) against an in-process stories260K cluster whose model carries
// llama-2-chat's template (ChatModelDir), with stdin from a file: each reply equals the SDK's
// Generate of the whole conversation so far (the second turn carries the first exchange), and
// `/reset` starts the conversation afresh.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

constexpr int kMaxTokens = 10;

TEST(ChatProcessTest, RepliesCarryTheHistoryAndResetClearsIt) {
  ScratchDir scratch("chat-cli");
  const std::string dir = ChatModelDir("chat-cli-model", "llama-2-chat");
  const RemoveOnExit remove{dir};
  ASSERT_FALSE(dir.empty());
  Cluster cluster;
  cluster.workers.push_back(StartWorker(dir, Range(0, 5)));
  ASSERT_NE(cluster.workers.back(), nullptr);
  cluster.coordinator = StartCoordinator(dir, cluster.addresses());
  ASSERT_NE(cluster.coordinator, nullptr);

  const std::string system = "You tell short stories.";
  const std::string first = "Tell me about a cat.";
  const std::string second = "What did the cat do next?";
  const std::string input = scratch.path() + "/input.txt";
  {
    std::ofstream f(input);
    f << first << "\n" << second << "\n/reset\n" << first << "\n";
  }

  // The reference replies: the SDK with the conversation spelled out.
  auto client = Client::Connect(cluster.coordinator->address());
  ASSERT_TRUE(client.ok()) << client.status();
  auto reply = [&](const std::vector<ChatMessage>& messages) {
    GenerateRequest r;
    r.max_new_tokens = kMaxTokens;
    r.messages = messages;
    auto result = (*client)->Generate(r);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->text : std::string("<error>");
  };
  const std::string one = reply({{"system", system}, {"user", first}});
  const std::string two =
      reply({{"system", system}, {"user", first}, {"assistant", one}, {"user", second}});
  // The control: without the history the second reply reads otherwise, so the check below can
  // tell whether the history went with it.
  const std::string two_alone = reply({{"system", system}, {"user", second}});
  ASSERT_NE(two, two_alone);

  const std::string log = scratch.path() + "/chat.log";
  CommandResult chat = RunCommand(
      {"/bin/bash", "-c",
       absl::StrCat("exec '", kBin, "/swarm' chat --server ", cluster.coordinator->address(),
                    " --system '", system, "' --max-new-tokens ", kMaxTokens, " < '", input, "'")},
      log, absl::Seconds(120));
  EXPECT_EQ(chat.exit_code, 0) << ReadFile(log);
  EXPECT_EQ(chat.out, absl::StrCat(one, "\n", two, "\n", one, "\n")) << ReadFile(log);
}

}  // namespace
}  // namespace swarm::testing
