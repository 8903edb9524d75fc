// `swarm synth` models: they open like any checkpoint with the configured shapes, are a pure
// function of the seed, have the requested statistics, run through the engine, and ship a
// tokenizer.json the tokenizer accepts. Also the streaming safetensors writer and bf16 rounding.
#include "tools/synth.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace swarm::tools {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class SynthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::path(::testing::TempDir()) /
             ("swarm_synth_" +
              std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
              std::to_string(::getpid())))
                .string();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  SynthOptions Tiny(const std::string& name) const {
    SynthOptions o;
    o.layers = 2;
    o.hidden = 32;
    o.intermediate = 48;
    o.heads = 4;
    o.kv_heads = 2;
    o.vocab = 300;
    o.max_position = 64;
    o.seed = 7;
    o.out_dir = root_ + "/" + name;
    return o;
  }

  std::string root_;
};

TEST_F(SynthTest, OpensWithConfiguredShapes) {
  SynthOptions o = Tiny("llama");
  auto result = WriteSynthModel(o);
  ASSERT_TRUE(result.ok()) << result.status();
  auto ckpt = model::Checkpoint::Open(o.out_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const model::ModelConfig& c = (*ckpt)->config();
  EXPECT_EQ(c.arch, model::Arch::kLlama);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 48);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_EQ(c.max_position_embeddings, 64);
  EXPECT_FALSE(c.tie_word_embeddings);

  // Exactly the Llama tensor set, each with its shape.
  std::vector<std::string> want = {"model.embed_tokens.weight", "model.norm.weight",
                                   "lm_head.weight"};
  const std::vector<std::pair<std::string, std::vector<int64_t>>> per_layer = {
      {"input_layernorm.weight", {32}},      {"post_attention_layernorm.weight", {32}},
      {"self_attn.q_proj.weight", {32, 32}}, {"self_attn.k_proj.weight", {16, 32}},
      {"self_attn.v_proj.weight", {16, 32}}, {"self_attn.o_proj.weight", {32, 32}},
      {"mlp.gate_proj.weight", {48, 32}},    {"mlp.up_proj.weight", {48, 32}},
      {"mlp.down_proj.weight", {32, 48}}};
  const model::TensorStore& store = (*ckpt)->store();
  for (int l = 0; l < 2; ++l) {
    for (const auto& [suffix, shape] : per_layer) {
      const std::string name = "model.layers." + std::to_string(l) + "." + suffix;
      want.push_back(name);
      auto v = store.Get(name);
      ASSERT_TRUE(v.ok()) << v.status();
      EXPECT_EQ(v->shape, shape) << name;
      EXPECT_EQ(v->dtype, model::StDType::kF32) << name;
    }
  }
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    auto v = store.Get(name);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(v->shape, (std::vector<int64_t>{300, 32})) << name;
  }
  std::vector<std::string> names = store.Names();
  std::sort(names.begin(), names.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);
  EXPECT_EQ(result->num_parameters,
            300 * 32 * 2 + 32 + 2 * (2 * 32 + 2 * 32 * 32 + 2 * 16 * 32 + 3 * 48 * 32));
  EXPECT_EQ(result->weight_bytes,
            static_cast<int64_t>(fs::file_size(o.out_dir + "/model.safetensors")));
  EXPECT_FALSE(fs::exists(o.out_dir + "/model.safetensors.tmp"));
}

