// Flags that would leave a server unable to serve stop it at start-up, as processes: zero-size
// queues (--max-queued-requests, --max-queued-steps) and a cuda worker without --kv-budget exit
// with 2 and one stderr line naming the flag, before any model is loaded.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

// Runs `argv` and expects exit code 2 with exactly one stderr line, which contains `needle`.
void ExpectUsageError(const std::vector<std::string>& argv, const std::string& log,
                      const std::string& needle) {
  CommandResult r = RunCommand(argv, log, absl::Seconds(20));  // A server that starts never exits.
  EXPECT_EQ(r.exit_code, 2) << argv[0] << " " << argv.back();
  const std::string err = ReadFile(log);
  std::vector<std::string> lines = absl::StrSplit(err, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(err.find(needle), std::string::npos) << err;
}

TEST(StartupFlagsProcessTest, ZeroOrNegativeQueuesAreRejected) {
  ScratchDir scratch("startup-flags");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  int n = 0;
  for (const char* bad : {"0", "-1"}) {
    ExpectUsageError({kBin + "/swarm-coordinator", "--model", model, "--workers", "127.0.0.1:1",
                      "--max-queued-requests", bad},
                     absl::StrCat(dir, "/coordinator", ++n, ".log"),
                     absl::StrCat("--max-queued-requests must be at least 1, got ", bad));
    ExpectUsageError(
        {kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--max-queued-steps", bad},
        absl::StrCat(dir, "/worker", n, ".log"),
        absl::StrCat("--max-queued-steps must be at least 1, got ", bad));
  }
  ExpectUsageError({kBin + "/swarm-coordinator", "--model", model, "--workers", "127.0.0.1:1",
                    "--max-concurrent-requests", "0"},
                   dir + "/concurrent.log", "--max-concurrent-requests must be at least 1");
}

TEST(StartupFlagsProcessTest, CudaWorkerNeedsAnExplicitKvBudget) {
  ScratchDir scratch("startup-kv");
  ExpectUsageError({kBin + "/swarm-worker", "--model", ModelDir("stories260K"), "--layers", "0-4",
                    "--device", "cuda:0"},
                   scratch.path() + "/cuda.log", "--device cuda:0 needs an explicit --kv-budget");
}

}  // namespace
}  // namespace swarm::testing
