// `swarm generate`: stream text from a coordinator through the SDK (client/client.h).
#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli/command.h"
#include "client/cli/connect_flags.h"
#include "client/cli/sampling_flags.h"
#include "client/client.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"

namespace swarm::cli {
namespace {

int GenerateCommand(const std::vector<std::string>& args) {
  std::set<std::string> value_flags = {"server",       "prompt",     "ids",          "mode",
                                       "top-k-blocks", "combine",    "timeout",      "request-id",
                                       "blocks",       "num-blocks", "block-weights"};
  value_flags.insert(kSamplingFlags.begin(), kSamplingFlags.end());
  auto flags = Flags::Parse(args, WithConnectFlags(value_flags), {"json", "no-stop", "no-special"});
  if (!flags.ok()) return Fail("generate", flags.status());
  auto server = flags->Required("server");
  if (!server.ok()) return Fail("generate", server.status());
  auto params = ParseSamplingFlags(*flags);
  if (!params.ok()) return Fail("generate", params.status());
  if (flags->Has("prompt") == flags->Has("ids")) {
    return Fail("generate", absl::InvalidArgumentError("give exactly one of --prompt or --ids"));
  }
  GenerateRequest req;
  if (flags->Has("ids")) {
    auto ids = flags->IntList("ids");
    if (!ids.ok()) return Fail("generate", ids.status());
    req.prompt_ids = *ids;
  } else {
    req.prompt = flags->String("prompt");
  }
  req.add_special_tokens = !flags->Bool("no-special");
  req.max_new_tokens = params->max_new_tokens;
  req.temperature = params->temperature;
  req.top_k = params->top_k;
  req.top_p = params->top_p;
  req.seed = params->seed;
  req.stop_at_eos = params->stop_at_eos;
  req.mode = flags->String("mode", "exact");
  req.combine = flags->String("combine", "sequential");
  auto top_k_blocks = flags->Int("top-k-blocks", 0);
  if (!top_k_blocks.ok()) return Fail("generate", top_k_blocks.status());
  req.top_k_blocks = static_cast<int>(*top_k_blocks);
  req.request_id = flags->String("request-id");
  if (flags->Has("blocks")) {
    auto blocks = flags->IntList("blocks");
    if (!blocks.ok()) return Fail("generate", blocks.status());
    req.blocks.assign(blocks->begin(), blocks->end());
    auto n = flags->Int("num-blocks", 0);
    if (!n.ok()) return Fail("generate", n.status());
    if (*n <= 0) {
      return Fail("generate", absl::InvalidArgumentError("--blocks needs --num-blocks N"));
    }
    req.num_blocks = static_cast<int>(*n);
    for (absl::string_view w :
         absl::StrSplit(flags->String("block-weights"), ',', absl::SkipEmpty())) {
      float v = 0;
      if (!absl::SimpleAtof(w, &v)) {
        return Fail("generate", absl::InvalidArgumentError(absl::StrCat("flag --block-weights: '",
                                                                        w, "' is not a number")));
      }
      req.block_weights.push_back(v);
    }
    if (!flags->Has("mode")) req.mode = "sparse";
  }
  auto timeout = flags->Double("timeout", 600);
  if (!timeout.ok()) return Fail("generate", timeout.status());
  req.timeout = absl::Seconds(*timeout);

  auto client = Client::Connect(*server, ConnectOptions(*flags));
  if (!client.ok()) return Fail("generate", client.status());
  const bool json = flags->Bool("json");
  if (!json && flags->Has("prompt")) {
    std::fputs(req.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  auto result = (*client)->Generate(req, [&](const GenerateChunk& chunk) {
    if (!json) {
      std::fputs(chunk.text.c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (!result.ok()) {
    if (!json) std::fputs("\n", stdout);
    return Fail("generate", result.status());
  }
  if (json) {
    nlohmann::json out = {{"prompt_ids", result->prompt_ids},
                          {"ids", result->ids},
                          {"text", result->text},
                          {"finish_reason", result->finish_reason},
                          {"request_id", result->request_id}};
    if (result->num_blocks > 0) {
      out["blocks"] = result->blocks;
      out["block_weights"] = result->block_weights;
      out["num_blocks"] = result->num_blocks;
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::fputs("\n", stdout);
  }
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND(generate, "generate",
                       "generate --server HOST:PORT [--prompt TEXT | --ids 1,2,3] "
                       "[--max-new-tokens N] [--temperature T] [--top-p P] [--top-k K] "
                       "[--seed S] [--no-stop] [--mode exact|sparse] [--top-k-blocks K] "
                       "[--combine sequential|parallel] [--blocks i,j --num-blocks N "
                       "[--block-weights a,b]] [--timeout SECONDS] [--json]" SWARM_CONNECT_USAGE,
                       GenerateCommand);

}  // namespace swarm::cli
