// libFuzzer: tokenizer.json text through Tokenizer::FromJson, then a fixed text encoded and the
// ids decoded with whatever loaded.
#include <cstddef>
#include <cstdint>

#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tok = swarm::tokenizer::Tokenizer::FromJson(
      absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json");
  if (!tok.ok()) return 0;
  auto ids = (*tok)->Encode("Once upon a time, <s> héllo 世界 \n\t 123", true);
  if (ids.ok()) (void)(*tok)->Decode(*ids);
  return 0;
}
