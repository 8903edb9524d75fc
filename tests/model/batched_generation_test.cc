// Many requests at once through the in-process engine (RunBatchedGeneration): each request's ids
// are the ids it gets alone, whatever it is batched with, however its prompt is chunked and
// whoever is cancelled beside it. ComposeStep's budget rules.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"

namespace swarm::model {
namespace {

const std::string kStories = std::string(SWARM_SHARED_DIR) + "/models/stories260K";

class BatchedGeneration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto e = Engine::Create(kStories);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }

  // 16 requests with different prompts, lengths, sampling parameters and seeds.
  static std::vector<BatchedRequest> Requests() {
    const std::vector<std::string> texts = {"Once upon a time",
                                            "Lily liked",
                                            "The dog ran to the",
                                            "One day, a little",
                                            "Tom and Sue",
                                            "The sun was",
                                            "She saw a big",
                                            "He wanted to",
                                            "Mom said",
                                            "In the park, there",
                                            "The cat",
                                            "A bird flew",
                                            "They played with a",
                                            "It was a sunny day",
                                            "Ben had a red",
                                            "The little girl"};
    std::vector<BatchedRequest> out;
    for (size_t i = 0; i < texts.size(); ++i) {
      auto ids = engine_->tokenizer()->Encode(texts[i], /*add_special_tokens=*/true);
      EXPECT_TRUE(ids.ok()) << ids.status();
      BatchedRequest r;
      r.prompt_ids = *ids;
      r.params.max_new_tokens = 8 + static_cast<int64_t>(i) * 3;
      if (i % 3 == 1) {
        r.params.temperature = 0.8f;
        r.params.top_k = 20;
        r.params.seed = 1000 + i;
      } else if (i % 3 == 2) {
        r.params.temperature = 1.0f;
        r.params.top_p = 0.9f;
        r.params.seed = 7 * i;
      }
      out.push_back(std::move(r));
    }
    return out;
  }

  // What each request gives on its own.
  static std::vector<GenerateResult> Alone(const std::vector<BatchedRequest>& requests) {
    std::vector<GenerateResult> out;
    for (const BatchedRequest& r : requests) {
      auto g = engine_->Generate(r.prompt_ids, r.params);
      EXPECT_TRUE(g.ok()) << g.status();
      out.push_back(*g);
    }
    return out;
  }

  static Engine* engine_;
};

Engine* BatchedGeneration::engine_ = nullptr;

TEST_F(BatchedGeneration, EachRequestGetsWhatItGetsAlone) {
  const std::vector<BatchedRequest> requests = Requests();
  const std::vector<GenerateResult> alone = Alone(requests);
  for (const BatchLimits limits : {BatchLimits{512, 64}, BatchLimits{5, 64}, BatchLimits{64, 3}}) {
    SCOPED_TRACE(testing::Message() << "max_batch_tokens " << limits.max_batch_tokens
                                    << ", max_batch_sequences " << limits.max_batch_sequences);
    std::vector<std::string> streamed(requests.size());
    std::vector<BatchedRequest> batch = requests;
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i].on_token = [&streamed, i](const GeneratedToken& t) {
        streamed[i] += t.text;
        return true;
      };
    }
    auto results = engine_->GenerateBatch(batch, limits);
    ASSERT_EQ(results.size(), requests.size());
    for (size_t i = 0; i < results.size(); ++i) {
      ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status();
      EXPECT_EQ(results[i]->ids, alone[i].ids) << "request " << i;
      EXPECT_EQ(results[i]->text, alone[i].text) << "request " << i;
      EXPECT_EQ(results[i]->finish_reason, alone[i].finish_reason) << "request " << i;
      EXPECT_EQ(streamed[i], alone[i].text) << "request " << i;
    }
  }
}

TEST_F(BatchedGeneration, CancellingHalfLeavesTheOthersUnchanged) {
  std::vector<BatchedRequest> batch = Requests();
  const std::vector<GenerateResult> alone = Alone(batch);
  for (size_t i = 0; i < batch.size(); i += 2) {
    auto seen = std::make_shared<int>(0);
    batch[i].on_token = [seen](const GeneratedToken&) { return ++*seen < 3; };
  }
  auto results = engine_->GenerateBatch(batch);
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    if (i % 2 == 0) {
      EXPECT_EQ(results[i]->finish_reason, "cancelled") << i;
      ASSERT_EQ(results[i]->ids.size(), 3u) << i;
      EXPECT_TRUE(std::equal(results[i]->ids.begin(), results[i]->ids.end(), alone[i].ids.begin()));
    } else {
      EXPECT_EQ(results[i]->ids, alone[i].ids) << i;
    }
  }
}

TEST_F(BatchedGeneration, ABadRequestFailsAlone) {
  std::vector<BatchedRequest> batch = Requests();
  batch.resize(4);
  const std::vector<GenerateResult> alone = Alone(batch);
  batch[1].prompt_ids.clear();
  batch[2].params.top_p = 0.0f;
  auto results = engine_->GenerateBatch(batch);
  EXPECT_EQ(results[1].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(results[2].status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(results[0].ok() && results[3].ok());
  EXPECT_EQ(results[0]->ids, alone[0].ids);
  EXPECT_EQ(results[3]->ids, alone[3].ids);
}

TEST_F(BatchedGeneration, ComposeStepPutsDecodeFirstAndKeepsTheBudget) {
  const ModelConfig& c = engine_->config();
  SamplingParams p;
  std::vector<std::unique_ptr<SequenceDecoder>> d;
  for (int len : {10, 1, 7}) {
    auto s = SequenceDecoder::Create(c, nullptr, std::vector<int64_t>(len, 1), p);
    ASSERT_TRUE(s.ok());
    d.push_back(*std::move(s));
  }
  // Sequence 1 has fed its one-token prompt and sampled: it decodes now.
  ASSERT_TRUE(d[1]->Fed(1));
  std::vector<float> logits(c.vocab_size, 0.0f);
  d[1]->Accept(logits);
  std::vector<SequenceDecoder*> active = {d[0].get(), d[1].get(), d[2].get()};
  using Rows = std::vector<std::pair<int, int64_t>>;
  EXPECT_EQ(ComposeStep(active, {12, 64}), (Rows{{1, 1}, {0, 10}, {2, 1}}));
  EXPECT_EQ(ComposeStep(active, {4, 64}), (Rows{{1, 1}, {0, 3}}));
  EXPECT_EQ(ComposeStep(active, {100, 2}), (Rows{{1, 1}, {0, 10}}));
  EXPECT_EQ(ComposeStep(active, {100, 64}), (Rows{{1, 1}, {0, 10}, {2, 7}}));
}

}  // namespace
}  // namespace swarm::model
