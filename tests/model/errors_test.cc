// Bad input to the model library: each case gets a clear error naming the file (and tensor) at
// fault, never a crash.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/kv_cache.h"
#include "model/layer_host.h"
#include "model/model_ends.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace swarm::model {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kStories = std::string(SWARM_SHARED_DIR) + "/models/stories260K";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// A scratch copy of stories260K's config with a safetensors file the test controls.
class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/swarm_errors_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    WriteFile(dir_ + "/config.json", ReadFile(kStories + "/config.json"));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a safetensors file from a raw header and data section.
  void WriteRaw(const std::string& header, const std::string& data, int64_t header_len = -1) {
    uint64_t len = header_len < 0 ? header.size() : static_cast<uint64_t>(header_len);
    std::string bytes(reinterpret_cast<const char*>(&len), 8);
    WriteFile(dir_ + "/model.safetensors", bytes + header + data);
  }

  // Copies stories260K's tensors, letting `edit` change the list first.
  void WriteTensors(const std::function<void(std::vector<TensorToWrite>&)>& edit) {
    auto src = SafetensorsFile::Open(kStories + "/model.safetensors");
    ASSERT_TRUE(src.ok());
    std::vector<TensorToWrite> tensors;
    for (const std::string& name : (*src)->Names()) {
      TensorView v = *(*src)->Get(name);
      tensors.push_back(
          {name, v.dtype, v.shape, std::string(reinterpret_cast<const char*>(v.data), v.nbytes)});
    }
    edit(tensors);
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", tensors).ok());
  }

  absl::Status LoadAll() {
    auto ckpt = Checkpoint::Open(dir_);
    if (!ckpt.ok()) return ckpt.status();
    auto layers = LayerHost::Create(*ckpt, {0, 1, 2, 3, 4}, {});
    if (!layers.ok()) return layers.status();
    return ModelEnds::Create(*ckpt, {}).status();
  }

  std::string dir_;
};

TEST_F(ModelDirTest, MissingDirectory) {
  auto s = Checkpoint::Open("/nonexistent/model").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent/model/config.json"));
}

TEST_F(ModelDirTest, MissingSafetensors) {
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors"));
}

TEST_F(ModelDirTest, MalformedConfig) {
  WriteFile(dir_ + "/config.json", "{\"hidden_size\": 64,");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("config.json"));
  EXPECT_THAT(s.message(), HasSubstr("malformed JSON"));
}

TEST_F(ModelDirTest, ConfigFieldOfWrongType) {
  WriteFile(dir_ + "/config.json",
            R"({"architectures":["LlamaForCausalLM"],"hidden_size":"big","num_hidden_layers":2,
                "num_attention_heads":2,"intermediate_size":8,"vocab_size":10})");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("'hidden_size' must be an integer"));
}

TEST_F(ModelDirTest, UnknownArchitecture) {
  WriteFile(dir_ + "/config.json", R"({"architectures":["FalconForCausalLM"],"hidden_size":64})");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unsupported architecture 'FalconForCausalLM'"));
}

TEST_F(ModelDirTest, TruncatedFile) {
  WriteFile(dir_ + "/model.safetensors", "abc");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors"));
  EXPECT_THAT(s.message(), HasSubstr("truncated"));
}

TEST_F(ModelDirTest, TruncatedData) {
  // The header promises 16 bytes of data; the file holds 8.
  WriteRaw(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0'));
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors: tensor 'a'"));
  EXPECT_THAT(s.message(), HasSubstr("out of range"));
}

TEST_F(ModelDirTest, HeaderLengthPastEndOfFile) {
  WriteRaw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'),
           1 << 20);
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("header length 1048576 runs past the end of the file"));
}

TEST_F(ModelDirTest, OverlappingOffsets) {
  WriteRaw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           std::string(12, '\0'));
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'b' (bytes 4..12) overlaps tensor 'a' (bytes 0..8)"));
}

TEST_F(ModelDirTest, OverlapNamesTheTensorsAmongMany) {
  // Enough tensors that the name table rehashes while the header is read.
  std::string header = "{";
  for (int i = 0; i < 200; ++i) {
    header += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]},";
  }
  header += R"("late":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  WriteRaw(header, std::string(800, '\0'));
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("overlaps"));
  EXPECT_THAT(s.message(), HasSubstr("'late'"));
  EXPECT_THAT(s.message(), HasSubstr("'t0'"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("tensor ''")));
}

