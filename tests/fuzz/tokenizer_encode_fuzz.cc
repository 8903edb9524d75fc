// libFuzzer: any text encoded (and the ids decoded) by the real tokenizers of ../shared: the
// first byte picks stories260K's SentencePiece-style BPE or llama3's byte-level BPE.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "tokenizer/tokenizer.h"

namespace {

std::unique_ptr<swarm::tokenizer::Tokenizer> Load(const char* relative) {
  auto tok = swarm::tokenizer::Tokenizer::FromFile(std::string(SWARM_SHARED_DIR) + relative);
  if (!tok.ok()) __builtin_trap();  // The fixtures must load: a broken set-up, not a finding.
  return *std::move(tok);
}

const swarm::tokenizer::Tokenizer* sp = nullptr;
const swarm::tokenizer::Tokenizer* bytelevel = nullptr;

}  // namespace

// Loading llama3's tokenizer takes seconds under ASan: done before the first input, so that it
// does not count against libFuzzer's per-input timeout.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  sp = Load("/models/stories260K/tokenizer.json").release();
  bytelevel = Load("/fixtures/tokenizers/llama3/tokenizer.json").release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const swarm::tokenizer::Tokenizer* tok = (data[0] & 1) ? bytelevel : sp;
  absl::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto ids = tok->Encode(text, (data[0] & 2) != 0);
  if (ids.ok()) (void)tok->Decode(*ids, (data[0] & 4) != 0);
  return 0;
}