TEST_F(SynthTest, SameSeedSameBytesOtherSeedOtherBytes) {
  SynthOptions a = Tiny("a"), b = Tiny("b"), c = Tiny("c");
  c.seed = 8;
  for (const SynthOptions* o : {&a, &b, &c}) {
    auto r = WriteSynthModel(*o);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  for (const char* file : {"model.safetensors", "config.json", "tokenizer.json"}) {
    EXPECT_EQ(ReadFile(a.out_dir + "/" + file), ReadFile(b.out_dir + "/" + file)) << file;
  }
  EXPECT_NE(ReadFile(a.out_dir + "/model.safetensors"), ReadFile(c.out_dir + "/model.safetensors"));
}

TEST_F(SynthTest, WeightStatisticsAndBf16Rounding) {
  SynthOptions o = Tiny("f32");
  o.hidden = 128;
  o.heads = 4;
  o.intermediate = 512;
  ASSERT_TRUE(WriteSynthModel(o).ok());
  SynthOptions ob = o;
  ob.out_dir = root_ + "/bf16";
  ob.dtype = DType::kBF16;
  ASSERT_TRUE(WriteSynthModel(ob).ok());
  auto f32 = model::TensorStore::Open(o.out_dir);
  ASSERT_TRUE(f32.ok()) << f32.status();
  auto bf16 = model::TensorStore::Open(ob.out_dir);
  ASSERT_TRUE(bf16.ok()) << bf16.status();

  auto stats = [](const model::TensorView& v) {
    const float* p = reinterpret_cast<const float*>(v.data);
    double sum = 0, sq = 0;
    const int64_t n = v.NumElements();
    for (int64_t i = 0; i < n; ++i) {
      sum += p[i];
      sq += static_cast<double>(p[i]) * p[i];
    }
    const double mean = sum / n;
    return std::make_pair(mean, std::sqrt(sq / n - mean * mean));
  };
  auto w = (*f32)->Get("model.layers.0.mlp.up_proj.weight");  // 65536 values
  ASSERT_TRUE(w.ok()) << w.status();
  auto [mean, sd] = stats(*w);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(sd, 0.02, 0.001);
  auto norm = (*f32)->Get("model.layers.1.input_layernorm.weight");
  ASSERT_TRUE(norm.ok()) << norm.status();
  auto [norm_mean, norm_sd] = stats(*norm);
  EXPECT_NEAR(norm_mean, 1.0, 0.01);
  EXPECT_GT(norm_sd, 0.005);  // Perturbed, so a loader that ignores norms is caught.
  EXPECT_LT(norm_sd, 0.05);

  // bf16 file = the f32 file's values rounded to nearest even.
  for (const std::string& name : (*f32)->Names()) {
    auto x = (*f32)->Get(name);
    auto y = (*bf16)->Get(name);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    ASSERT_EQ(y->dtype, model::StDType::kBF16) << name;
    ASSERT_EQ(x->shape, y->shape) << name;
    const float* xf = reinterpret_cast<const float*>(x->data);
    const uint16_t* yb = reinterpret_cast<const uint16_t*>(y->data);
    for (int64_t i = 0; i < x->NumElements(); ++i) {
      ASSERT_EQ(yb[i], FloatToBf16(xf[i])) << name << "[" << i << "]";
    }
  }
  auto config = model::LoadModelConfig(ob.out_dir);
  ASSERT_TRUE(config.ok()) << config.status();
}

TEST(SynthBf16Test, RoundsToNearestEven) {
  auto bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return FloatToBf16(f);
  };
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(bits(0x3F808000u), 0x3F80);  // Tie, even below: down.
  EXPECT_EQ(bits(0x3F818000u), 0x3F82);  // Tie, odd below: up.
  EXPECT_EQ(bits(0x3F808001u), 0x3F81);  // Above the tie: up.
  EXPECT_EQ(bits(0x3F807FFFu), 0x3F80);  // Below the tie: down.
  EXPECT_EQ(bits(0x7F800000u), 0x7F80);  // +inf stays inf.
  EXPECT_EQ(bits(0x7F7FFFFFu), 0x7F80);  // FLT_MAX rounds to inf.
  const uint16_t nan = bits(0x7F800001u);
  EXPECT_EQ(nan & 0x7F80, 0x7F80);
  EXPECT_NE(nan & 0x007F, 0);  // Still a NaN, not inf.
}

TEST(SynthNormalTest, ReproducibleAndOutOfOrder) {
  EXPECT_EQ(SynthNormal(1, 5), SynthNormal(1, 5));
  EXPECT_NE(SynthNormal(1, 5), SynthNormal(2, 5));
  EXPECT_NE(SynthNormal(1, 4), SynthNormal(1, 5));
}

TEST_F(SynthTest, EngineRunsEveryArchitecture) {
  for (const char* arch : {"llama", "mistral", "qwen2"}) {
    SCOPED_TRACE(arch);
    SynthOptions o = Tiny(arch);
    o.arch = arch;
    if (o.arch == "mistral") o.sliding_window = 4;
    if (o.arch == "qwen2") o.tie_embeddings = true;
    ASSERT_TRUE(WriteSynthModel(o).ok());
    auto engine = model::Engine::Create(o.out_dir);
    ASSERT_TRUE(engine.ok()) << engine.status();
    if (o.arch == "qwen2") {
      EXPECT_TRUE((*engine)->config().attention_bias);
      EXPECT_TRUE((*engine)->config().tie_word_embeddings);
      EXPECT_TRUE((*engine)->checkpoint()->store().Has("model.layers.1.self_attn.k_proj.bias"));
      EXPECT_FALSE((*engine)->checkpoint()->store().Has("lm_head.weight"));
    }
    if (o.arch == "mistral") {
      EXPECT_EQ((*engine)->config().sliding_window, 4);
    }
    std::vector<int64_t> ids = {1, 70, 71, 72, 5, 9};
    auto logits = (*engine)->Logits(ids);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_EQ(logits->shape, (std::vector<int64_t>{6, 300}));
    for (float v : logits->ToFloats()) ASSERT_TRUE(std::isfinite(v));
    model::SamplingParams params;
    params.max_new_tokens = 4;
    params.stop_at_eos = false;
    auto gen = (*engine)->Generate(ids, params);
    ASSERT_TRUE(gen.ok()) << gen.status();
    EXPECT_EQ(gen->ids.size(), 4u);
  }
}

