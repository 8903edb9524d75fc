#include "router/memory.h"

#include <numeric>

#include "gtest/gtest.h"
#include "model/layer_host.h"
#include "nlohmann/json.hpp"
#include "router_test_util.h"

namespace swarm::router {
namespace {

using testing::kShared;
using testing::kStories;

// q8/q4: the linear weights counted quantized (codes + f16 scales per 32 inputs), the rest f32, a
// tied head as a quantized copy — by hand for stories260K, and equal to what the loader holds.
TEST(Memory, KnowsQuantizedSizes) {
  auto ckpt = model::Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  MemoryOptions o;
  o.num_blocks = 5;
  o.quant = WeightQuant::kQ8;
  auto m = EstimateMemory(**ckpt, o);
  ASSERT_TRUE(m.ok()) << m.status();
  // [out, in] in q8: out · (in rounded up to 32 + 2 bytes per 32).
  // Norms 2·64·4; q, o [64,64]; k, v [32,64]; gate, up [172,64]; down [64,172] (6 groups).
  const int64_t q8_layer =
      2 * 64 * 4 + 2 * 64 * (64 + 4) + 2 * 32 * (64 + 4) + 2 * 172 * (64 + 4) + 64 * (192 + 12);
  EXPECT_EQ(m->layer_bytes[0], q8_layer);
  EXPECT_EQ(m->dtype, "q8");
  EXPECT_EQ(m->embedding_bytes, 512 * 64 * 4);
  EXPECT_EQ(m->head_bytes, 64 * 4 + 512 * (64 + 4));  // Final norm + the quantized tied head.
  o.quant = WeightQuant::kQ4;
  auto m4 = EstimateMemory(**ckpt, o);
  ASSERT_TRUE(m4.ok()) << m4.status();
  EXPECT_EQ(m4->layer_bytes[0], 2 * 64 * 4 + 2 * 64 * (32 + 4) + 2 * 32 * (32 + 4) +
                                    2 * 172 * (32 + 4) + 64 * (96 + 12));
  for (WeightQuant q : {WeightQuant::kQ8, WeightQuant::kQ4}) {
    model::LoadOptions load;
    load.quant = q;
    auto host = model::LayerHost::Create(*ckpt, {0, 1, 2, 3, 4}, load);
    ASSERT_TRUE(host.ok()) << host.status();
    o.quant = q;
    EXPECT_EQ((*host)->WeightBytes(), EstimateMemory(**ckpt, o)->blocks_bytes)
        << WeightQuantName(q);
  }
}

TEST(Memory, AddsUpTheCheckpointsTensors) {
  auto ckpt = model::Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  MemoryOptions o;
  o.num_blocks = 5;
  o.top_k = 3;
  o.num_workers = 2;
  auto m = EstimateMemory(**ckpt, o);
  ASSERT_TRUE(m.ok()) << m.status();
  int64_t layers = 0;
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(m->block_bytes[l], (*ckpt)->LayerBytes(l));
    layers += (*ckpt)->LayerBytes(l);
  }
  // stories260K: 5 identical layers of 2·64 (norms) + 4 attention matrices (64·64, 32·64 ×2,
  // 64·64) + 3 MLP matrices (172·64) floats.
  const int64_t per_layer = 4 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 172 * 64);
  EXPECT_EQ((*ckpt)->LayerBytes(0), per_layer);
  EXPECT_EQ(m->blocks_bytes, layers);
  EXPECT_EQ(m->embedding_bytes, (*ckpt)->EmbeddingBytes());
  EXPECT_EQ(m->head_bytes, (*ckpt)->HeadBytes());
  EXPECT_EQ(m->embedding_bytes, 512 * 64 * 4);
  EXPECT_EQ(m->total_bytes, m->embedding_bytes + m->head_bytes + layers);
  EXPECT_EQ(m->active_block_bytes, 3 * per_layer);
  EXPECT_EQ(m->active_bytes, m->embedding_bytes + m->head_bytes + 3 * per_layer);
  EXPECT_NEAR(m->block_savings_ratio, 0.4, 1e-12);
  EXPECT_NEAR(m->savings_ratio, 1.0 - static_cast<double>(m->active_bytes) / m->total_bytes, 1e-12);
  ASSERT_EQ(m->worker_bytes.size(), 2u);
  EXPECT_EQ(m->worker_blocks[0], (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(m->worker_bytes[0], 3 * per_layer);
  EXPECT_EQ(m->worker_bytes[1], 2 * per_layer);
  EXPECT_EQ(m->kv_bytes_per_token, 2 * 5 * 4 * 8 * 4);
  auto j = nlohmann::json::parse(MemoryJson(*m));
  EXPECT_EQ(j["active_bytes"].get<int64_t>(), m->active_bytes);
  EXPECT_NE(FormatMemory(*m).find("savings"), std::string::npos);
}

TEST(Memory, MatchesWhatALayerHostHoldsResident) {
  // The estimate for a block set equals the bytes a LayerHost reports after loading it.
  auto ckpt = model::Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  MemoryOptions o;
  o.num_blocks = 5;
  o.top_k = 3;
  auto m = EstimateMemory(**ckpt, o);
  ASSERT_TRUE(m.ok());
  auto host = model::LayerHost::Create(*ckpt, {0, 2, 4}, {});
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ((*host)->WeightBytes(), m->active_block_bytes);
  auto ends = model::ModelEnds::Create(*ckpt, {});
  ASSERT_TRUE(ends.ok());
  EXPECT_EQ((*ends)->WeightBytes(), m->embedding_bytes + m->head_bytes);
  // As bf16, floating tensors take half.
  o.dtype = DType::kBF16;
  auto half = EstimateMemory(**ckpt, o);
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->total_bytes * 2, m->total_bytes);
  EXPECT_EQ(half->dtype, "bf16");
}

TEST(Memory, UnevenBlocksAndLargestActiveChoice) {
  // An 8-layer model in 3 blocks: 3, 3, 2 layers. With nothing kept and k = 1 the active bytes
  // are the largest block's.
  auto ckpt = model::Checkpoint::Open(kShared + "/fixtures/hf-random/llama-gqa");
  ASSERT_TRUE(ckpt.ok());
  MemoryOptions o;
  o.num_blocks = 3;
  o.top_k = 1;
  o.keep = 0;
  auto m = EstimateMemory(**ckpt, o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->block_bytes[0], 3 * (*ckpt)->LayerBytes(0));
  EXPECT_EQ(m->block_bytes[2], 2 * (*ckpt)->LayerBytes(7));
  EXPECT_EQ(m->active_block_bytes, m->block_bytes[0]);
  EXPECT_GT(m->head_bytes, 0);  // Untied lm_head.
}

TEST(Memory, BadInputsGiveClearErrors) {
  auto ckpt = model::Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  MemoryOptions o;
  o.num_blocks = 5;
  o.top_k = 6;
  auto big = EstimateMemory(**ckpt, o);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("exceeds the number of blocks"), std::string::npos);
  o.top_k = 1;
  EXPECT_NE(EstimateMemory(**ckpt, o).status().message().find("always-kept"), std::string::npos);
  o.top_k = 3;
  o.num_blocks = 6;
  EXPECT_NE(EstimateMemory(**ckpt, o).status().message().find("number of blocks 6"),
            std::string::npos);
  o.num_blocks = 5;
  o.num_workers = 6;
  EXPECT_FALSE(EstimateMemory(**ckpt, o).ok());
}

}  // namespace
}  // namespace swarm::router
