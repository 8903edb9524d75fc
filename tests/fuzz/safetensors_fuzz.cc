// libFuzzer: a safetensors file (header and data) through SafetensorsFile::Open and every view.
#include <cstddef>
#include <cstdint>

#include "model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = swarm::fuzz::WriteScratch(data, size, ".safetensors");
  auto file = swarm::model::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  uint8_t sink = 0;
  for (const std::string& name : (*file)->Names()) {
    auto view = (*file)->Get(name);
    if (view.ok() && view->nbytes > 0) {
      sink ^= view->data[0];
      sink ^= view->data[view->nbytes - 1];
    }
  }
  // Reading the first and last byte of each view proves its range lies inside the mapping.
  asm volatile("" : : "r"(sink));
  return 0;
}
