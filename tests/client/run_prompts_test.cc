// `swarm run --prompts-file FILE` end to end (the swarm binary): many prompts at once through the
// in-process batched engine give each prompt exactly what `swarm run` gives it alone (greedy and
// seeded sampling) on stories260K, in input order; bad files and flags fail with a reason.
// Skipped when the swarm binary has not been built.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/coordinator/test_cluster.h"
#include "tests/util/skip.h"

namespace swarm {
namespace {

struct Result {
  int code = -1;
  std::string out;  // stdout
};

// Runs `swarm ARGS` with stderr appended to stdout when `merge`.
Result Swarm(const std::string& args, bool merge = false) {
  std::string cmd =
      std::string(SWARM_BINARY_DIR) + "/swarm " + args + (merge ? " 2>&1" : " 2>/dev/null");
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class RunPromptsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::ifstream(std::string(SWARM_BINARY_DIR) + "/swarm").good()) {
      SWARM_SKIP_OR_FAIL("swarm binary not built");
    }
    path_ = ::testing::TempDir() + "/prompts-" + std::to_string(getpid()) + ".txt";
  }
  void TearDown() override { std::remove(path_.c_str()); }

  void Write(const std::string& text) {
    std::ofstream out(path_, std::ios::binary);
    out << text;
  }

  // The batched run and each prompt alone, with the same sampling flags.
  void ExpectSameAsAlone(const std::vector<std::string>& prompts, const std::string& sampling,
                         const std::string& batch_flags) {
    std::string file;
    for (const std::string& p : prompts) file += p + "\n";
    Write(file);
    const std::string model = "--model " + testing::ModelDir("stories260K");
    Result batch = Swarm("run " + model + " --prompts-file " + path_ + " " + sampling + " " +
                         batch_flags + " --json");
    ASSERT_EQ(batch.code, 0) << batch.out;
    std::istringstream lines(batch.out);
    std::string line;
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE(prompts[i]);
      ASSERT_TRUE(std::getline(lines, line)) << "only " << i << " lines: " << batch.out;
      Result alone =
          Swarm("run " + model + " --prompt " + Quote(prompts[i]) + " " + sampling + " --json");
      ASSERT_EQ(alone.code, 0) << alone.out;
      auto a = nlohmann::json::parse(alone.out);
      auto b = nlohmann::json::parse(line);
      EXPECT_FALSE(a["ids"].empty());
      EXPECT_EQ(b, a);  // prompt_ids, ids, text, finish_reason.
    }
    EXPECT_FALSE(std::getline(lines, line)) << "extra output: " << line;
  }

  std::string path_;
};

const std::vector<std::string> kPrompts = {"Once upon a time", "The little dog",
                                           "Lily and Ben went to the park to play with",
                                           "One day, a big", "Tom had a red ball"};

TEST_F(RunPromptsFileTest, GreedyEqualsEachPromptAlone) {
  // A small budget: prompts prefill in chunks next to others' decode steps.
  ExpectSameAsAlone(kPrompts, "--max-new-tokens 24",
                    "--max-batch-tokens 6 --max-batch-sequences 3");
}

TEST_F(RunPromptsFileTest, SeededSamplingEqualsEachPromptAlone) {
  ExpectSameAsAlone(kPrompts, "--max-new-tokens 24 --temperature 0.9 --top-p 0.95 --seed 11",
                    "--max-batch-sequences 4");
}

TEST_F(RunPromptsFileTest, TextOutputIsInInputOrder) {
  Write("Once upon a time\r\nThe little dog\n");
  Result r = Swarm("run --model " + testing::ModelDir("stories260K") + " --prompts-file " + path_ +
                   " --max-new-tokens 8");
  ASSERT_EQ(r.code, 0) << r.out;
  const size_t first = r.out.find("Once upon a time");
  const size_t second = r.out.find("\n\nThe little dog");
  EXPECT_EQ(first, 0u) << r.out;
  EXPECT_NE(second, std::string::npos) << r.out;
}

TEST_F(RunPromptsFileTest, BadFilesAndFlagsFailWithAReason) {
  const std::string model = "--model " + testing::ModelDir("stories260K");
  Result missing = Swarm("run " + model + " --prompts-file /nonexistent/prompts.txt", true);
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.out.find("cannot open"), std::string::npos) << missing.out;

  Write("Once upon a time\n\nThe little dog\n");
  Result empty_line = Swarm("run " + model + " --prompts-file " + path_, true);
  EXPECT_NE(empty_line.code, 0);
  EXPECT_NE(empty_line.out.find("line 2: empty prompt"), std::string::npos) << empty_line.out;

  Write("");
  Result empty = Swarm("run " + model + " --prompts-file " + path_, true);
  EXPECT_NE(empty.code, 0);
  EXPECT_NE(empty.out.find("no prompt"), std::string::npos) << empty.out;

  Write("Once upon a time\n");
  Result both = Swarm("run " + model + " --prompts-file " + path_ + " --prompt x", true);
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.out.find("exactly one of"), std::string::npos) << both.out;
  Result zero = Swarm("run " + model + " --prompts-file " + path_ + " --max-batch-tokens 0", true);
  EXPECT_NE(zero.code, 0);
  EXPECT_NE(zero.out.find("--max-batch-tokens"), std::string::npos) << zero.out;
  Result alone = Swarm("run " + model + " --prompt x --max-batch-sequences 2", true);
  EXPECT_NE(alone.code, 0);
  EXPECT_NE(alone.out.find("need --prompts-file"), std::string::npos) << alone.out;
}

// A prompt that fails (longer than the context) fails alone: the others print, the exit code says.
TEST_F(RunPromptsFileTest, AFailingPromptFailsAlone) {
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "the dog ran and ";
  Write("Once upon a time\n" + long_prompt + "\nThe little dog\n");
  Result r = Swarm("run --model " + testing::ModelDir("stories260K") + " --prompts-file " + path_ +
                   " --max-new-tokens 4 --json");
  EXPECT_EQ(r.code, 1) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  std::vector<nlohmann::json> out;
  while (std::getline(lines, line)) out.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(out.size(), 3u) << r.out;
  EXPECT_EQ(out[0]["ids"].size(), 4u);
  EXPECT_EQ(out[1]["line"], 2);
  EXPECT_NE(out[1]["error"].get<std::string>().find("OUT_OF_RANGE"), std::string::npos) << out[1];
  EXPECT_EQ(out[2]["ids"].size(), 4u);
}

}  // namespace
}  // namespace swarm
