// Shared fixtures of the router tests: the stories260K engine and one tiny calibration (made once
// per test binary, a couple of seconds), written to a temporary router file.
#ifndef SWARM_TESTS_ROUTER_ROUTER_TEST_UTIL_H_
#define SWARM_TESTS_ROUTER_ROUTER_TEST_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"
#include "router/calibration/calibrate.h"
#include "router/calibration/probe.h"
#include "router/router_file.h"

namespace swarm::router::testing {

inline const std::string kShared = SWARM_SHARED_DIR;
inline const std::string kStories = kShared + "/models/stories260K";

inline const model::Engine& Stories() {
  static model::Engine* engine = [] {
    auto e = model::Engine::Create(kStories);
    if (!e.ok()) {
      std::fprintf(stderr, "cannot open %s: %s\n", kStories.c_str(),
                   std::string(e.status().message()).c_str());
      std::abort();
    }
    return e->release();
  }();
  return *engine;
}

inline std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = tmp != nullptr ? tmp : "/tmp";
  return dir + "/swarm_router_" + std::to_string(::getpid()) + "_" + name;
}

struct Tiny {
  std::vector<Sample> samples;
  RouterData data;  // N = 5, kept {0, 4}, gate fitted.
  std::string path;
};

inline SampleOptions TinySampleOptions(int count, uint64_t stream) {
  SampleOptions o;
  o.count = count;
  o.seed = 7;
  o.stream = stream;
  o.min_prompt_tokens = 3;
  o.max_prompt_tokens = 12;
  o.continuation_tokens = 8;
  return o;
}

inline CalibrationOptions TinyCalibrationOptions() {
  CalibrationOptions o;
  o.num_blocks = 5;
  o.fit_gate = true;
  o.gate.epochs = 60;
  o.seed = 7;
  return o;
}

inline const Tiny& TinyCalibration() {
  static Tiny* tiny = [] {
    auto* t = new Tiny();
    auto samples = SampleFromModel(Stories(), TinySampleOptions(24, 1));
    if (!samples.ok()) {
      std::fprintf(stderr, "sampling: %s\n", std::string(samples.status().message()).c_str());
      std::abort();
    }
    t->samples = *samples;
    auto data = Calibrate(Stories(), t->samples, TinyCalibrationOptions());
    if (!data.ok()) {
      std::fprintf(stderr, "calibrating: %s\n", std::string(data.status().message()).c_str());
      std::abort();
    }
    t->data = *data;
    t->path = TempPath("tiny.safetensors");
    absl::Status s = SaveRouterData(t->path, t->data);
    if (!s.ok()) {
      std::fprintf(stderr, "saving: %s\n", std::string(s.message()).c_str());
      std::abort();
    }
    return t;
  }();
  return *tiny;
}

}  // namespace swarm::router::testing

#endif  // SWARM_TESTS_ROUTER_ROUTER_TEST_UTIL_H_
