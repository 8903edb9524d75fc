// llama2.c conversion against the Hugging Face conversion of the same model in ../shared:
// stories260K.bin / tok512.bin converted here must give the tensors of
// models/stories260K/model.safetensors, the tokenizer.json made from the same tok512.bin, and the
// golden logits; versions 1 and 2 of the format (built here from the legacy file's bytes) too.
// Broken inputs must fail with an error naming the file.
#include "tools/llama2c.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace swarm::tools {
namespace {

namespace fs = std::filesystem;

const std::string kShared = SWARM_SHARED_DIR;
const std::string kRefDir = kShared + "/models/stories260K";
const std::string kCheckpoint = kRefDir + "/original/stories260K.bin";
const std::string kTokenizerBin = kRefDir + "/original/tok512.bin";
const std::string kGoldenDir = kShared + "/fixtures/golden/stories260K";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), data.size());
}

std::string MakeTempDir(const std::string& tag) {
  fs::path dir =
      fs::path(::testing::TempDir()) / ("swarm_llama2c_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<float> Floats(const model::TensorView& v) {
  const auto* p = reinterpret_cast<const float*>(v.data);
  return std::vector<float>(p, p + v.NumElements());
}

// Compares every tensor of `dir`/model.safetensors with the reference conversion; the largest
// absolute difference must stay within `tol`.
void ExpectTensorsMatchReference(const std::string& dir, double tol) {
  auto ours = model::SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(ours.ok()) << ours.status();
  auto ref = model::SafetensorsFile::Open(kRefDir + "/model.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<std::string> our_names = (*ours)->Names(), ref_names = (*ref)->Names();
  std::sort(our_names.begin(), our_names.end());
  std::sort(ref_names.begin(), ref_names.end());
  EXPECT_EQ(our_names, ref_names);
  for (const std::string& name : ref_names) {
    SCOPED_TRACE(name);
    auto a = (*ours)->Get(name);
    auto b = (*ref)->Get(name);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(a->dtype, model::StDType::kF32);
    EXPECT_EQ(a->shape, b->shape);
    std::vector<float> x = Floats(*a), y = Floats(*b);
    ASSERT_EQ(x.size(), y.size());
    double max_diff = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      max_diff = std::max(max_diff, std::abs(static_cast<double>(x[i]) - y[i]));
    }
    EXPECT_LE(max_diff, tol);
  }
}

class Llama2cConvertTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("v0"));
    ConvertLlama2cOptions options;
    options.checkpoint_path = kCheckpoint;
    options.tokenizer_path = kTokenizerBin;
    options.out_dir = *dir_;
    auto result = ConvertLlama2c(options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->header.version, 0);
    EXPECT_TRUE(result->header.shared_classifier);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    dir_ = nullptr;
  }
  static std::string* dir_;
};
std::string* Llama2cConvertTest::dir_ = nullptr;

TEST_F(Llama2cConvertTest, TensorsMatchHuggingFaceConversion) {
  ExpectTensorsMatchReference(*dir_, 1e-6);
}

TEST_F(Llama2cConvertTest, ConfigMatchesReference) {
  auto ours = model::LoadModelConfig(*dir_);
  ASSERT_TRUE(ours.ok()) << ours.status();
  auto ref = model::LoadModelConfig(kRefDir);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ours->architecture, "LlamaForCausalLM");
  EXPECT_EQ(ours->arch, model::Arch::kLlama);
  EXPECT_EQ(ours->vocab_size, ref->vocab_size);
  EXPECT_EQ(ours->hidden_size, ref->hidden_size);
  EXPECT_EQ(ours->intermediate_size, ref->intermediate_size);
  EXPECT_EQ(ours->num_layers, ref->num_layers);
  EXPECT_EQ(ours->num_heads, ref->num_heads);
  EXPECT_EQ(ours->num_kv_heads, ref->num_kv_heads);
  EXPECT_EQ(ours->head_dim, ref->head_dim);
  EXPECT_EQ(ours->max_position_embeddings, ref->max_position_embeddings);
  EXPECT_DOUBLE_EQ(ours->norm_eps, ref->norm_eps);
  EXPECT_DOUBLE_EQ(ours->rope_theta, ref->rope_theta);
  EXPECT_EQ(ours->tie_word_embeddings, ref->tie_word_embeddings);
  EXPECT_EQ(ours->bos_token_ids, ref->bos_token_ids);
  EXPECT_EQ(ours->eos_token_ids, ref->eos_token_ids);
  EXPECT_EQ(ours->Fingerprint(), ref->Fingerprint());
}

