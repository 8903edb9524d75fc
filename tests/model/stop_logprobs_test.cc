// Stop strings and logprobs in the one token loop (SequenceDecoder), on stories260K: a stop string
// that spans two tokens ends generation, and neither it nor what follows is ever emitted; text
// that only looked like the start of a stop string is released; the logprob of each greedy token
// is the log softmax of the engine's own logits (Engine::Logits) within 1e-5, with the top
// alternatives in order.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"

namespace swarm::model {
namespace {

const std::string kStories = std::string(SWARM_SHARED_DIR) + "/models/stories260K";

class StopLogprobs : public ::testing::Test {
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

  static std::vector<int64_t> Prompt() {
    auto ids = engine_->tokenizer()->Encode("Once upon a time", /*add_special_tokens=*/true);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return *ids;
  }

  // Generates, collecting the streamed pieces (one per callback).
  static GenerateResult Run(const SamplingParams& params, std::vector<GeneratedToken>* streamed) {
    auto r = engine_->Generate(Prompt(), params, [&](const GeneratedToken& t) {
      streamed->push_back(t);
      return true;
    });
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : GenerateResult{};
  }

  static Engine* engine_;
};

Engine* StopLogprobs::engine_ = nullptr;

std::string Joined(const std::vector<GeneratedToken>& streamed) {
  std::string out;
  for (const GeneratedToken& t : streamed) out += t.text;
  return out;
}

TEST_F(StopLogprobs, StopStringAcrossTokensIsNeverEmitted) {
  SamplingParams greedy;
  greedy.max_new_tokens = 40;
  greedy.stop_at_eos = false;
  std::vector<GeneratedToken> pieces;
  const GenerateResult full = Run(greedy, &pieces);
  ASSERT_EQ(full.text, Joined(pieces));
  // A stop string made of the last two bytes of one token's text and the first two of the next,
  // whose first occurrence in the text spans a token boundary.
  std::vector<size_t> boundaries;
  size_t offset = 0;
  for (const GeneratedToken& t : pieces) boundaries.push_back(offset += t.text.size());
  auto spans = [&](size_t at, size_t len) {
    for (size_t b : boundaries) {
      if (at != std::string::npos && at < b && at + len > b) return true;
    }
    return false;
  };
  std::string stop;
  size_t at = std::string::npos;
  for (size_t i = 3; i + 1 < pieces.size() && stop.empty(); ++i) {
    const std::string& a = pieces[i].text;
    const std::string& b = pieces[i + 1].text;
    if (a.size() < 2 || b.size() < 2) continue;
    const std::string s = a.substr(a.size() - 2) + b.substr(0, 2);
    if (spans(full.text.find(s), s.size())) {
      stop = s;
      at = full.text.find(s);
    }
  }
  ASSERT_FALSE(stop.empty()) << "no stop string spanning two tokens in: " << full.text;

  SamplingParams params = greedy;
  params.stop = {"never in this text \x01", stop};
  std::vector<GeneratedToken> streamed;
  const GenerateResult r = Run(params, &streamed);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, full.text.substr(0, at));
  EXPECT_EQ(Joined(streamed), r.text);
  EXPECT_EQ(r.text.find(stop), std::string::npos);
  // The ids run up to the token that completed the stop string, the greedy ones.
  ASSERT_LE(r.ids.size(), full.ids.size());
  EXPECT_EQ(r.ids, std::vector<int64_t>(full.ids.begin(), full.ids.begin() + r.ids.size()));
  size_t text_through = 0;
  for (size_t i = 0; i < r.ids.size(); ++i) text_through += pieces[i].text.size();
  EXPECT_GE(text_through, at + stop.size());
  EXPECT_LT(text_through - pieces[r.ids.size() - 1].text.size(), at + stop.size());
}

TEST_F(StopLogprobs, HeldBackTextIsReleasedWhenNoStopCompletes) {
  SamplingParams greedy;
  greedy.max_new_tokens = 20;
  greedy.stop_at_eos = false;
  std::vector<GeneratedToken> pieces;
  const GenerateResult full = Run(greedy, &pieces);
  ASSERT_FALSE(full.text.empty());
  // Stop strings that begin like the text's end (and like every space): held back, then released.
  SamplingParams params = greedy;
  params.stop = {full.text.substr(full.text.size() - 1) + "\x01", " \x02"};
  std::vector<GeneratedToken> streamed;
  const GenerateResult r = Run(params, &streamed);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.text, full.text);
  EXPECT_EQ(Joined(streamed), full.text);
  EXPECT_EQ(r.ids, full.ids);
}

