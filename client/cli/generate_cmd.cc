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

const FlagSet& GenerateFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm generate", "stream text from a coordinator (the SDK's Generate)");
    f.Required("server", "HOST:PORT", "the coordinator")
        .Value("prompt", "TEXT", "", "the prompt text (tokenized by the coordinator)")
        .Value("ids", "1,2,3", "", "the prompt as token ids")
        .Bool("no-special", "do not add the tokenizer's special tokens (BOS) to --prompt");
    AddSamplingFlags(f);
    f.Value("mode", "exact|sparse", "exact", "run every block, or the router's top-k blocks")
        .Value("top-k-blocks", "K", "0", "blocks a sparse request runs; 0 = the router's default")
        .Value("combine", "sequential|parallel", "sequential", "how sparse blocks are combined")
        .Value("blocks", "i,j", "", "an explicit sparse plan: these blocks (needs --num-blocks)")
        .Value("num-blocks", "N", "", "the block count --blocks refers to")
        .Value("block-weights", "a,b", "", "the weight of each of --blocks")
        .Value("request-id", "ID", "", "a request id for the coordinator's logs")
        .Value("timeout", "SECONDS", "600", "deadline of the whole request")
        .Bool("json", "print one JSON object {prompt_ids, ids, text, ...} instead of the text")
        .Note("Give exactly one of --prompt or --ids.");
    AddConnectFlags(f);
    AddResumeFlags(f);
    return f;
  }();
  return flags;
}

int GenerateCommand(const std::vector<std::string>& args) {
  auto flags = GenerateFlags().Parse(args);
  if (!flags.ok()) return Fail("generate", flags.status());
  auto server = flags->Required("server");
  if (!server.ok()) return Fail("generate", server.status());
  auto params = ReadSamplingFlags(*flags);
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
  SetSampling(*params, req);
  req.mode = flags->String("mode");
  req.combine = flags->String("combine");
  auto top_k_blocks = flags->Int("top-k-blocks");
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
  auto timeout = flags->Double("timeout");
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
    if (result->resumes > 0) out["resumes"] = result->resumes;
    if (req.logprobs) {
      out["logprobs"] = nlohmann::json::array();
      for (const TokenLogprobs& t : result->logprobs) {
        out["logprobs"].push_back(TokenLogprobJson(t.chosen, t.top));
      }
    }
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

SWARM_REGISTER_COMMAND_FLAGS(generate, "generate", GenerateCommand, GenerateFlags);

}  // namespace swarm::cli