TEST_F(ModelDirTest, ShapeWhoseByteCountOverflowsIsRejected) {
  WriteRaw(R"({"a":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})", "");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("overflows"));
  WriteRaw(R"({"a":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "");
  EXPECT_THAT(Checkpoint::Open(dir_).status().message(), HasSubstr("overflows"));
}

TEST_F(ModelDirTest, OffsetsDisagreeWithShape) {
  WriteRaw(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0'));
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("tensor 'a'"));
  EXPECT_THAT(s.message(), HasSubstr("needs 12 bytes"));
}

TEST_F(ModelDirTest, MalformedHeaderJson) {
  WriteRaw("{not json", "");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("malformed safetensors JSON header"));
}

TEST_F(ModelDirTest, TensorWithWrongShape) {
  WriteTensors([](std::vector<TensorToWrite>& ts) {
    for (auto& t : ts) {
      if (t.name == "model.layers.3.mlp.up_proj.weight") t.shape = {64, 172};
    }
  });
  absl::Status s = LoadAll();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'model.layers.3.mlp.up_proj.weight' has shape "
                                     "[64,172], config says [172,64]"));
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors"));
}

TEST_F(ModelDirTest, TensorWithWrongDtype) {
  WriteTensors([](std::vector<TensorToWrite>& ts) {
    for (auto& t : ts) {
      if (t.name == "model.layers.0.input_layernorm.weight") {
        t.dtype = StDType::kI32;  // Same byte count, not a float type.
      }
    }
  });
  absl::Status s = LoadAll();
  EXPECT_THAT(s.message(), HasSubstr("'model.layers.0.input_layernorm.weight'"));
  EXPECT_THAT(s.message(), HasSubstr("I32 is not a floating weight type"));
}

TEST_F(ModelDirTest, MissingTensor) {
  WriteTensors([](std::vector<TensorToWrite>& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(),
                            [](const TensorToWrite& t) {
                              return t.name == "model.layers.2.self_attn.k_proj.weight";
                            }),
             ts.end());
  });
  absl::Status s = LoadAll();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("missing tensor 'model.layers.2.self_attn.k_proj.weight'"));
  EXPECT_THAT(s.message(), HasSubstr(dir_));
}

TEST_F(ModelDirTest, MissingTensorOnlyMattersForHostedLayers) {
  WriteTensors([](std::vector<TensorToWrite>& ts) {
    ts.erase(std::remove_if(
                 ts.begin(), ts.end(),
                 [](const TensorToWrite& t) { return t.name.rfind("model.layers.4.", 0) == 0; }),
             ts.end());
  });
  auto ckpt = Checkpoint::Open(dir_);
  ASSERT_TRUE(ckpt.ok());
  EXPECT_TRUE(LayerHost::Create(*ckpt, {0, 1}, {}).ok());
  EXPECT_FALSE(LayerHost::Create(*ckpt, {4}, {}).ok());
}

