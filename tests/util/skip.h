// The suite's rule for a test that cannot run for want of something outside it (a binary not
// built, a tool not installed): outside CI a skip with a one-line reason; with CI=true (as
// .ci/run sets it) a failure naming what is missing, so a CI log cannot show a green run that
// never exercised the test. The shell tests follow the same rule (tests/deploy/lib.sh).
// Header-only; use inside a TEST body or SetUp.
#ifndef SWARM_TESTS_UTIL_SKIP_H_
#define SWARM_TESTS_UTIL_SKIP_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"

namespace swarm::test_util {

// True when the environment says this is a CI run (CI=true or CI=1, any case).
inline bool InCi() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  const std::string v = absl::AsciiStrToLower(ci);
  return v == "true" || v == "1";
}

}  // namespace swarm::test_util

// Skips (outside CI) or fails (CI) the current test with `reason`, and returns from it.
#define SWARM_SKIP_OR_FAIL(reason)                                            \
  do {                                                                        \
    if (::swarm::test_util::InCi()) {                                         \
      GTEST_FAIL() << (reason) << " (CI=true: a test that cannot run fails)"; \
    } else {                                                                  \
      GTEST_SKIP() << (reason);                                               \
    }                                                                         \
  } while (0)

#endif  // SWARM_TESTS_UTIL_SKIP_H_
