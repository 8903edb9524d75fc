// The product as a user runs it: real processes on loopback. `swarm up` serves the golden ids and
// stops every process on SIGINT; separate swarm-worker/swarm-coordinator processes survive a
// worker being killed; the installed SDK package builds and works in an outside project.
#include <gtest/gtest.h>

#include "absl/strings/str_join.h"
#include "client/client.h"
#include "nlohmann/json.hpp"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

std::string Ids(const std::vector<int64_t>& ids) { return absl::StrJoin(ids, ","); }

TEST(ClusterProcessTest, SwarmUpServesTheGoldenIdsAndStopsEveryProcess) {
  ScratchDir scratch("up");
  const std::string& dir = scratch.path();
  Process up({kBin + "/swarm", "up", "--model", ModelDir("stories260K"), "--workers", "2",
              "--kv-budget", "64MiB"},
             dir + "/up.log");
  const std::string address = up.WaitForLine("serving on ");
  ASSERT_FALSE(address.empty()) << up.Log();
  const std::vector<pid_t> children = ChildrenOf(up.pid());
  EXPECT_EQ(children.size(), 3u);  // Two workers and the coordinator.

  CommandResult gen = RunCommand({kBin + "/swarm", "generate", "--server", address, "--ids",
                                  Ids(GoldenIds("stories260K", "greedy.input_ids")),
                                  "--max-new-tokens", "32", "--no-stop", "--json"},
                                 dir + "/generate.log");
  ASSERT_EQ(gen.exit_code, 0) << gen.out;
  auto json = nlohmann::json::parse(gen.out);
  EXPECT_EQ(json["ids"].get<std::vector<int64_t>>(), GoldenIds("stories260K", "greedy.greedy"));

  CommandResult story = RunCommand({kBin + "/swarm", "generate", "--server", address, "--prompt",
                                    "Once upon a time", "--max-new-tokens", "40"},
                                   dir + "/story.log");
  ASSERT_EQ(story.exit_code, 0);
  EXPECT_NE(story.out.find("Once upon a time, there was a little girl named Lily"),
            std::string::npos)
      << story.out;

  CommandResult status =
      RunCommand({kBin + "/swarm", "status", "--server", address, "--json"}, dir + "/status.log");
  ASSERT_EQ(status.exit_code, 0);
  auto s = nlohmann::json::parse(status.out);
  EXPECT_TRUE(s["serving"].get<bool>());
  ASSERT_EQ(s["workers"].size(), 2u);
  for (const auto& w : s["workers"]) {
    EXPECT_EQ(w["sessions"].get<int>(), 0);
    EXPECT_EQ(w["kv_budget_bytes"].get<int64_t>(), int64_t{64} << 20);  // swarm up --kv-budget.
    ASSERT_TRUE(w.contains("busy_fraction")) << w;
    EXPECT_GE(w["busy_fraction"].get<double>(), 0);
    EXPECT_LE(w["busy_fraction"].get<double>(), 1);
  }
  // The scheduler's figures: nothing running or waiting once every request is done.
  ASSERT_TRUE(s.contains("scheduler")) << status.out;
  EXPECT_EQ(s["scheduler"]["running_requests"].get<int>(), 0);
  EXPECT_EQ(s["scheduler"]["waiting_requests"].get<int>(), 0);
  EXPECT_GT(s["scheduler"]["window_seconds"].get<double>(), 0);
  for (const char* key :
       {"steps", "sequences_per_step", "tokens_per_step", "admitted", "queue_seconds_mean"}) {
    EXPECT_TRUE(s["scheduler"].contains(key)) << key;
  }
  CommandResult table =
      RunCommand({kBin + "/swarm", "status", "--server", address}, dir + "/t.log");
  EXPECT_NE(table.out.find("SERVING"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("scheduler: 0 running, 0 waiting"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("BUSY"), std::string::npos) << table.out;

  up.Signal(SIGINT);
  const int wait_status = up.Wait(absl::Seconds(20));
  ASSERT_NE(wait_status, -1) << "swarm up did not stop";
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) << up.Log();
  for (pid_t child : children) EXPECT_FALSE(Alive(child)) << "orphan " << child;
}

TEST(ClusterProcessTest, SwarmUpRejectsMoreWorkersThanLayers) {
  ScratchDir scratch("up-bad");
  const std::string& dir = scratch.path();
  CommandResult r =
      RunCommand({kBin + "/swarm", "up", "--model", ModelDir("stories260K"), "--workers", "6"},
                 dir + "/up.log");
  EXPECT_NE(r.exit_code, 0);
}

TEST(ClusterProcessTest, SeparateProcessesSurviveAKilledWorker) {
  ScratchDir scratch("procs");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  Process w1(
      {kBin + "/swarm-worker", "--model", model, "--layers", "0-2", "--listen", "127.0.0.1:0"},
      dir + "/w1.log");
  Process w2({kBin + "/swarm-worker", "--model", model, "--blocks", "1", "--num-blocks", "2",
              "--listen", "127.0.0.1:0"},
             dir + "/w2.log");
  const std::string a1 = w1.WaitForLine("listening on ");
  const std::string a2 = w2.WaitForLine("listening on ");
  ASSERT_FALSE(a1.empty() || a2.empty()) << w1.Log() << w2.Log();
  Process c({kBin + "/swarm-coordinator", "--model", model, "--workers", a1 + "," + a2, "--listen",
             "127.0.0.1:0"},
            dir + "/c.log");
  const std::string address = c.WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << c.Log();
  auto client = Client::Connect(address);
  ASSERT_TRUE((*client)->WaitUntilServing(absl::Seconds(30)).ok()) << c.Log();
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "prompt.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  auto r = (*client)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, GoldenIds("stories260K", "prompt.greedy"));

  w2.Kill(SIGKILL);
  CommandResult gen = RunCommand(
      {kBin + "/swarm", "generate", "--server", address, "--prompt", "Once"}, dir + "/gen.log");
  EXPECT_NE(gen.exit_code, 0);
  auto s = (*client)->Status();
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->serving);
  EXPECT_FALSE(s->workers[1].reachable);
  EXPECT_EQ(s->workers[0].sessions, 0);

  // Clean shutdown on SIGTERM.
  c.Signal(SIGTERM);
  int cs = c.Wait(absl::Seconds(10));
  EXPECT_TRUE(cs != -1 && WIFEXITED(cs) && WEXITSTATUS(cs) == 0) << c.Log();
  w1.Signal(SIGINT);
  int ws = w1.Wait(absl::Seconds(10));
  EXPECT_TRUE(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << w1.Log();
}

TEST(ClusterProcessTest, BadFlagsFailWithAReason) {
  ScratchDir scratch("flags");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  CommandResult r =
      RunCommand({kBin + "/swarm-worker", "--model", model, "--layers", "0-9"}, dir + "/w.log");
  EXPECT_EQ(r.exit_code, 2);
  r = RunCommand(
      {kBin + "/swarm-worker", "--model", model, "--layers", "0", "--listen", "nonsense"},
      dir + "/w2.log");
  EXPECT_NE(r.exit_code, 0);
  r = RunCommand({kBin + "/swarm-coordinator", "--model", model}, dir + "/c.log");
  EXPECT_EQ(r.exit_code, 2);
  r = RunCommand({kBin + "/swarm", "generate", "--prompt", "x"}, dir + "/g.log");
  EXPECT_NE(r.exit_code, 0);
}

TEST(SdkPackageTest, AnOutsideProjectBuildsAgainstTheInstalledPackage) {
  ScratchDir scratch("sdk");
  const std::string& dir = scratch.path();
  const std::string prefix = dir + "/prefix";
  ASSERT_EQ(RunCommand({"cmake", "--install", kBin, "--prefix", prefix}, dir + "/install.log",
                       absl::Minutes(2))
                .exit_code,
            0);
  const std::string build = dir + "/build";
  CommandResult conf =
      RunCommand({"cmake", "-S", std::string(SWARM_SOURCE_DIR) + "/tests/integration/sdk_consumer",
                  "-B", build, "-DCMAKE_PREFIX_PATH=" + prefix,
                  // Compiled and linked as this build was: an instrumented build's libraries need
                  // the sanitizer runtimes in the program that links them.
                  std::string("-DCMAKE_CXX_FLAGS=") + SWARM_CXX_FLAGS,
                  std::string("-DCMAKE_EXE_LINKER_FLAGS=") + SWARM_EXE_LINKER_FLAGS},
                 dir + "/configure.log", absl::Minutes(2));
  ASSERT_EQ(conf.exit_code, 0)
      << Process({"cat", dir + "/configure.log"}, "/dev/null").ReadAll(absl::Seconds(5));
  ASSERT_EQ(RunCommand({"cmake", "--build", build}, dir + "/build.log", absl::Minutes(5)).exit_code,
            0)
      << Process({"cat", dir + "/build.log"}, "/dev/null").ReadAll(absl::Seconds(5));

  auto cluster = StartCluster("stories260K", {{0, 1}, {2, 3, 4}});
  CommandResult r = RunCommand({build + "/sdk_consumer", cluster.coordinator->address(),
                                Ids(GoldenIds("stories260K", "prompt.input_ids")), "32"},
                               dir + "/consumer.log");
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, Ids(GoldenIds("stories260K", "prompt.greedy")) + "\n");
}

}  // namespace
}  // namespace swarm::testing