TEST_F(StopLogprobs, StopStringInTheFirstTokenEmitsNothing) {
  SamplingParams greedy;
  greedy.max_new_tokens = 10;
  std::vector<GeneratedToken> pieces;
  const GenerateResult full = Run(greedy, &pieces);
  ASSERT_FALSE(full.text.empty());
  SamplingParams params = greedy;
  params.stop = {full.text.substr(0, 1)};
  std::vector<GeneratedToken> streamed;
  const GenerateResult r = Run(params, &streamed);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(Joined(streamed), "");
  EXPECT_EQ(r.ids.size(), 1u);
}

TEST_F(StopLogprobs, GreedyLogprobIsLogSoftmaxOfTheLogits) {
  SamplingParams params;
  params.max_new_tokens = 12;
  params.stop_at_eos = false;
  params.logprobs = true;
  params.top_logprobs = 5;
  std::vector<GeneratedToken> streamed;
  const GenerateResult r = Run(params, &streamed);
  std::vector<GeneratedToken> tokens;
  for (const GeneratedToken& t : streamed) {
    if (t.id >= 0) tokens.push_back(t);
  }
  ASSERT_EQ(tokens.size(), 12u);
  // Each token's text reads as in the generated text (stories' text is ASCII: no split
  // characters).
  std::string chosen_text;
  for (const GeneratedToken& t : tokens) chosen_text += t.chosen.text;
  EXPECT_EQ(chosen_text, r.text);
  std::vector<int64_t> ids = Prompt();
  const size_t prompt_len = ids.size();
  ids.insert(ids.end(), r.ids.begin(), r.ids.end() - 1);
  auto logits = engine_->Logits(ids);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = engine_->config().vocab_size;
  const float* all = reinterpret_cast<const float*>(logits->data.data());
  for (size_t k = 0; k < tokens.size(); ++k) {
    const float* row = all + (prompt_len - 1 + k) * vocab;
    double max = row[0];
    for (int64_t v = 1; v < vocab; ++v) max = std::max<double>(max, row[v]);
    double z = 0;
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(row[v] - max);
    const double log_z = max + std::log(z);
    const GeneratedToken& t = tokens[k];
    ASSERT_TRUE(t.has_logprob);
    EXPECT_EQ(t.chosen.id, t.id);
    EXPECT_NEAR(t.chosen.logprob, row[t.id] - log_z, 1e-5) << "token " << k;
    ASSERT_EQ(t.top_logprobs.size(), 5u);
    EXPECT_EQ(t.top_logprobs[0].id, t.id) << "greedy picks the most likely token";
    for (size_t j = 0; j < t.top_logprobs.size(); ++j) {
      EXPECT_NEAR(t.top_logprobs[j].logprob, row[t.top_logprobs[j].id] - log_z, 1e-5);
      if (j > 0) {
        EXPECT_GE(t.top_logprobs[j - 1].logprob, t.top_logprobs[j].logprob);
      }
    }
    // Nothing outside the top 5 is more likely than the fifth.
    for (int64_t v = 0; v < vocab; ++v) {
      bool in_top = false;
      for (const TokenLogprob& a : t.top_logprobs) in_top = in_top || a.id == v;
      if (!in_top) {
        EXPECT_LE(row[v] - log_z, t.top_logprobs.back().logprob + 1e-6);
      }
    }
  }
}

TEST_F(StopLogprobs, NoLogprobsUnlessAsked) {
  SamplingParams params;
  params.max_new_tokens = 3;
  std::vector<GeneratedToken> streamed;
  Run(params, &streamed);
  for (const GeneratedToken& t : streamed) {
    EXPECT_FALSE(t.has_logprob);
    EXPECT_TRUE(t.top_logprobs.empty());
  }
}

TEST(SamplingParamsValidate, StopAndLogprobLimits) {
  SamplingParams p;
  p.stop = {""};
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.stop = std::vector<std::string>(SamplingParams::kMaxStopStrings + 1, "x");
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.stop = {std::string(SamplingParams::kMaxStopBytes + 1, 'x')};
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.stop = {std::string(SamplingParams::kMaxStopBytes, 'x')};
  EXPECT_TRUE(p.Validate().ok());
  p.top_logprobs = 2;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument) << "needs logprobs";
  p.logprobs = true;
  EXPECT_TRUE(p.Validate().ok());
  p.top_logprobs = SamplingParams::kMaxTopLogprobs + 1;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  p.top_logprobs = -1;
  EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace swarm::model
