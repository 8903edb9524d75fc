// The samples of a prometheus::Registry as a test reads them: serialised to the text exposition
// format (what /metrics serves), each `name{a="x",b="y"} value` line as one map entry. Shared by
// the metric tests of common/, worker/ and coordinator/. Header-only; not thread-safe.
#ifndef SWARM_TESTS_UTIL_METRIC_SAMPLES_H_
#define SWARM_TESTS_UTIL_METRIC_SAMPLES_H_

#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "common/metrics_server.h"
#include "prometheus/registry.h"

namespace swarm::test_util {

// `name{labels}` → value of every sample in `registry` (a serialisation error fails the test).
inline std::map<std::string, double> Samples(const prometheus::Registry& registry) {
  absl::StatusOr<std::string> text = common::SerializeRegistry(registry);
  EXPECT_TRUE(text.ok()) << text.status();
  std::map<std::string, double> out;
  std::istringstream in(text.ok() ? *text : "");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

// The value of sample `key`; a missing sample fails the test (and reads as -1).
inline double Value(const std::map<std::string, double>& samples, const std::string& key) {
  auto it = samples.find(key);
  EXPECT_NE(it, samples.end()) << "no sample " << key;
  return it == samples.end() ? -1 : it->second;
}

}  // namespace swarm::test_util

#endif  // SWARM_TESTS_UTIL_METRIC_SAMPLES_H_
