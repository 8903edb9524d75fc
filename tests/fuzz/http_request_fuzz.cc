// libFuzzer: a JSON body of the HTTP API (coordinator/http_api.h) through what the API does with
// it before generating: ParseOpenAiRequest for /v1/completions or /v1/chat/completions (byte 0's
// low bit picks), and for chat ParseChatInput and a real chat template's Render (byte 0's bit 1
// picks llama-3.1's, which takes tools, or llama-2-chat's, which raises on bad roles).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/civil_time.h"
#include "coordinator/openai_api.h"
#include "tokenizer/chat_template.h"

namespace {

const swarm::tokenizer::ChatTemplate* Load(const char* name) {
  auto t = swarm::tokenizer::ChatTemplate::FromTokenizerConfig(
      std::string(SWARM_SHARED_DIR) + "/fixtures/chat_templates/templates/" + name + ".json");
  if (!t.ok()) __builtin_trap();  // The fixtures must load: a broken set-up, not a finding.
  return t->release();
}

const swarm::tokenizer::ChatTemplate* llama3 = nullptr;
const swarm::tokenizer::ChatTemplate* llama2 = nullptr;

}  // namespace

// The fixtures load before the first input (not counted against libFuzzer's per-input timeout).
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  llama3 = Load("llama-3.1");
  llama2 = Load("llama-2-chat");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto parsed = swarm::coordinator::ParseOpenAiRequest(
      chat ? swarm::coordinator::OpenAiEndpoint::kChat
           : swarm::coordinator::OpenAiEndpoint::kCompletions,
      body);
  if (!parsed.ok() || !chat) return 0;
  auto input = swarm::coordinator::ParseChatInput(body);
  if (!input.ok()) return 0;
  swarm::tokenizer::RenderOptions render;
  render.add_generation_prompt = true;
  render.tools = input->tools;
  render.date = absl::CivilDay(2026, 1, 1);
  (void)((data[0] & 2) ? llama3 : llama2)->Render(input->messages, render);
  return 0;
}