TEST_F(Llama2cConvertTest, TokenizerJsonEqualsReference) {
  nlohmann::json ours, ref;
  try {
    ours = nlohmann::json::parse(ReadFile(*dir_ + "/tokenizer.json"));
    ref = nlohmann::json::parse(ReadFile(kRefDir + "/tokenizer.json"));
  } catch (const nlohmann::json::exception& e) {
    FAIL() << e.what();
  }
  EXPECT_EQ(ours["model"]["vocab"], ref["model"]["vocab"]);
  ASSERT_EQ(ours["model"]["merges"].size(), ref["model"]["merges"].size());
  EXPECT_EQ(ours["model"]["merges"], ref["model"]["merges"]);
  // Normaliser, decoder, post-processor, added tokens: the whole document.
  EXPECT_EQ(ours, ref);
}

TEST_F(Llama2cConvertTest, TokenizerEncodesLikeReference) {
  auto tok = tokenizer::Tokenizer::FromFile(*dir_ + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  nlohmann::json golden = nlohmann::json::parse(ReadFile(kGoldenDir + "/tokenizer_golden.json"));
  ASSERT_GT(golden["texts"].size(), 0u);
  for (const auto& item : golden["texts"]) {
    const std::string text = item["text"].get<std::string>();
    SCOPED_TRACE(text);
    auto ids = (*tok)->Encode(text, true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, item["ids"].get<std::vector<int64_t>>());
    EXPECT_EQ((*tok)->Decode(*ids, true), item["decoded"].get<std::string>());
  }
}

TEST_F(Llama2cConvertTest, LogitsMatchGolden) {
  auto golden = model::SafetensorsFile::Open(kGoldenDir + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  auto ids_view = (*golden)->Get("greedy.input_ids");
  ASSERT_TRUE(ids_view.ok()) << ids_view.status();
  ASSERT_EQ(ids_view->dtype, model::StDType::kI64);
  const auto* p = reinterpret_cast<const int64_t*>(ids_view->data);
  std::vector<int64_t> ids(p, p + ids_view->NumElements());
  auto want = (*golden)->Get("greedy.logits");
  ASSERT_TRUE(want.ok()) << want.status();

  auto engine = model::Engine::Create(*dir_);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto logits = (*engine)->Logits(ids);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->shape, want->shape);
  auto max_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    if (a.size() != b.size()) return 1e9;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double{a[i]} - b[i]));
    return m;
  };
  // Against Hugging Face's logits: the fp32 agreement the README promises (the engine's own
  // rounding differs from PyTorch's by ~2e-5 on this model).
  EXPECT_LE(max_diff(logits->ToFloats(), Floats(*want)), 1e-4);
  // Against the engine on the reference conversion: the converted weights are the same, so the
  // logits must be too.
  auto ref_engine = model::Engine::Create(kRefDir);
  ASSERT_TRUE(ref_engine.ok()) << ref_engine.status();
  auto ref_logits = (*ref_engine)->Logits(ids);
  ASSERT_TRUE(ref_logits.ok()) << ref_logits.status();
  EXPECT_LE(max_diff(logits->ToFloats(), ref_logits->ToFloats()), 1e-6);
  // And greedy decoding continues the sequence as Hugging Face does.
  auto want_greedy = (*golden)->Get("greedy.greedy");
  ASSERT_TRUE(want_greedy.ok()) << want_greedy.status();
  const auto* g = reinterpret_cast<const int64_t*>(want_greedy->data);
  model::SamplingParams params;
  params.max_new_tokens = want_greedy->NumElements();
  params.stop_at_eos = false;
  auto gen = (*engine)->Generate(ids, params);
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_EQ(gen->ids, std::vector<int64_t>(g, g + want_greedy->NumElements()));
}