TEST_F(SynthTest, TokenizerRoundTripsText) {
  SynthOptions o = Tiny("tok");
  o.vocab = 500;
  ASSERT_TRUE(WriteSynthModel(o).ok());
  auto tok = tokenizer::Tokenizer::FromFile(o.out_dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 500);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  const std::string text = "Hello world, caf\xC3\xA9!";
  auto ids = (*tok)->Encode(text, true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_FALSE(ids->empty());
  EXPECT_EQ((*ids)[0], 1);
  for (int64_t id : *ids) EXPECT_LT(id, 500);
  // "▁w" is one token (merged); "é" falls back to its two bytes.
  EXPECT_EQ((*tok)->TokenToId("\xE2\x96\x81w"), std::optional<int64_t>(354 + ('w' - 0x21)));
  EXPECT_NE(std::find(ids->begin(), ids->end(), 354 + ('w' - 0x21)), ids->end());
  EXPECT_NE(std::find(ids->begin(), ids->end(), 3 + 0xC3), ids->end());
  EXPECT_EQ((*tok)->Decode(*ids, true), text);

  // A vocabulary smaller than the byte table still gives a valid tokenizer.
  SynthOptions small = Tiny("small");
  small.vocab = 64;
  ASSERT_TRUE(WriteSynthModel(small).ok());
  auto small_tok = tokenizer::Tokenizer::FromFile(small.out_dir + "/tokenizer.json");
  ASSERT_TRUE(small_tok.ok()) << small_tok.status();
  EXPECT_EQ((*small_tok)->vocab_size(), 64);
}

TEST_F(SynthTest, StreamedWriterProducesValidFile) {
  std::vector<StreamedTensor> tensors = {{"b", model::StDType::kF32, {3}},
                                         {"a", model::StDType::kBF16, {2, 3}},
                                         {"empty", model::StDType::kF32, {0, 4}}};
  const std::string path = root_ + "/s.safetensors";
  int calls = 0;
  absl::Status s = WriteSafetensorsStreamed(path, tensors, {{"format", "pt"}},
                                            [&](size_t i, uint64_t offset, char* dst, uint64_t n) {
                                              ++calls;
                                              for (uint64_t k = 0; k < n; ++k)
                                                dst[k] = static_cast<char>(16 * i + offset + k);
                                              return absl::OkStatus();
                                            });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(calls, 2);  // The empty tensor needs no bytes.
  auto f = model::SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  auto a = (*f)->Get("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dtype, model::StDType::kBF16);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a->nbytes, 12u);
  for (int k = 0; k < 12; ++k) EXPECT_EQ(a->data[k], 16 + k);
  auto b = (*f)->Get("b");
  ASSERT_TRUE(b.ok()) << b.status();
  for (int k = 0; k < 12; ++k) EXPECT_EQ(b->data[k], k);
  // Data starts 8-byte aligned.
  uint64_t header_len = 0;
  std::memcpy(&header_len, ReadFile(path).data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);

  // An error from the callback is returned and names nothing else.
  s = WriteSafetensorsStreamed(path, tensors, {}, [](size_t, uint64_t, char*, uint64_t) {
    return absl::InternalError("boom");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
}

TEST_F(SynthTest, InvalidOptionsNameTheFlag) {
  struct Case {
    std::function<void(SynthOptions&)> edit;
    std::string flag;
  };
  std::vector<Case> cases = {
      {[](SynthOptions& o) { o.arch = "gpt3"; }, "--arch"},
      {[](SynthOptions& o) { o.layers = 0; }, "--layers"},
      {[](SynthOptions& o) { o.kv_heads = 3; }, "--kv-heads"},
      {[](SynthOptions& o) { o.hidden = 30; }, "--hidden"},
      {[](SynthOptions& o) { o.vocab = 2; }, "--vocab"},
      {[](SynthOptions& o) { o.dtype = DType::kF16; }, "--dtype"},
      {[](SynthOptions& o) { o.sliding_window = 8; }, "--sliding-window"},
      {[](SynthOptions& o) { o.head_dim = 7; }, "head dim"},
  };
  for (const Case& c : cases) {
    SynthOptions o = Tiny("bad");
    c.edit(o);
    absl::Status s = ValidateSynthOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.flag;
    EXPECT_NE(s.message().find(c.flag), std::string::npos) << s;
    EXPECT_FALSE(WriteSynthModel(o).ok());
  }
  EXPECT_FALSE(fs::exists(root_ + "/bad"));
}

}  // namespace
}  // namespace swarm::tools
