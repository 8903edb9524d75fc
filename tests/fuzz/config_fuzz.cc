// libFuzzer: config.json text through ParseModelConfig and the config's derived values.
#include <cstddef>
#include <cstdint>

#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto config = swarm::model::ParseModelConfig(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  if (config.ok()) (void)config->Fingerprint();
  return 0;
}
