// `swarm predict`: asks a coordinator's router which top-k blocks it would run for a prompt, with
// their weights and the router's expected KL, without running any block (the Predict RPC through
// swarm::Client::Predict).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"
#include "client/cli/connect_flags.h"
#include "client/client.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"

namespace swarm::cli {
namespace {

constexpr char kName[] = "predict";

nlohmann::json ToJson(const Prediction& p) {
  nlohmann::json blocks = nlohmann::json::array();
  nlohmann::json weights = nlohmann::json::array();
  nlohmann::json layers = nlohmann::json::array();
  for (const BlockChoice& b : p.blocks) {
    blocks.push_back(b.block);
    weights.push_back(b.weight);
    layers.push_back({{"begin", b.begin_layer}, {"end", b.end_layer}});
  }
  return {{"blocks", blocks},
          {"weights", weights},
          {"layers", layers},
          {"num_blocks", p.num_blocks},
          {"expected_kl", p.expected_kl},
          {"prompt_ids", p.prompt_ids},
          {"balance", p.balance},
          {"toll_free_blocks", p.toll_free_blocks},
          {"toll_free_expected_kl", p.toll_free_expected_kl}};
}

const FlagSet& PredictFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm predict",
              "which top-k blocks the coordinator's router would run for a prompt, with their "
              "weights (runs no block): the choice serving makes now (with the load tolls of now "
              "when the coordinator runs --balance) and the toll-free one");
    f.Required("server", "HOST:PORT", "the coordinator")
        .Value("prompt", "TEXT", "", "the prompt text")
        .Value("ids", "1,2,3", "", "the prompt as token ids")
        .Value("top-k-blocks", "K", "3", "blocks to choose")
        .Value("timeout", "SECONDS", "10", "deadline of the call")
        .Bool("json",
              "print one JSON object {blocks, weights, layers, ..., balance, toll_free_blocks}")
        .Note("Give exactly one of --prompt or --ids.");
    AddConnectFlags(f);
    return f;
  }();
  return flags;
}

int PredictCommand(const std::vector<std::string>& args) {
  auto flags = PredictFlags().Parse(args);
  if (!flags.ok()) return Fail(kName, flags.status());
  auto server = flags->Required("server");
  if (!server.ok()) return Fail(kName, server.status());
  if (flags->Has("prompt") == flags->Has("ids")) {
    return Fail(kName, absl::InvalidArgumentError("give exactly one of --prompt or --ids"));
  }
  std::vector<int64_t> ids;
  if (flags->Has("ids")) {
    auto parsed = flags->IntList("ids");
    if (!parsed.ok()) return Fail(kName, parsed.status());
    ids = *parsed;
    if (ids.empty()) return Fail(kName, absl::InvalidArgumentError("--ids: no ids given"));
  }
  auto k = flags->Int("top-k-blocks");
  if (!k.ok()) return Fail(kName, k.status());
  if (*k < 1) {
    return Fail(kName, absl::InvalidArgumentError(
                           absl::StrCat("--top-k-blocks must be at least 1, got ", *k)));
  }
  auto timeout = flags->Double("timeout");
  if (!timeout.ok()) return Fail(kName, timeout.status());
  auto client = Client::Connect(*server, ConnectOptions(*flags));
  if (!client.ok()) return Fail(kName, client.status());
  auto p = (*client)->Predict(flags->String("prompt"), ids, static_cast<int>(*k),
                              absl::Seconds(*timeout));
  if (!p.ok()) return Fail(kName, p.status());
  if (flags->Bool("json")) {
    std::cout << ToJson(*p).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::vector<std::string> blocks, weights, layers;
  for (const BlockChoice& b : p->blocks) {
    blocks.push_back(absl::StrCat(b.block));
    weights.push_back(absl::StrFormat("%.3f", b.weight));
    layers.push_back(b.end_layer - b.begin_layer == 1
                         ? absl::StrCat(b.begin_layer)
                         : absl::StrCat(b.begin_layer, "-", b.end_layer - 1));
  }
  std::printf("blocks [%s] of %d (%s)\n", absl::StrJoin(blocks, ", ").c_str(), p->num_blocks,
              p->balance ? "what serving runs now, with the load tolls of now"
                         : "what serving runs: no load tolls (the coordinator has no --balance)");
  std::printf("weights [%s]\n", absl::StrJoin(weights, ", ").c_str());
  std::printf("layers [%s]\n", absl::StrJoin(layers, ", ").c_str());
  std::printf("expected KL %.6f nats/token\n", p->expected_kl);
  std::printf("toll-free blocks [%s], expected KL %.6f nats/token\n",
              absl::StrJoin(p->toll_free_blocks, ", ").c_str(), p->toll_free_expected_kl);
  std::printf("prompt %zu tokens\n", p->prompt_ids.size());
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(predict, "predict", PredictCommand, PredictFlags);

}  // namespace swarm::cli
