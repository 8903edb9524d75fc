// The `swarm calibrate`, `swarm eval` and `swarm memory` commands end to end (real processes),
// including their errors on bad input. Skipped when the swarm binary has not been built.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "router_test_util.h"
#include "tests/util/skip.h"

namespace swarm::router {
namespace {

using testing::kShared;
using testing::kStories;

struct Result {
  int code = -1;
  std::string output;  // stdout + stderr.
};

Result Swarm(const std::string& args) {
  std::string cmd = std::string(SWARM_BINARY_DIR) + "/swarm " + args + " 2>&1";
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::ifstream(std::string(SWARM_BINARY_DIR) + "/swarm").good()) {
      SWARM_SKIP_OR_FAIL("swarm binary not built");
    }
  }
};

TEST_F(Cli, MemoryReportsRealTensorSizes) {
  Result r = Swarm("memory --model " + kStories + " --num-blocks 5 --top-k-blocks 3 --json");
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["block_bytes"].size(), 5u);
  EXPECT_EQ(j["block_bytes"][0].get<int64_t>(),
            4 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 172 * 64));
  EXPECT_NEAR(j["block_savings_ratio"].get<double>(), 0.4, 1e-9);
  Result text = Swarm("memory --model " + kStories + " --num-blocks 5 --top-k-blocks 3");
  ASSERT_EQ(text.code, 0);
  EXPECT_NE(text.output.find("savings"), std::string::npos);
}

TEST_F(Cli, MemoryRejectsBadK) {
  Result big = Swarm("memory --model " + kStories + " --num-blocks 5 --top-k-blocks 6");
  EXPECT_EQ(big.code, 2);
  EXPECT_NE(big.output.find("exceeds the number of blocks"), std::string::npos) << big.output;
  Result zero = Swarm("memory --model " + kStories + " --num-blocks 5 --top-k-blocks 0");
  EXPECT_EQ(zero.code, 2);
  EXPECT_NE(zero.output.find("at least 1"), std::string::npos) << zero.output;
  Result no_n = Swarm("memory --model " + kStories);
  EXPECT_EQ(no_n.code, 2);
  EXPECT_NE(no_n.output.find("--num-blocks"), std::string::npos);
}

TEST_F(Cli, CalibrateThenEval) {
  std::string out = testing::TempPath("cli_router.safetensors");
  Result cal = Swarm("calibrate --model " + kStories + " --num-blocks 5 --out " + out +
                     " --num-prompts 10 --continuation 6 --max-prompt-tokens 10 --fit-gate "
                     "--gate-epochs 30 --seed 3");
  ASSERT_EQ(cal.code, 0) << cal.output;
  EXPECT_NE(cal.output.find("wrote " + out), std::string::npos) << cal.output;
  EXPECT_NE(cal.output.find("leave-one-out"), std::string::npos);
  Result ev = Swarm("eval --model " + kStories + " --router " + out +
                    " --top-k-blocks 3 --num-prompts 6 --greedy-tokens 6 --bootstrap 100 "
                    "--max-prompt-tokens 10 --seed 3");
  ASSERT_EQ(ev.code, 0) << ev.output;
  for (const char* s :
       {"| random |", "| drop-deepest |", "| best static |", "| router: neighbours |",
        "| router: gate |", "| router: both |", "| oracle |", "paired bootstrap"}) {
    EXPECT_NE(ev.output.find(s), std::string::npos) << s << "\n" << ev.output;
  }
  // The router file belongs to stories260K with N = 5.
  Result other = Swarm("eval --model " + kShared + "/fixtures/hf-random/llama-gqa --router " + out +
                       " --num-prompts 2");
  EXPECT_EQ(other.code, 1);
  EXPECT_NE(other.output.find("another model"), std::string::npos) << other.output;
  Result wrong_n =
      Swarm("eval --model " + kStories + " --router " + out + " --num-blocks 4 --num-prompts 2");
  EXPECT_NE(wrong_n.code, 0);
  EXPECT_NE(wrong_n.output.find("N = 5"), std::string::npos) << wrong_n.output;
  Result big = Swarm("eval --model " + kStories + " --router " + out + " --top-k-blocks 9");
  EXPECT_EQ(big.code, 2);
  EXPECT_NE(big.output.find("exceeds the number of blocks"), std::string::npos) << big.output;
}

TEST_F(Cli, CalibrateRejectsBadInput) {
  std::string out = testing::TempPath("never.safetensors");
  Result empty =
      Swarm("calibrate --model " + kStories + " --num-blocks 5 --out " + out + " --num-prompts 0");
  EXPECT_EQ(empty.code, 2);
  EXPECT_NE(empty.output.find("empty"), std::string::npos) << empty.output;
  std::string empty_file = testing::TempPath("cli_empty.txt");
  std::ofstream(empty_file) << "\n";
  Result empty_text = Swarm("calibrate --model " + kStories + " --num-blocks 5 --out " + out +
                            " --prompts " + empty_file);
  EXPECT_EQ(empty_text.code, 2);
  EXPECT_NE(empty_text.output.find("prompt set is empty"), std::string::npos) << empty_text.output;
  Result big_k = Swarm("calibrate --model " + kStories + " --num-blocks 5 --out " + out +
                       " --top-k-blocks 6 --num-prompts 2");
  EXPECT_EQ(big_k.code, 2);
  EXPECT_NE(big_k.output.find("exceeds the number of blocks"), std::string::npos) << big_k.output;
  Result big_n =
      Swarm("calibrate --model " + kStories + " --num-blocks 6 --out " + out + " --num-prompts 2");
  EXPECT_EQ(big_n.code, 2);
  EXPECT_NE(big_n.output.find("number of blocks 6"), std::string::npos) << big_n.output;
  EXPECT_FALSE(std::ifstream(out).good());
}

}  // namespace
}  // namespace swarm::router