TEST(Llama2cTest, RotaryPermutationMatchesHuggingFacePermute) {
  // Two heads of head_dim 4, one column: rows hold their own index. HF's
  // w.view(heads, hd/2, 2, cols).transpose(1, 2) puts the even rows of each head first.
  std::vector<float> w = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(InterleavedToHalfRotary(w, 2, 4, 1), (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  // Whole rows move together.
  std::vector<float> m = {0, 1, 10, 11, 20, 21, 30, 31};  // [4, 2]
  EXPECT_EQ(InterleavedToHalfRotary(m, 1, 4, 2),
            (std::vector<float>{0, 1, 20, 21, 10, 11, 30, 31}));
}

TEST(Llama2cTest, MergesFollowScoreOrderWithAllSplits) {
  // "abc" (score -1) splits as a+bc and ab+c; "ab" (-0.5) ranks first; "bc" (-2) last.
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc"};
  std::vector<float> scores = {0, 0, 0, 0, 0, 0, -0.5f, -2, -1};
  auto merges = MergesFromScores(tokens, scores);
  std::vector<std::pair<std::string, std::string>> want = {
      {"a", "b"}, {"a", "bc"}, {"ab", "c"}, {"b", "c"}};
  EXPECT_EQ(merges, want);
}

// Builds a version-1 or version-2 file from the legacy file's bytes (same weights, other
// layout), so the conversion can be checked against the same Hugging Face reference.
class Llama2cVersionedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    legacy_ = ReadFile(kCheckpoint);
    ASSERT_EQ(legacy_.size(), 1056540u);
    std::memcpy(params_, legacy_.data(), sizeof(params_));
    const int64_t dim = params_[0], hidden = params_[1], layers = params_[2], heads = params_[3],
                  kv = params_[4], vocab = params_[5], seq = params_[6];
    const int64_t kv_dim = dim / heads * kv;
    size_t off = 28;
    auto take = [&](int64_t floats) {
      std::string s = legacy_.substr(off, floats * 4);
      off += floats * 4;
      return s;
    };
    embed_ = take(vocab * dim);
    rms_att_ = take(layers * dim);
    wq_ = take(layers * dim * dim);
    wk_ = take(layers * kv_dim * dim);
    wv_ = take(layers * kv_dim * dim);
    wo_ = take(layers * dim * dim);
    rms_ffn_ = take(layers * dim);
    w1_ = take(layers * hidden * dim);
    w2_ = take(layers * dim * hidden);
    w3_ = take(layers * hidden * dim);
    rms_final_ = take(dim);
    take(seq * dim / heads);  // freq_cis real + imag
    ASSERT_EQ(off, legacy_.size());
    dir_ = MakeTempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Header(int version, int32_t group_size) const {
    std::string h(256, '\0');
    const uint32_t magic = 0x616b3432;
    std::memcpy(&h[0], &magic, 4);
    std::memcpy(&h[4], &version, 4);
    std::memcpy(&h[8], params_, sizeof(params_));
    h[36] = 1;  // shared classifier
    if (version == 2) std::memcpy(&h[37], &group_size, 4);
    return h;
  }

  // Per-layer matrices of a stacked [layers, ...] blob.
  std::vector<std::string> Split(const std::string& stacked) const {
    std::vector<std::string> out;
    const size_t each = stacked.size() / params_[2];
    for (int l = 0; l < params_[2]; ++l) out.push_back(stacked.substr(l * each, each));
    return out;
  }

  std::string Convert(const std::string& bin) {
    const std::string path = dir_ + "/model.bin";
    WriteFile(path, bin);
    ConvertLlama2cOptions options;
    options.checkpoint_path = path;
    options.out_dir = dir_ + "/hf";
    auto result = ConvertLlama2c(options);
    EXPECT_TRUE(result.ok()) << result.status();
    return options.out_dir;
  }

  std::string legacy_;
  int32_t params_[7];
  std::string embed_, rms_att_, wq_, wk_, wv_, wo_, rms_ffn_, w1_, w2_, w3_, rms_final_;
  std::string dir_;
};

TEST_F(Llama2cVersionedTest, Version1MatchesReference) {
  std::string bin = Header(1, 0) + rms_att_ + rms_ffn_ + rms_final_ + embed_ + wq_ + wk_ + wv_ +
                    wo_ + w1_ + w2_ + w3_;
  ExpectTensorsMatchReference(Convert(bin), 1e-6);
}

TEST_F(Llama2cVersionedTest, Version2DequantisesWithinQuantisationError) {
  const int32_t group = 64;
  std::string quants, scales;
  float max_scale = 0;
  auto quantise = [&](const std::string& blob) {
    const float* w = reinterpret_cast<const float*>(blob.data());
    const size_t n = blob.size() / 4;
    for (size_t g = 0; g < n / group; ++g) {
      float wmax = 0;
      for (int i = 0; i < group; ++i) wmax = std::max(wmax, std::abs(w[g * group + i]));
      const float scale = wmax / 127.0f;
      max_scale = std::max(max_scale, scale);
      for (int i = 0; i < group; ++i) {
        quants.push_back(static_cast<char>(
            static_cast<int8_t>(scale > 0 ? std::nearbyint(w[g * group + i] / scale) : 0)));
      }
      scales.append(reinterpret_cast<const char*>(&scale), 4);
    }
  };
  quantise(embed_);
  for (const std::string* stacked : {&wq_, &wk_, &wv_, &wo_, &w1_, &w2_, &w3_}) {
    for (const std::string& m : Split(*stacked)) quantise(m);
  }
  std::string bin = Header(2, group) + rms_att_ + rms_ffn_ + rms_final_ + quants + scales;
  // Rounding to the nearest step loses at most half a step.
  ExpectTensorsMatchReference(Convert(bin), max_scale / 2 + 1e-6);
}

TEST_F(Llama2cVersionedTest, TruncatedCheckpointNamesFile) {
  const std::string path = dir_ + "/truncated.bin";
  WriteFile(path, legacy_.substr(0, legacy_.size() - 100));
  auto model = ReadLlama2cCheckpoint(path);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find(path), std::string::npos) << model.status();
  EXPECT_NE(model.status().message().find("truncated"), std::string::npos) << model.status();
  EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss);

  WriteFile(path, legacy_ + "junk");  // Trailing bytes: not what the header describes.
  model = ReadLlama2cCheckpoint(path);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(model.status().message().find("trailing"), std::string::npos) << model.status();

  WriteFile(path, legacy_.substr(0, 10));  // Not even a header.
  model = ReadLlama2cCheckpoint(path);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find(path), std::string::npos) << model.status();
}

