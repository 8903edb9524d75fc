// swarm-worker --memory-budget as a process: a budget below one block stops start-up with exit 1
// and a message naming both sizes; malformed residency flags are usage errors (exit 2).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

TEST(ResidencyProcessTest, BudgetBelowOneBlockAndBadFlagsFailWithAReason) {
  ScratchDir scratch("residency");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  CommandResult r = RunCommand({kBin + "/swarm-worker", "--model", model, "--layers", "0-4",
                                "--listen", "127.0.0.1:0", "--memory-budget", "1000"},
                               dir + "/small.log");
  EXPECT_EQ(r.exit_code, 1);
  const std::string log = ReadFile(dir + "/small.log");
  EXPECT_NE(log.find("--memory-budget 1000 bytes"), std::string::npos) << log;
  EXPECT_NE(log.find("smaller than block 0"), std::string::npos) << log;

  r = RunCommand(
      {kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--memory-budget", "0"},
      dir + "/zero.log");
  EXPECT_EQ(r.exit_code, 2);
  r = RunCommand(
      {kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--block-layers", "2"},
      dir + "/no_budget.log");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(ReadFile(dir + "/no_budget.log").find("--block-layers needs --memory-budget"),
            std::string::npos);
  r = RunCommand({kBin + "/swarm-worker", "--model", model, "--layers", "0-4", "--memory-budget",
                  "1MiB", "--block-layers", "0"},
                 dir + "/zero_layers.log");
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace swarm::testing
