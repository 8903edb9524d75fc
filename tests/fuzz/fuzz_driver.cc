// A standalone driver for the libFuzzer targets of tests/fuzz, for builds without libFuzzer (the
// gcc test suite): runs LLVMFuzzerTestOneInput on every seed file, then on `--runs N`
// deterministic mutations of them (bit flips, byte changes, inserted, removed and repeated spans,
// special values, truncations, splices of two inputs; a fixed random seed, so a failure repeats).
// A finding is the process dying (a crash, an abort, a sanitizer report); the driver itself only
// reports how many inputs it ran. ctest runs each target this way (fuzz_smoke).
//   TARGET_smoke [--runs N] [--max-len BYTES] [--seed S] SEED_FILE_OR_DIR...
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// Optional, as in libFuzzer: the target's set-up, run once before the first input.
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

using Bytes = std::vector<uint8_t>;

bool ReadFile(const std::filesystem::path& path, Bytes* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

void Run(const Bytes& input) {
  // A copy of exactly input.size() bytes, so that reads past the end are caught (sanitizers).
  std::unique_ptr<uint8_t[]> copy(new uint8_t[std::max<size_t>(input.size(), 1)]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  LLVMFuzzerTestOneInput(copy.get(), input.size());
}

// One random edit of `b` (at most `max_len` bytes after it).
void Mutate(Bytes* b, const std::vector<Bytes>& pool, size_t max_len, std::mt19937_64& rng) {
  auto pick = [&rng](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  static const uint64_t kSpecial[] = {
      0,      1,          0x7f,       0x80,       0xff,         0x7fff,           0x8000,
      0xffff, 0x7fffffff, 0x80000000, 0xffffffff, ~uint64_t{0}, uint64_t{1} << 63};
  switch (rng() % 9) {
    case 0:  // Flip a bit.
      if (!b->empty()) (*b)[pick(b->size())] ^= static_cast<uint8_t>(1u << (rng() % 8));
      break;
    case 1:  // Set a byte.
      if (!b->empty()) (*b)[pick(b->size())] = static_cast<uint8_t>(rng());
      break;
    case 2: {  // Insert random bytes.
      const size_t n = 1 + pick(8);
      Bytes ins(n);
      for (uint8_t& c : ins) c = static_cast<uint8_t>(rng());
      b->insert(b->begin() + static_cast<std::ptrdiff_t>(pick(b->size() + 1)), ins.begin(),
                ins.end());
      break;
    }
    case 3: {  // Remove a span.
      if (b->empty()) break;
      const size_t at = pick(b->size());
      const size_t n = std::min(b->size() - at, 1 + pick(16));
      b->erase(b->begin() + static_cast<std::ptrdiff_t>(at),
               b->begin() + static_cast<std::ptrdiff_t>(at + n));
      break;
    }
    case 4: {  // Repeat a span.
      if (b->empty()) break;
      const size_t at = pick(b->size());
      const size_t n = std::min(b->size() - at, 1 + pick(32));
      Bytes span(b->begin() + static_cast<std::ptrdiff_t>(at),
                 b->begin() + static_cast<std::ptrdiff_t>(at + n));
      b->insert(b->begin() + static_cast<std::ptrdiff_t>(pick(b->size() + 1)), span.begin(),
                span.end());
      break;
    }
    case 5: {  // Overwrite with a special value, 1, 2, 4 or 8 bytes wide.
      const size_t width = size_t{1} << pick(4);
      if (b->size() < width) break;
      const uint64_t v = kSpecial[pick(std::size(kSpecial))];
      std::memcpy(b->data() + pick(b->size() - width + 1), &v, width);
      break;
    }
    case 6: {  // Overwrite an ASCII digit run's digit, or put a digit somewhere (text formats).
      if (b->empty()) break;
      (*b)[pick(b->size())] = static_cast<uint8_t>("0123456789-.e\"{}[],:"[pick(21)]);
      break;
    }
    case 7:  // Truncate.
      b->resize(pick(b->size() + 1));
      break;
    case 8: {  // Splice: our head, another input's tail.
      const Bytes& other = pool[pick(pool.size())];
      if (other.empty()) break;
      b->resize(pick(b->size() + 1));
      b->insert(b->end(), other.begin() + static_cast<std::ptrdiff_t>(pick(other.size())),
                other.end());
      break;
    }
  }
  if (b->size() > max_len) b->resize(max_len);
}

}  // namespace

int main(int argc, char** argv) {
  long runs = 2000;
  size_t max_len = 1 << 16;
  uint64_t seed = 20261201;
  std::vector<Bytes> pool;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--runs" || arg == "--max-len" || arg == "--seed") && i + 1 < argc) {
      const unsigned long long v = std::strtoull(argv[++i], nullptr, 10);
      if (arg == "--runs") runs = static_cast<long>(v);
      if (arg == "--max-len") max_len = static_cast<size_t>(v);
      if (arg == "--seed") seed = v;
      continue;
    }
    std::error_code ec;
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(arg, ec)) {
      for (const auto& e : std::filesystem::directory_iterator(arg, ec)) files.push_back(e.path());
      std::sort(files.begin(), files.end());  // Directory order is not stable.
    } else {
      files.push_back(arg);
    }
    for (const auto& f : files) {
      Bytes b;
      if (!ReadFile(f, &b)) {
        std::fprintf(stderr, "%s: cannot read seed %s\n", argv[0], f.c_str());
        return 2;
      }
      pool.push_back(std::move(b));
    }
  }
  if (pool.empty()) {
    std::fprintf(stderr, "usage: %s [--runs N] [--max-len BYTES] [--seed S] SEED...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  for (const Bytes& b : pool) Run(b);
  std::mt19937_64 rng(seed);
  for (long i = 0; i < runs; ++i) {
    Bytes b = pool[rng() % pool.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) Mutate(&b, pool, max_len, rng);
    Run(b);
  }
  std::printf("%zu seeds and %ld mutations run\n", pool.size(), runs);
  return 0;
}
