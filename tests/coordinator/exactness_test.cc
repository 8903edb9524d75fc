// Exact mode through 1, 2 and 3 workers, uneven and non-contiguous splits, for stories260K and
// the four hf-random architectures: the greedy ids must equal Hugging Face's golden greedy ids.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/block_layout.h"
#include "model/generate.h"
#include "tests/coordinator/test_cluster.h"

namespace swarm {
namespace {

using ::swarm::testing::GoldenIds;
using ::swarm::testing::Range;

struct Split {
  std::string name;
  std::vector<std::vector<int>> (*layers)(int num_layers);
};

std::vector<std::vector<int>> Even(int n, int workers) {
  auto layout = BlockLayout::Create(n, workers);
  std::vector<std::vector<int>> out;
  for (int b = 0; b < workers; ++b) out.push_back(layout->Layers(b));
  return out;
}

const Split kSplits[] = {
    {"one_worker", [](int n) { return Even(n, 1); }},
    {"two_even", [](int n) { return Even(n, 2); }},
    {"three_even", [](int n) { return Even(n, 3); }},
    {"uneven_1_plus_rest",
     [](int n) {
       return std::vector<std::vector<int>>{{0}, Range(1, n)};
     }},
    {"non_contiguous",
     [](int n) {
       std::vector<int> a = {0, 1};
       for (int l = 3; l < n; ++l) a.push_back(l);
       return std::vector<std::vector<int>>{a, {2}};
     }},
};

struct Model {
  std::string name;
  int num_layers;
  std::vector<std::string> sequences;
};

const Model kModels[] = {
    {"stories260K", 5, {"greedy", "prompt"}}, {"llama-gqa", 8, {"short", "long"}},
    {"qwen2", 6, {"short", "long"}},          {"mistral-swa", 6, {"short", "long"}},
    {"gpt2", 6, {"short", "long"}},
};

class ExactnessTest : public ::testing::TestWithParam<std::tuple<Model, Split>> {};

TEST_P(ExactnessTest, GreedyIdsEqualTheGoldenOnes) {
  const auto& [model, split] = GetParam();
  auto cluster = testing::StartCluster(model.name, split.layers(model.num_layers));
  ASSERT_NE(cluster.coordinator, nullptr);
  auto client = Client::Connect(cluster.coordinator->address());
  ASSERT_TRUE(client.ok());
  for (const std::string& seq : model.sequences) {
    GenerateRequest req;
    req.prompt_ids = GoldenIds(model.name, seq + ".input_ids");
    const std::vector<int64_t> want = GoldenIds(model.name, seq + ".greedy");
    req.max_new_tokens = static_cast<int64_t>(want.size());
    req.stop_at_eos = false;
    auto result = (*client)->Generate(req);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids, want) << model.name << " " << seq << " " << split.name;
    EXPECT_EQ(result->prompt_ids, req.prompt_ids);
    EXPECT_EQ(result->finish_reason, "length");
  }
  // Every session was closed on every worker.
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok());
  for (const WorkerStatus& w : status->workers) EXPECT_EQ(w.sessions, 0) << w.address;
}

INSTANTIATE_TEST_SUITE_P(AllModelsAndSplits, ExactnessTest,
                         ::testing::Combine(::testing::ValuesIn(kModels),
                                            ::testing::ValuesIn(kSplits)),
                         [](const ::testing::TestParamInfo<ExactnessTest::ParamType>& info) {
                           std::string name = absl::StrCat(std::get<0>(info.param).name, "_",
                                                           std::get<1>(info.param).name);
                           for (char& c : name) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST(ExactnessTextTest, StreamedTextEqualsTheInProcessEngine) {
  auto cluster = testing::StartCluster("stories260K", {{0, 1}, {2, 3, 4}});
  auto engine = model::Engine::Create(testing::ModelDir("stories260K"));
  ASSERT_TRUE(engine.ok());
  auto prompt = (*engine)->tokenizer()->Encode("Once upon a time", true);
  ASSERT_TRUE(prompt.ok());
  model::SamplingParams params;
  params.max_new_tokens = 80;
  auto want = (*engine)->Generate(*prompt, params);
  ASSERT_TRUE(want.ok());

  auto client = Client::Connect(cluster.coordinator->address());
  GenerateRequest req;
  req.prompt = "Once upon a time";
  req.max_new_tokens = 80;
  std::string streamed;
  int chunks = 0;
  auto got = (*client)->Generate(req, [&](const GenerateChunk& c) {
    streamed += c.text;
    ++chunks;
    return true;
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->prompt_ids, *prompt);
  EXPECT_EQ(got->ids, want->ids);
  EXPECT_EQ(got->text, want->text);
  EXPECT_EQ(streamed, want->text);
  EXPECT_EQ(got->finish_reason, want->finish_reason);
  EXPECT_GT(chunks, 1);  // Streamed, not one reply at the end.
  EXPECT_NE(got->text.find("Lily"), std::string::npos);
}

}  // namespace
}  // namespace swarm
