// The CLI as a user meets it, as processes: `swarm CMD --help` and `swarm help CMD` for every
// command (and the servers' --help), generated from each command's declared flags; the typo
// suggestion for an unknown flag or command; a server refusing a port another process holds; the
// worker's load progress in its log.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

// The command names `swarm help` lists ("  NAME  summary" lines after "commands:").
std::vector<std::string> ListedCommands(const std::string& help) {
  std::vector<std::string> names;
  bool in_list = false;
  for (absl::string_view line : absl::StrSplit(help, '\n', absl::SkipEmpty())) {
    if (line == "commands:") {
      in_list = true;
      continue;
    }
    if (!in_list) continue;
    line = absl::StripLeadingAsciiWhitespace(line);
    names.emplace_back(line.substr(0, line.find(' ')));
  }
  return names;
}

TEST(CliProcessTest, EveryCommandHasHelpWithEveryFlagAndItsDefault) {
  ScratchDir scratch("cli-help");
  const std::string log = scratch.path() + "/help.log";
  CommandResult list = RunCommand({kBin + "/swarm", "help"}, log);
  ASSERT_EQ(list.exit_code, 0) << ReadFile(log);
  const std::vector<std::string> names = ListedCommands(list.out);
  // The CLI contract's commands (DESIGN.md) are all there, whichever binary holds them.
  for (const char* want : {"run", "logits", "tokenize", "up", "generate", "predict", "status",
                           "memory", "calibrate", "eval", "synth", "convert-llama2c"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want << list.out;
  }
  for (const std::string& name : names) {
    CommandResult help = RunCommand({kBin + "/swarm", name, "--help"}, log);
    EXPECT_EQ(help.exit_code, 0) << name;
    EXPECT_TRUE(absl::StartsWith(help.out, absl::StrCat("usage: swarm ", name))) << help.out;
    EXPECT_NE(help.out.find("\nflags:\n"), std::string::npos) << name << ": " << help.out;
    EXPECT_NE(help.out.find("  --help "), std::string::npos) << name << ": " << help.out;
    // `swarm help CMD` prints the same, and -h does too.
    EXPECT_EQ(RunCommand({kBin + "/swarm", "help", name}, log).out, help.out) << name;
    EXPECT_EQ(RunCommand({kBin + "/swarm", name, "-h"}, log).out, help.out) << name;
  }
  // Defaults and meanings come from the declarations (torch-free front and swarm-tools alike).
  CommandResult generate = RunCommand({kBin + "/swarm", "generate", "--help"}, log);
  EXPECT_NE(generate.out.find("--max-new-tokens N"), std::string::npos) << generate.out;
  EXPECT_NE(generate.out.find("tokens to generate at most (default: 64)"), std::string::npos);
  EXPECT_NE(generate.out.find("--server HOST:PORT"), std::string::npos);
  EXPECT_NE(generate.out.find("the coordinator (required)"), std::string::npos);
  CommandResult run = RunCommand({kBin + "/swarm", "run", "--help"}, log);
  EXPECT_NE(run.out.find("--dtype f32|bf16|f16"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("(default: f32)"), std::string::npos) << run.out;
  // --help wins over a mistake elsewhere on the line.
  EXPECT_EQ(RunCommand({kBin + "/swarm", "status", "--sever", "x", "--help"}, log).exit_code, 0);
}

TEST(CliProcessTest, ServersPrintTheirFlagsWithDefaults) {
  ScratchDir scratch("server-help");
  const std::string log = scratch.path() + "/help.log";
  CommandResult worker = RunCommand({kBin + "/swarm-worker", "--help"}, log);
  EXPECT_EQ(worker.exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(worker.out, "usage: swarm-worker --model DIR")) << worker.out;
  for (const char* want : {"--layers A-B[,C-D]", "--max-sessions N", "(default: 127.0.0.1:0)",
                           "--session-ttl DURATION", "(default: 5m)", "--kv-budget BYTES"}) {
    EXPECT_NE(worker.out.find(want), std::string::npos) << want << "\n" << worker.out;
  }
  CommandResult coordinator = RunCommand({kBin + "/swarm-coordinator", "--help"}, log);
  EXPECT_EQ(coordinator.exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(coordinator.out,
                               "usage: swarm-coordinator --model DIR --workers HOST:PORT,..."))
      << coordinator.out;
  for (const char* want : {"--max-queued-requests N", "--request-timeout DURATION", "--router"}) {
    EXPECT_NE(coordinator.out.find(want), std::string::npos) << want << "\n" << coordinator.out;
  }
}

// One stderr line, exit code 2.
void ExpectOneLineError(const std::vector<std::string>& argv, const std::string& log,
                        const std::string& want) {
  CommandResult r = RunCommand(argv, log, absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 2) << argv[0] << " " << argv[1];
  const std::string err = ReadFile(log);
  EXPECT_NE(err.find(want), std::string::npos) << err;
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(err, '\n', absl::SkipEmpty())).size(), 1u)
      << err;
}

