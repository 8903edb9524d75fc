// Tensor naming through the architecture families: Checkpoint::Resolve, the layer, embedding and
// head tensor lists for the Llama family and for GPT-2 with and without the "transformer." prefix
// (and its attention mask buffers, which are not weights). A GPT-2 checkpoint renamed without the
// prefix gives the same logits, to the bit.
#include "model/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/safetensors.h"

namespace swarm::model {
namespace {

namespace fs = std::filesystem;

const std::string kShared = SWARM_SHARED_DIR;
const std::string kGpt2 = kShared + "/fixtures/hf-random/gpt2";
const std::string kLlama = kShared + "/fixtures/hf-random/llama-gqa";

TEST(CheckpointNaming, LlamaFamily) {
  auto ckpt = Checkpoint::Open(kLlama);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  EXPECT_EQ(c.Resolve("model.layers.1.mlp.up_proj.weight").value_or(""),
            "model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(c.Resolve("h.0.ln_1.weight").status().code(), absl::StatusCode::kNotFound);
  const std::vector<std::string> layer0 = c.LayerTensorNames(0);
  ASSERT_FALSE(layer0.empty());
  for (const std::string& n : layer0) EXPECT_TRUE(absl::StartsWith(n, "model.layers.0.")) << n;
  EXPECT_EQ(c.EmbeddingTensorNames(), std::vector<std::string>{"model.embed_tokens.weight"});
  const std::vector<std::string> head = c.HeadTensorNames();
  ASSERT_FALSE(head.empty());
  EXPECT_EQ(head[0], "model.norm.weight");
  EXPECT_EQ(c.architecture().TokenEmbeddingNames()[0], "model.embed_tokens.weight");
}

TEST(CheckpointNaming, Gpt2WithTransformerPrefix) {
  auto ckpt = Checkpoint::Open(kGpt2);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  ASSERT_TRUE(c.store().Has("transformer.wte.weight"));
  EXPECT_EQ(c.Resolve("h.0.attn.c_attn.weight").value_or(""), "transformer.h.0.attn.c_attn.weight");
  EXPECT_EQ(c.EmbeddingTensorNames(),
            (std::vector<std::string>{"transformer.wte.weight", "transformer.wpe.weight"}));
  const std::vector<std::string> head = c.HeadTensorNames();
  ASSERT_GE(head.size(), 2u);
  EXPECT_EQ(head[0], "transformer.ln_f.weight");
  EXPECT_EQ(head[1], "transformer.ln_f.bias");
  for (const std::string& n : c.LayerTensorNames(1)) {
    EXPECT_TRUE(absl::StartsWith(n, "transformer.h.1.")) << n;
  }
}

// The fixture's tensors renamed without "transformer.", plus layer 0's mask buffers.
class Gpt2WithoutPrefix : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/swarm_naming_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::copy_file(kGpt2 + "/config.json", dir_ + "/config.json");
    auto src = SafetensorsFile::Open(kGpt2 + "/model.safetensors");
    ASSERT_TRUE(src.ok()) << src.status();
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : (*src)->Names()) {
      TensorView v = *(*src)->Get(name);
      std::string bare = absl::StartsWith(name, "transformer.") ? name.substr(12) : name;
      tensors.push_back(
          {bare, v.dtype, v.shape, std::string(reinterpret_cast<const char*>(v.data), v.nbytes)});
    }
    tensors.push_back({"h.0.attn.bias", StDType::kF32, {1}, std::string(4, '\0')});
    tensors.push_back({"h.0.attn.masked_bias", StDType::kF32, {1}, std::string(4, '\0')});
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", tensors).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string dir_;
};

TEST_F(Gpt2WithoutPrefix, NamesResolveAndBuffersAreNotWeights) {
  auto ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const Checkpoint& c = **ckpt;
  EXPECT_EQ(c.Resolve("h.0.attn.c_attn.weight").value_or(""), "h.0.attn.c_attn.weight");
  EXPECT_EQ(c.EmbeddingTensorNames(), (std::vector<std::string>{"wte.weight", "wpe.weight"}));
  const std::vector<std::string> layer0 = c.LayerTensorNames(0);
  ASSERT_FALSE(layer0.empty());
  for (const std::string& n : layer0) {
    EXPECT_TRUE(absl::StartsWith(n, "h.0.")) << n;
    EXPECT_NE(n, "h.0.attn.bias");
    EXPECT_NE(n, "h.0.attn.masked_bias");
  }
  // c_attn's bias is a weight, though its name ends in "attn.bias" too.
  EXPECT_NE(std::find(layer0.begin(), layer0.end(), "h.0.attn.c_attn.bias"), layer0.end());
  auto prefixed = Checkpoint::Open(kGpt2);
  ASSERT_TRUE(prefixed.ok());
  EXPECT_EQ(c.LayerBytes(0), (*prefixed)->LayerBytes(0));
  EXPECT_EQ(c.EmbeddingBytes(), (*prefixed)->EmbeddingBytes());
  EXPECT_EQ(c.HeadBytes(), (*prefixed)->HeadBytes());
}

TEST_F(Gpt2WithoutPrefix, SameLogitsAsThePrefixedCheckpoint) {
  auto bare = Engine::Create(dir_);
  auto prefixed = Engine::Create(kGpt2);
  ASSERT_TRUE(bare.ok()) << bare.status();
  ASSERT_TRUE(prefixed.ok()) << prefixed.status();
  const std::vector<int64_t> ids = {1, 7, 42, 3, 99};
  auto a = (*bare)->Logits(ids);
  auto b = (*prefixed)->Logits(ids);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(a->data, b->data);
}

}  // namespace
}  // namespace swarm::model
