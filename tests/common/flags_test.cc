#include "common/flags.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace swarm {
namespace {

FlagSet Declared() {
  FlagSet f("swarm demo", "a command to test flags with");
  f.Required("model", "DIR", "the model directory")
      .Value("max-new-tokens", "N", "64", "tokens to generate at most")
      .Value("timeout", "DURATION", "30s", "deadline")
      .Value("kv-budget", "BYTES", "1MiB", "KV budget")
      .Value("prompt", "TEXT", "", "the prompt")
      .Bool("json", "print JSON")
      .Note("Give --prompt.");
  return f;
}

TEST(FlagSetTest, ReadersReturnTheDeclaredDefaultsWhenAbsent) {
  auto flags = Declared().Parse({"--model", "m"});
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_FALSE(flags->help());
  EXPECT_EQ(flags->String("model"), "m");
  EXPECT_EQ(*flags->Int("max-new-tokens"), 64);
  EXPECT_EQ(*flags->Duration("timeout"), absl::Seconds(30));
  EXPECT_EQ(*flags->Bytes("kv-budget"), 1 << 20);
  EXPECT_FALSE(flags->Has("max-new-tokens"));  // A default is not "given".
  EXPECT_EQ(flags->String("prompt"), "");
  EXPECT_FALSE(flags->Bool("json"));
  // No default: the reader without a fallback says the flag is missing; with one, the fallback.
  EXPECT_EQ(flags->Int("prompt").status().message(), "missing required flag --prompt");
  EXPECT_EQ(*flags->Int("prompt", 7), 7);
  // An explicit fallback still wins over the declaration (older call sites).
  EXPECT_EQ(*flags->Int("max-new-tokens", 5), 5);

  auto given = Declared().Parse({"--model=m", "--max-new-tokens", "3", "--json", "--timeout=2m"});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(*given->Int("max-new-tokens"), 3);
  EXPECT_EQ(*given->Duration("timeout"), absl::Minutes(2));
  EXPECT_TRUE(given->Bool("json"));
  EXPECT_TRUE(given->Has("max-new-tokens"));
}

TEST(FlagSetTest, UnknownFlagsGetTheNearestDeclaredName) {
  const FlagSet f = Declared();
  EXPECT_EQ(f.Parse({"--modle", "m"}).status().message(),
            "unknown flag --modle; did you mean --model?");
  EXPECT_EQ(f.Parse({"--max-new-token", "3"}).status().message(),
            "unknown flag --max-new-token; did you mean --max-new-tokens?");
  EXPECT_EQ(f.Parse({"--jsno"}).status().message(), "unknown flag --jsno; did you mean --json?");
  EXPECT_EQ(f.Parse({"--max-new", "3"}).status().message(),  // A unique prefix.
            "unknown flag --max-new; did you mean --max-new-tokens?");
  EXPECT_EQ(f.Parse({"--verbose"}).status().message(), "unknown flag --verbose");
  EXPECT_EQ(f.Parse({"--x"}).status().message(), "unknown flag --x");
  EXPECT_EQ(f.Parse({"--modle"}).status().code(), absl::StatusCode::kInvalidArgument);
  // The older parser suggests too.
  EXPECT_EQ(Flags::Parse({"--sever", "x"}, {"server", "timeout"}, {"json"}).status().message(),
            "unknown flag --sever; did you mean --server?");
  EXPECT_EQ(f.Parse({"positional"}).status().message(), "unexpected argument 'positional'");
  EXPECT_EQ(f.Parse({"--json=maybe"}).status().message(),
            "flag --json takes no value (got 'maybe')");
  EXPECT_EQ(f.Parse({"--model"}).status().message(), "flag --model needs a value");
}

TEST(FlagSetTest, HelpIsRequestedAnywhereAndWinsOverMistakes) {
  const FlagSet f = Declared();
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"-h"}, {"--model", "m", "--help"}, {"--modle", "x", "--help"}}) {
    auto flags = f.Parse(args);
    ASSERT_TRUE(flags.ok()) << flags.status();
    EXPECT_TRUE(flags->help());
  }
  // The older parser keeps refusing --help (the CLI's dispatcher answers it for those commands).
  EXPECT_FALSE(Flags::Parse({"--help"}, {"server"}, {}).ok());
}

TEST(FlagSetTest, HelpListsEveryFlagWithItsDefaultAndMeaning) {
  EXPECT_EQ(Declared().Help(),
            "usage: swarm demo --model DIR [flags]\n"
            "\n"
            "a command to test flags with\n"
            "\n"
            "flags:\n"
            "  --model DIR         the model directory (required)\n"
            "  --max-new-tokens N  tokens to generate at most (default: 64)\n"
            "  --timeout DURATION  deadline (default: 30s)\n"
            "  --kv-budget BYTES   KV budget (default: 1MiB)\n"
            "  --prompt TEXT       the prompt\n"
            "  --json              print JSON\n"
            "  --help              print this help\n"
            "\n"
            "Give --prompt.\n");
}

TEST(FlagSetTest, ALaterDeclarationReplacesAnEarlierOne) {
  FlagSet f("p", "");
  f.Value("top-k", "K", "0", "old").Value("top-k", "K", "3", "new");
  ASSERT_EQ(f.flags().size(), 1u);
  EXPECT_EQ(*f.Parse({})->Int("top-k"), 3);
}

TEST(NearestFlagTest, EditDistanceWithTranspositions) {
  const std::vector<std::string> names = {"model", "server", "top-k", "top-p", "seed"};
  EXPECT_EQ(NearestFlag("modle", names), "model");
  EXPECT_EQ(NearestFlag("servr", names), "server");
  EXPECT_EQ(NearestFlag("top-kk", names), "top-k");
  EXPECT_EQ(NearestFlag("sed", names), "seed");
  EXPECT_EQ(NearestFlag("xyz", names), "");
  EXPECT_EQ(NearestFlag("top", names), "");  // A prefix of two names: no guess.
}

}  // namespace
}  // namespace swarm
