// `swarm quantize` (tools/quantize.h): a written q8/q4 checkpoint loads on its own (the source
// directory removed) to the same logits as quantizing at load, bit for bit, for each family's
// fixture (GPT-2's transposed Conv1D weights and tied head, Qwen2's biases, Llama's GQA and
// untied head); broken quantized checkpoints fail with errors naming the tensor.
#include "tools/quantize.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "tests/util/files.h"

namespace swarm::tools {
namespace {

namespace fs = std::filesystem;

const std::string kShared = SWARM_SHARED_DIR;
const std::vector<int64_t> kIds = {
    1,  20, 33, 7,  101, 250, 3, 18,  400, 77,
    12, 9,  2,  45, 300, 60,  5, 211, 90,  31};  // 20 rows: the gemm path and the rows.

// A copy of a model directory's files (not subdirectories).
std::string CopyModel(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const fs::directory_entry& e : fs::directory_iterator(from)) {
    if (e.is_regular_file()) {
      fs::copy_file(e.path(), to + "/" + e.path().filename().string(),
                    fs::copy_options::overwrite_existing);
    }
  }
  return to;
}

// Logits of kIds (the first row through the row kernel too: the last one alone).
std::vector<float> Logits(const std::string& dir, WeightQuant quant) {
  model::LoadOptions o;
  o.quant = quant;
  auto engine = model::Engine::Create(dir, o);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  auto logits = (*engine)->Logits(kIds);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? logits->ToFloats() : std::vector<float>{};
}

struct Case {
  std::string name, dir;
  WeightQuant format;
};

class QuantizeModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizeModelTest, WrittenCheckpointLoadsAloneToTheSameLogitsAsQuantizeAtLoad) {
  const Case& c = GetParam();
  const std::string tmp = test_util::MakeTempDir("quantize", c.name);
  const std::string src = CopyModel(c.dir, tmp + "/src");
  const std::vector<float> at_load = Logits(src, c.format);
  QuantizeOptions options;
  options.model_dir = src;
  options.out_dir = tmp + "/q";
  options.format = c.format;
  auto result = QuantizeModel(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(result->bytes_out, result->bytes_in);
  EXPECT_TRUE(fs::exists(options.out_dir + "/tokenizer.json") ||
              !fs::exists(c.dir + "/tokenizer.json"));
  fs::remove_all(src);  // The quantized directory must not need the original.
  const std::vector<float> loaded = Logits(options.out_dir, WeightQuant::kNone);
  ASSERT_EQ(loaded.size(), at_load.size());
  ASSERT_FALSE(loaded.empty());
  EXPECT_EQ(std::memcmp(loaded.data(), at_load.data(), sizeof(float) * loaded.size()), 0);
  // The same again when the format is asked for explicitly; another format is refused.
  EXPECT_EQ(Logits(options.out_dir, c.format), at_load);
  model::LoadOptions other;
  other.quant = c.format == WeightQuant::kQ8 ? WeightQuant::kQ4 : WeightQuant::kQ8;
  auto refused = model::Engine::Create(options.out_dir, other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("cannot load as"), std::string::npos);
  fs::remove_all(tmp);
}

INSTANTIATE_TEST_SUITE_P(
    Models, QuantizeModelTest,
    ::testing::Values(Case{"stories260K", kShared + "/models/stories260K", WeightQuant::kQ8},
                      Case{"stories260K_q4", kShared + "/models/stories260K", WeightQuant::kQ4},
                      Case{"gpt2", kShared + "/fixtures/hf-random/gpt2", WeightQuant::kQ8},
                      Case{"qwen2", kShared + "/fixtures/hf-random/qwen2", WeightQuant::kQ8},
                      Case{"llama_gqa", kShared + "/fixtures/hf-random/llama-gqa",
                           WeightQuant::kQ8}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// A q8 stories260K written once per test, then broken one way.
class BrokenQuantizedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = test_util::MakeTempDir("quantize_broken",
                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    QuantizeOptions options;
    options.model_dir = kShared + "/models/stories260K";
    options.out_dir = tmp_ + "/q8";
    auto result = QuantizeModel(options);
    ASSERT_TRUE(result.ok()) << result.status();
    dir_ = options.out_dir;
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // Rewrites layer 0's shard through `edit` (and the index to match).
  void EditLayer0(const std::function<void(std::vector<model::TensorToWrite>&)>& edit) {
    const std::string shard = dir_ + "/model-00001-of-00006.safetensors";
    std::vector<model::TensorToWrite> tensors;
    {
      auto f = model::SafetensorsFile::Open(shard);
      ASSERT_TRUE(f.ok()) << f.status();
      for (const std::string& name : (*f)->Names()) {
        auto v = (*f)->Get(name);
        ASSERT_TRUE(v.ok());
        tensors.push_back({name, v->dtype, v->shape,
                           std::string(reinterpret_cast<const char*>(v->data), v->nbytes)});
      }
    }
    edit(tensors);
    ASSERT_TRUE(model::WriteSafetensors(shard, tensors).ok());
    nlohmann::json index =
        nlohmann::json::parse(test_util::ReadFile(dir_ + "/model.safetensors.index.json"));
    nlohmann::json map = nlohmann::json::object();
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (it.value() != "model-00001-of-00006.safetensors") map[it.key()] = it.value();
    }
    for (const model::TensorToWrite& t : tensors) map[t.name] = "model-00001-of-00006.safetensors";
    index["weight_map"] = map;
    test_util::WriteFile(dir_ + "/model.safetensors.index.json", index.dump());
  }

  // The load error (a status message), "" when it loads.
  std::string LoadError() {
    auto engine = model::Engine::Create(dir_);
    return engine.ok() ? "" : std::string(engine.status().message());
  }

  static model::TensorToWrite* Find(std::vector<model::TensorToWrite>& ts, const std::string& n) {
    for (model::TensorToWrite& t : ts) {
      if (t.name == n) return &t;
    }
    ADD_FAILURE() << "no tensor " << n;
    static model::TensorToWrite none;
    return &none;
  }

  std::string tmp_, dir_;
};

constexpr char kDown[] = "model.layers.0.mlp.down_proj.weight";

TEST_F(BrokenQuantizedTest, IntactLoads) { EXPECT_EQ(LoadError(), ""); }

TEST_F(BrokenQuantizedTest, MissingScalesNameTheTensor) {
  EditLayer0([](std::vector<model::TensorToWrite>& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(),
                            [](const model::TensorToWrite& t) {
                              return t.name == std::string(kDown) + ".scales";
                            }),
             ts.end());
  });
  const std::string e = LoadError();
  EXPECT_NE(e.find(std::string("'") + kDown + "' has no scales"), std::string::npos) << e;
}