TEST_F(ModelDirTest, ShardedCheckpoint) {
  // Split stories260K into two shards with an index: same logits as the single file.
  auto src = SafetensorsFile::Open(kStories + "/model.safetensors");
  ASSERT_TRUE(src.ok());
  std::vector<TensorToWrite> a, b;
  nlohmann::json map;
  int i = 0;
  for (const std::string& name : (*src)->Names()) {
    TensorView v = *(*src)->Get(name);
    TensorToWrite t{name, v.dtype, v.shape,
                    std::string(reinterpret_cast<const char*>(v.data), v.nbytes)};
    const bool first = (i++ % 2) == 0;
    (first ? a : b).push_back(std::move(t));
    map[name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00001-of-00002.safetensors", a).ok());
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00002-of-00002.safetensors", b).ok());
  WriteFile(dir_ + "/model.safetensors.index.json",
            nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", map}}.dump());
  auto sharded = Engine::Create(dir_);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto single = Engine::Create(kStories);
  ASSERT_TRUE(single.ok()) << single.status();
  auto x = (*sharded)->Logits({1, 403, 407});
  auto y = (*single)->Logits({1, 403, 407});
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(x->data, y->data);
}

TEST_F(ModelDirTest, ShardIndexNamingAMissingShard) {
  WriteFile(dir_ + "/model.safetensors.index.json",
            R"({"weight_map":{"model.norm.weight":"model-00009.safetensors"}})");
  auto s = Checkpoint::Open(dir_).status();
  EXPECT_THAT(s.message(), HasSubstr("model-00009.safetensors"));
}

TEST(Generate, PromptLongerThanContext) {
  auto engine = Engine::Create(kStories);
  ASSERT_TRUE(engine.ok());
  std::vector<int64_t> prompt(600, 5);  // Context is 512.
  auto r = (*engine)->Generate(prompt, SamplingParams{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(r.status().message(), HasSubstr("longer than the context of 512"));
}

TEST(Generate, StopsAtContextLimit) {
  auto engine = Engine::Create(kStories);
  ASSERT_TRUE(engine.ok());
  std::vector<int64_t> prompt(505, 5);
  SamplingParams p;
  p.max_new_tokens = 100;
  p.stop_at_eos = false;
  auto r = (*engine)->Generate(prompt, p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, "context");
  EXPECT_EQ(r->ids.size(), 8u);  // Positions 505..511 are fed; the 8th token has no slot left.
}

TEST(Forward, RejectsBadHiddenStatesAndPositions) {
  auto ckpt = Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  auto host = LayerHost::Create(*ckpt, {1, 2}, {});
  ASSERT_TRUE(host.ok());
  auto cache = (*host)->NewCache();
  HostTensor h = HostTensor::FromFloats({2, 64}, std::vector<float>(128, 0.1f));
  const int l1[] = {1}, l0[] = {0};
  EXPECT_EQ((*host)->Forward(h, 0, l0, cache.get()).status().code(),
            absl::StatusCode::kInvalidArgument);  // Not hosted.
  EXPECT_EQ((*host)->Forward(h, 3, l1, cache.get()).status().code(),
            absl::StatusCode::kFailedPrecondition);  // Wrong position.
  EXPECT_EQ((*host)->Forward(h, 511, l1, cache.get()).status().code(),
            absl::StatusCode::kOutOfRange);  // Past the context.
  HostTensor wrong = HostTensor::FromFloats({2, 32}, std::vector<float>(64, 0.1f));
  EXPECT_EQ((*host)->Forward(wrong, 0, l1, cache.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  HostTensor short_bytes = h;
  short_bytes.data.resize(100);
  EXPECT_EQ((*host)->Forward(short_bytes, 0, l1, cache.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*host)->Forward(h, 0, l1, cache.get()).ok());
  EXPECT_EQ(cache->Length(1), 2);
  EXPECT_EQ(cache->Length(2), 0);
}

TEST(Cli, BadInputExitsNonZeroWithOneLineReason) {
  const std::string swarm = std::string(SWARM_BINARY_DIR) + "/swarm";
  auto run = [&](const std::string& args) {
    std::string cmd = swarm + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    int rc = pclose(p);
    return std::make_pair(WEXITSTATUS(rc), out);
  };
  auto [rc1, out1] = run("run --model /nonexistent --prompt hi");
  EXPECT_NE(rc1, 0);
  EXPECT_THAT(out1, HasSubstr("/nonexistent/config.json"));
  auto [rc2, out2] = run("run --model " + kStories + " --ids 1,2 --top-p 7");
  EXPECT_NE(rc2, 0);
  EXPECT_THAT(out2, HasSubstr("top_p"));
  auto [rc3, out3] = run("run --model " + kStories + " --bogus 1");
  EXPECT_NE(rc3, 0);
  EXPECT_THAT(out3, HasSubstr("unknown flag --bogus"));
}

}  // namespace
}  // namespace swarm::model

namespace swarm::model {
namespace {

TEST(KvCache, CapacityHintIsWhatIsAllocated) {
  auto ckpt = Checkpoint::Open(kStories);
  ASSERT_TRUE(ckpt.ok());
  auto host = LayerHost::Create(*ckpt, {1, 2}, {});
  ASSERT_TRUE(host.ok());
  const int layers[] = {1, 2};
  HostTensor h = HostTensor::FromFloats({2, 64}, std::vector<float>(128, 0.1f));
  auto hinted = (*host)->NewCache(10);
  ASSERT_TRUE((*host)->Forward(h, 0, layers, hinted.get()).ok());
  EXPECT_EQ(hinted->Bytes(), 10 * (*host)->KvBytesPerToken());
  // Past the hint it still grows (to the context at most).
  HostTensor many = HostTensor::FromFloats({12, 64}, std::vector<float>(12 * 64, 0.1f));
  ASSERT_TRUE((*host)->Forward(many, 2, layers, hinted.get()).ok());
  EXPECT_EQ(hinted->Length(1), 14);
  EXPECT_GE(hinted->Bytes(), 14 * (*host)->KvBytesPerToken());
}

}  // namespace
}  // namespace swarm::model
