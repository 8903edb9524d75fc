// The fixture models every model test runs on (../shared: the hf-random checkpoints and
// stories260K, with Hugging Face's golden numbers) and helpers to read the golden files.
#ifndef SWARM_TESTS_MODEL_FIXTURES_H_
#define SWARM_TESTS_MODEL_FIXTURES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/safetensors.h"

namespace swarm::model {

inline const std::string kShared = SWARM_SHARED_DIR;

// Sets an environment variable for the scope, restoring what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

struct Fixture {
  std::string name;
  std::string model_dir;
  std::vector<std::string> sequences;  // Golden sequences; the first is the longest (>= 40 ids).
};

inline std::vector<Fixture> Fixtures() {
  return {
      {"stories260K", kShared + "/models/stories260K", {"greedy", "prompt"}},
      {"llama-gqa", kShared + "/fixtures/hf-random/llama-gqa", {"long", "short"}},
      {"qwen2", kShared + "/fixtures/hf-random/qwen2", {"long", "short"}},
      {"mistral-swa", kShared + "/fixtures/hf-random/mistral-swa", {"long", "short"}},
      {"gpt2", kShared + "/fixtures/hf-random/gpt2", {"long", "short"}},
  };
}

// How gtest prints a fixture parameter.
inline void PrintTo(const Fixture& f, std::ostream* os) { *os << f.name; }

// A gtest name for a fixture ("llama-gqa" → "llama_gqa").
inline std::string FixtureTestName(const ::testing::TestParamInfo<Fixture>& info) {
  std::string n = info.param.name;
  for (char& ch : n) {
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return n;
}

inline std::vector<int64_t> ReadIds(const SafetensorsFile& f, const std::string& key) {
  auto v = f.Get(key);
  EXPECT_TRUE(v.ok()) << v.status();
  if (!v.ok()) return {};
  EXPECT_EQ(v->dtype, StDType::kI64);
  const auto* p = reinterpret_cast<const int64_t*>(v->data);
  return std::vector<int64_t>(p, p + v->NumElements());
}

inline std::vector<float> ReadFloats(const SafetensorsFile& f, const std::string& key) {
  auto v = f.Get(key);
  EXPECT_TRUE(v.ok()) << v.status();
  if (!v.ok()) return {};
  EXPECT_EQ(v->dtype, StDType::kF32);
  const auto* p = reinterpret_cast<const float*>(v->data);
  return std::vector<float>(p, p + v->NumElements());
}

inline double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return a.size() == b.size() ? m : 1e9;
}

}  // namespace swarm::model

#endif  // SWARM_TESTS_MODEL_FIXTURES_H_