TEST_F(Llama2cVersionedTest, BadHeaderValuesAreRejected) {
  const std::string path = dir_ + "/bad.bin";
  for (auto [index, value] :
       std::vector<std::pair<int, int32_t>>{{0, 0}, {3, 7}, {4, 3}, {2, -1}, {6, 0}}) {
    SCOPED_TRACE(index);
    std::string bin = legacy_;
    std::memcpy(&bin[index * 4], &value, 4);
    WriteFile(path, bin);
    auto model = ReadLlama2cCheckpoint(path);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
    EXPECT_NE(model.status().message().find(path), std::string::npos) << model.status();
  }
  // Unknown version behind the magic.
  std::string bin = Header(3, 0) + rms_att_;
  WriteFile(path, bin);
  auto model = ReadLlama2cCheckpoint(path);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("version 3"), std::string::npos) << model.status();
}

TEST_F(Llama2cVersionedTest, MissingFilesAndMismatchedTokenizer) {
  ConvertLlama2cOptions options;
  options.checkpoint_path = dir_ + "/nope.bin";
  options.out_dir = dir_ + "/out";
  auto result = ConvertLlama2c(options);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(result.status().message().find("nope.bin"), std::string::npos);

  options.checkpoint_path = kCheckpoint;
  options.tokenizer_path = dir_ + "/nope_tok.bin";
  result = ConvertLlama2c(options);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("nope_tok.bin"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ + "/out/model.safetensors"));  // Nothing half-written.

  // A tokenizer for another vocabulary size: bytes left over (or too few).
  auto vocab = ReadLlama2cTokenizer(kTokenizerBin, 500);
  ASSERT_FALSE(vocab.ok());
  EXPECT_NE(vocab.status().message().find(kTokenizerBin), std::string::npos);
  vocab = ReadLlama2cTokenizer(kTokenizerBin, 600);
  ASSERT_FALSE(vocab.ok());
  EXPECT_NE(vocab.status().message().find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace swarm::tools
