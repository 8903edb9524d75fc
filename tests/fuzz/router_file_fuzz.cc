// libFuzzer: a router file (safetensors) through LoadRouterData.
#include <cstddef>
#include <cstdint>

#include "router/router_file.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = swarm::fuzz::WriteScratch(data, size, ".router.safetensors");
  (void)swarm::router::LoadRouterData(path);
  return 0;
}
