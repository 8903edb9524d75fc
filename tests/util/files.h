// File helpers for tests: whole-file read/write and a fresh directory under gtest's TempDir.
// Header-only.
#ifndef SWARM_TESTS_UTIL_FILES_H_
#define SWARM_TESTS_UTIL_FILES_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace swarm::test_util {

// The bytes of `path` ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// TempDir()/<prefix>_<pid>_<name>, created.
inline std::string MakeTempDir(const std::string& prefix, const std::string& name) {
  std::string dir = absl::StrCat(::testing::TempDir(), "/", prefix, "_", ::getpid(), "_", name);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace swarm::test_util

#endif  // SWARM_TESTS_UTIL_FILES_H_
