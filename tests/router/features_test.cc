#include "router/features.h"

#include <cmath>

#include "gtest/gtest.h"
#include "model/safetensors.h"
#include "router_test_util.h"

namespace swarm::router {
namespace {

using testing::kShared;
using testing::kStories;

TEST(Features, EmbeddingRowsMatchGoldenEmbeddingOutput) {
  // For a Llama model the embedding output (HF hidden_states[0]) is the token's table row.
  auto ckpt = model::Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto table = EmbeddingTable::Open(*ckpt);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ((*table)->vocab_size(), 512);
  EXPECT_EQ((*table)->dim(), 64);
  auto golden =
      model::SafetensorsFile::Open(kShared + "/fixtures/golden/stories260K/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto ids = (*golden)->Get("prompt.input_ids");
  auto hidden = (*golden)->Get("prompt.hidden.0");
  ASSERT_TRUE(ids.ok() && hidden.ok());
  const auto* id = reinterpret_cast<const int64_t*>(ids->data);
  const auto* h = reinterpret_cast<const float*>(hidden->data);
  for (int64_t t = 0; t < ids->NumElements(); ++t) {
    auto row = (*table)->Row(id[t]);
    ASSERT_TRUE(row.ok());
    for (int i = 0; i < 64; ++i) EXPECT_NEAR((*row)[i], h[t * 64 + i], 1e-6);
  }
}

TEST(Features, EmbeddingRowsMatchModelEnds) {
  const model::Engine& engine = testing::Stories();
  auto table = EmbeddingTable::Open(engine.checkpoint());
  ASSERT_TRUE(table.ok()) << table.status();
  std::vector<int64_t> ids = {1, 7, 300, 511, 0};
  auto rows = engine.ends().EmbeddingRows(ids);
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<float> ref = rows->ToFloats();
  for (size_t t = 0; t < ids.size(); ++t) {
    auto row = (*table)->Row(ids[t]);
    ASSERT_TRUE(row.ok());
    for (int i = 0; i < 64; ++i) EXPECT_FLOAT_EQ((*row)[i], ref[t * 64 + i]);
  }
  EXPECT_FALSE((*table)->Row(512).ok());
  EXPECT_FALSE((*table)->Row(-1).ok());
}

TEST(Features, IdfIsSmoothedInverseDocumentFrequency) {
  std::vector<float> idf = ComputeIdf({{1, 5, 5}, {1, 6}, {1}}, 8);
  EXPECT_NEAR(idf[1], std::log(4.0 / 4.0) + 1, 1e-6);  // In all three prompts.
  EXPECT_NEAR(idf[5], std::log(4.0 / 2.0) + 1, 1e-6);  // Repeats count once.
  EXPECT_NEAR(idf[7], std::log(4.0 / 1.0) + 1, 1e-6);  // Unseen.
}

TEST(Features, RawFeatureIsIdfWeightedMeanOfRows) {
  auto ckpt = model::Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  auto table = EmbeddingTable::Open(*ckpt);
  ASSERT_TRUE(table.ok());
  std::vector<float> idf(512, 1.0f);
  idf[10] = 3.0f;
  auto f = RawFeature(**table, idf, std::vector<int64_t>{1, 10});
  ASSERT_TRUE(f.ok()) << f.status();
  auto r1 = (*table)->Row(1);
  auto r10 = (*table)->Row(10);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR((*f)[i], ((*r1)[i] + 3 * (*r10)[i]) / 4, 1e-6);
  EXPECT_FALSE(RawFeature(**table, idf, std::vector<int64_t>{}).ok());
  auto bad = RawFeature(**table, idf, std::vector<int64_t>{1, 9999});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("9999"), std::string::npos);
}

TEST(Features, ProjectionCentresProjectsAndNormalises) {
  FeatureSpace space;
  space.dim = 3;
  space.rank = 2;
  space.mean = {1, 1, 1};
  space.basis = {1, 0, 0, 0, 1, 0};
  std::vector<float> f = ProjectFeature(space, std::vector<float>{4, 5, 100});
  ASSERT_EQ(f.size(), 2u);
  EXPECT_NEAR(f[0], 0.6, 1e-6);
  EXPECT_NEAR(f[1], 0.8, 1e-6);
  std::vector<float> zero = ProjectFeature(space, std::vector<float>{1, 1, 7});
  EXPECT_EQ(zero, (std::vector<float>{0, 0}));
}

}  // namespace
}  // namespace swarm::router
