// Helpers of the libFuzzer targets (tests/fuzz/*_fuzz.cc): a per-process scratch file for parsers
// that take a path. Header-only; single-threaded (libFuzzer calls one input at a time).
#ifndef SWARM_TESTS_FUZZ_FUZZ_UTIL_H_
#define SWARM_TESTS_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace swarm::fuzz {

// Writes `data` to a file of this process (in /dev/shm when it exists) and returns its path.
inline const std::string& WriteScratch(const uint8_t* data, size_t size,
                                       const char* suffix = ".bin") {
  static const std::string path = std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") +
                                  "/swarm-fuzz-" + std::to_string(getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f != nullptr) {
    if (size > 0) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

}  // namespace swarm::fuzz

#endif  // SWARM_TESTS_FUZZ_FUZZ_UTIL_H_
