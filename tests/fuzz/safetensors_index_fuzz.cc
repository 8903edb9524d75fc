// libFuzzer: a model.safetensors.index.json through TensorStore::Open (the sharded checkpoint)
// and every tensor it lists, in a scratch directory of this process that holds two real shards:
// model-00001-of-00002.safetensors (stories260K's file) and model-00002-of-00002.safetensors
// (hf-random/llama-gqa's), as links.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "model/safetensors.h"

namespace {

std::string MakeDir() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") /
                       ("swarm-fuzz-index-" + std::to_string(getpid()));
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string shared = SWARM_SHARED_DIR;
  for (auto [name, target] :
       {std::pair{"model-00001-of-00002.safetensors", "/models/stories260K/model.safetensors"},
        std::pair{"model-00002-of-00002.safetensors",
                  "/fixtures/hf-random/llama-gqa/model.safetensors"}}) {
    fs::remove(dir / name, ec);
    fs::create_symlink(fs::absolute(shared + target), dir / name, ec);
    if (ec) __builtin_trap();  // A broken set-up, not a finding.
  }
  return dir.string();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = MakeDir();
  const std::string index = dir + "/model.safetensors.index.json";
  FILE* f = std::fopen(index.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto store = swarm::model::TensorStore::Open(dir);
  if (!store.ok()) return 0;
  uint8_t sink = 0;
  for (const std::string& name : (*store)->Names()) {
    auto view = (*store)->Get(name);
    if (view.ok() && view->nbytes > 0) sink ^= view->data[view->nbytes - 1];
  }
  asm volatile("" : : "r"(sink));
  return 0;
}
