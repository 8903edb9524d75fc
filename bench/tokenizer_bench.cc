// Tokenizer benchmark: load time of each real tokenizer.json in ../shared and encode/decode
// throughput on a mixed-script text (English, digits, accents, CJK, emoji).
//
//   tokenizer_bench [--shared DIR] [--reps 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/lock_checks.h"
#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  std::string shared = "../shared";
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--shared" && i + 1 < argc) {
      shared = argv[++i];
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "tokenizer_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  std::string text;
  for (int i = 0; i < 400; ++i) {
    text += "The quick brown fox jumps over the lazy dog 1234, naïve café 中文测试 😀. ";
  }
  std::printf("%-12s %10s %12s %14s %14s\n", "tokenizer", "load ms", "tokens", "encode MB/s",
              "decode MB/s");
  const std::vector<std::pair<std::string, std::string>> files = {
      {"stories260K", shared + "/models/stories260K/tokenizer.json"},
      {"sp-bpe-32k", shared + "/fixtures/tokenizers/sp-bpe-32k/tokenizer.json"},
      {"llama3", shared + "/fixtures/tokenizers/llama3/tokenizer.json"},
      {"qwen3", shared + "/fixtures/tokenizers/qwen3/tokenizer.json"}};
  for (const auto& [name, path] : files) {
    double load = 1e30, enc = 1e30, dec = 1e30;
    size_t n = 0;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      auto tok = swarm::tokenizer::Tokenizer::FromFile(path);
      auto t1 = Clock::now();
      if (!tok.ok()) {
        std::fprintf(stderr, "tokenizer_bench: %s\n", std::string(tok.status().message()).c_str());
        return 1;
      }
      auto ids = (*tok)->Encode(text, false);  // Cold word cache each repetition.
      auto t2 = Clock::now();
      if (!ids.ok()) return 1;
      std::string back = (*tok)->Decode(*ids);
      auto t3 = Clock::now();
      if (back != text)
        std::fprintf(stderr, "tokenizer_bench: %s does not round-trip\n", name.c_str());
      n = ids->size();
      load = std::min(load, Seconds(t0, t1));
      enc = std::min(enc, Seconds(t1, t2));
      dec = std::min(dec, Seconds(t2, t3));
    }
    std::printf("%-12s %10.1f %12zu %14.2f %14.2f\n", name.c_str(), load * 1e3, n,
                text.size() / enc / 1e6, text.size() / dec / 1e6);
  }
  return 0;
}