TEST(CliProcessTest, TyposGetASuggestion) {
  ScratchDir scratch("cli-typo");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  ExpectOneLineError({kBin + "/swarm", "run", "--modle", model}, dir + "/run.log",
                     "swarm run: unknown flag --modle; did you mean --model?");
  ExpectOneLineError({kBin + "/swarm", "status", "--sever", "127.0.0.1:1"}, dir + "/status.log",
                     "swarm status: unknown flag --sever; did you mean --server?");
  ExpectOneLineError({kBin + "/swarm", "generate", "--server", "x", "--max-new-token", "3"},
                     dir + "/generate.log",
                     "unknown flag --max-new-token; did you mean --max-new-tokens?");
  ExpectOneLineError({kBin + "/swarm", "stauts"}, dir + "/cmd.log",
                     "swarm: unknown command 'stauts'; did you mean 'status'?");
  ExpectOneLineError({kBin + "/swarm-worker", "--modle", model}, dir + "/worker.log",
                     "swarm-worker: unknown flag --modle; did you mean --model?");
  ExpectOneLineError({kBin + "/swarm-coordinator", "--model", model, "--worker", "127.0.0.1:1"},
                     dir + "/coordinator.log",
                     "swarm-coordinator: unknown flag --worker; did you mean --workers?");
}

TEST(CliProcessTest, ASecondServerOnAHeldPortExitsNamingTheAddress) {
  ScratchDir scratch("ports");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  Process first({kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen",
                 "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"},
                dir + "/first.log");
  const std::string address = first.WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << first.Log();
  const std::string metrics = first.WaitForLine("metrics on http://");
  ASSERT_FALSE(metrics.empty()) << first.Log();
  const std::string metrics_address = metrics.substr(0, metrics.find('/'));

  // The gRPC port: gRPC's SO_REUSEPORT is off, so the bind fails.
  CommandResult second =
      RunCommand({kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--listen", address},
                 dir + "/second.log");
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(ReadFile(dir + "/second.log")
                .find(absl::StrCat("swarm-worker: cannot listen on ", address,
                                   ": address already in use")),
            std::string::npos)
      << ReadFile(dir + "/second.log");
  // The coordinator the same way.
  CommandResult coordinator = RunCommand(
      {kBin + "/swarm-coordinator", "--model", model, "--workers", address, "--listen", address},
      dir + "/coordinator.log");
  EXPECT_NE(coordinator.exit_code, 0);
  EXPECT_NE(ReadFile(dir + "/coordinator.log")
                .find(absl::StrCat("cannot listen on ", address, ": address already in use")),
            std::string::npos)
      << ReadFile(dir + "/coordinator.log");
  // The metrics port too.
  CommandResult third = RunCommand({kBin + "/swarm-worker", "--model", model, "--layers", "0-4",
                                    "--listen", "127.0.0.1:0", "--metrics-listen", metrics_address},
                                   dir + "/third.log");
  EXPECT_NE(third.exit_code, 0);
  EXPECT_NE(ReadFile(dir + "/third.log")
                .find(absl::StrCat("metrics server: cannot bind ", metrics_address)),
            std::string::npos)
      << ReadFile(dir + "/third.log");

  // The first worker is unharmed, and its log (not a terminal) reported the load in plain lines.
  first.Signal(SIGTERM);
  EXPECT_EQ(first.Wait(absl::Seconds(60)), 0);
  const std::string log = first.Log();
  EXPECT_NE(log.find("swarm-worker: loading layers: 5/5 layers in "), std::string::npos) << log;
  EXPECT_EQ(log.find('\r'), std::string::npos);
}

}  // namespace
}  // namespace swarm::testing
