// sdk_consumer SERVER ID,ID,... N: greedy-generates N tokens after the given prompt ids through
// swarm::Client and prints the generated ids, comma-separated, on one line.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/client.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: sdk_consumer SERVER IDS N\n");
    return 2;
  }
  auto client = swarm::Client::Connect(argv[1]);
  if (!client.ok()) return 1;
  swarm::GenerateRequest req;
  for (absl::string_view id : absl::StrSplit(argv[2], ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(id, &v)) return 2;
    req.prompt_ids.push_back(v);
  }
  req.max_new_tokens = std::atoi(argv[3]);
  req.stop_at_eos = false;
  int chunks = 0;
  auto result = (*client)->Generate(req, [&](const swarm::GenerateChunk&) {
    ++chunks;
    return true;
  });
  if (!result.ok()) {
    std::fprintf(stderr, "sdk_consumer: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("%s\n", absl::StrJoin(result->ids, ",").c_str());
  return chunks > 0 ? 0 : 1;
}