TEST_F(BrokenQuantizedTest, ScalesOfAnotherGroupSizeNameTheTensor) {
  // Scales of groups of 64: half as many columns.
  EditLayer0([](std::vector<model::TensorToWrite>& ts) {
    model::TensorToWrite* s = Find(ts, std::string(kDown) + ".scales");
    const int64_t rows = s->shape[0], cols = (s->shape[1] + 1) / 2;
    s->shape = {rows, cols};
    s->data.assign(static_cast<size_t>(rows * cols * 2), '\0');
  });
  const std::string e = LoadError();
  EXPECT_NE(e.find(std::string(kDown) + ".scales"), std::string::npos) << e;
  EXPECT_NE(e.find("one scale per 32 inputs"), std::string::npos) << e;
}

TEST_F(BrokenQuantizedTest, ConfigGroupSizeOtherThan32IsRefused) {
  nlohmann::json config = nlohmann::json::parse(test_util::ReadFile(dir_ + "/config.json"));
  config["swarm_quantization"]["group_size"] = 64;
  test_util::WriteFile(dir_ + "/config.json", config.dump());
  const std::string e = LoadError();
  EXPECT_NE(e.find("swarm_quantization.group_size is 64"), std::string::npos) << e;
}

TEST_F(BrokenQuantizedTest, CodesOfTheWrongShapeNameTheTensor) {
  EditLayer0([](std::vector<model::TensorToWrite>& ts) {
    model::TensorToWrite* w = Find(ts, kDown);
    std::swap(w->shape[0], w->shape[1]);
  });
  const std::string e = LoadError();
  EXPECT_NE(e.find(std::string("'") + kDown + "' has shape"), std::string::npos) << e;
}

TEST_F(BrokenQuantizedTest, CodesOfTheWrongDtypeNameTheTensor) {
  EditLayer0(
      [](std::vector<model::TensorToWrite>& ts) { Find(ts, kDown)->dtype = model::StDType::kU8; });
  const std::string e = LoadError();
  EXPECT_NE(e.find(std::string("'") + kDown + "' has dtype U8"), std::string::npos) << e;
}

TEST_F(BrokenQuantizedTest, QuantizingAgainOrIntoTheSourceIsRefused) {
  QuantizeOptions again;
  again.model_dir = dir_;
  again.out_dir = tmp_ + "/again";
  auto r = QuantizeModel(again);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("quantized already"), std::string::npos) << r.status();
  QuantizeOptions same;
  same.model_dir = kShared + "/models/stories260K";
  same.out_dir = kShared + "/models/stories260K/";
  r = QuantizeModel(same);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is the model directory"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace swarm::tools
