// `swarm run` (generate in-process) and `swarm logits` (full-forward logits to safetensors).
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "client/cli/sampling_flags.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace swarm::cli {
namespace {

// --model, --device and --dtype, declared once for both commands.
void AddEngineFlags(FlagSet& f) {
  f.Required("model", "DIR", "the model directory (config.json, safetensors, tokenizer.json)")
      .Value("device", "cpu|cuda:N", "cpu", "where the layers run")
      .Value("dtype", "f32|bf16|f16", "f32", "compute and storage dtype of the weights");
}

const FlagSet& RunFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm run", "generate in-process with the whole model (no servers)");
    AddEngineFlags(f);
    f.Value("prompt", "TEXT", "", "the prompt text (needs tokenizer.json)")
        .Value("ids", "1,2,3", "", "the prompt as token ids");
    AddSamplingFlags(f);
    f.Bool("json", "print one JSON object {prompt_ids, ids, text, finish_reason}")
        .Note("Give exactly one of --prompt or --ids.");
    return f;
  }();
  return flags;
}

const FlagSet& LogitsFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm logits",
              "full-forward logits of a prompt, written as F32 [T, vocab] \"logits\"");
    AddEngineFlags(f);
    f.Required("ids", "1,2,3", "the prompt as token ids")
        .Required("out", "FILE.safetensors", "where to write the logits");
    return f;
  }();
  return flags;
}

absl::StatusOr<model::SamplingParams> ParseSamplingFlags(const Flags& flags) {
  ASSIGN_OR_RETURN(SamplingFlagValues v, ReadSamplingFlags(flags));
  model::SamplingParams p;
  p.max_new_tokens = v.max_new_tokens;
  p.temperature = v.temperature;
  p.top_p = v.top_p;
  p.top_k = v.top_k;
  p.seed = v.seed;
  p.stop_at_eos = v.stop_at_eos;
  p.stop = v.stop;
  p.logprobs = v.logprobs;
  p.top_logprobs = v.top_logprobs;
  RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::StatusOr<std::unique_ptr<model::Engine>> OpenEngine(const Flags& flags) {
  auto dir = flags.Required("model");
  if (!dir.ok()) return dir.status();
  model::LoadOptions options;
  options.device = flags.String("device");
  auto dtype = ParseDType(flags.String("dtype"));
  if (!dtype.ok()) return dtype.status();
  options.dtype = *dtype;
  return model::Engine::Create(*dir, options);
}

int RunCommand(const std::vector<std::string>& args) {
  auto flags = RunFlags().Parse(args);
  if (!flags.ok()) return Fail("run", flags.status());
  auto params = ParseSamplingFlags(*flags);
  if (!params.ok()) return Fail("run", params.status());
  if (flags->Has("prompt") == flags->Has("ids")) {
    return Fail("run", absl::InvalidArgumentError("give exactly one of --prompt or --ids"));
  }
  auto engine = OpenEngine(*flags);
  if (!engine.ok()) return Fail("run", engine.status());
  std::vector<int64_t> prompt;
  if (flags->Has("ids")) {
    auto ids = flags->IntList("ids");
    if (!ids.ok()) return Fail("run", ids.status());
    prompt = *ids;
  } else {
    if ((*engine)->tokenizer() == nullptr) {
      return Fail("run", absl::FailedPreconditionError("--prompt needs a tokenizer.json in the "
                                                       "model directory; use --ids"));
    }
    auto ids = (*engine)->tokenizer()->Encode(flags->String("prompt"), true);
    if (!ids.ok()) return Fail("run", ids.status());
    prompt = *ids;
  }
  const bool json = flags->Bool("json");
  if (!json && flags->Has("prompt")) {
    std::fputs(flags->String("prompt").c_str(), stdout);
    std::fflush(stdout);
  }
  nlohmann::json logprobs = nlohmann::json::array();
  auto result = (*engine)->Generate(prompt, *params, [&](const model::GeneratedToken& t) {
    if (t.has_logprob) logprobs.push_back(TokenLogprobJson(t.chosen, t.top_logprobs));
    if (!json) {
      std::fputs(t.text.c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (!result.ok()) {
    if (!json) std::fputs("\n", stdout);
    return Fail("run", result.status());
  }
  if (json) {
    nlohmann::json out = {{"prompt_ids", prompt},
                          {"ids", result->ids},
                          {"text", result->text},
                          {"finish_reason", result->finish_reason}};
    if (params->logprobs) out["logprobs"] = std::move(logprobs);
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::fputs("\n", stdout);
  }
  return 0;
}

int LogitsCommand(const std::vector<std::string>& args) {
  auto flags = LogitsFlags().Parse(args);
  if (!flags.ok()) return Fail("logits", flags.status());
  auto out = flags->Required("out");
  if (!out.ok()) return Fail("logits", out.status());
  auto ids = flags->IntList("ids");
  if (!ids.ok()) return Fail("logits", ids.status());
  if (ids->empty()) return Fail("logits", absl::InvalidArgumentError("--ids is required"));
  auto engine = OpenEngine(*flags);
  if (!engine.ok()) return Fail("logits", engine.status());
  auto logits = (*engine)->Logits(*ids);
  if (!logits.ok()) return Fail("logits", logits.status());
  model::TensorToWrite t{"logits", model::StDType::kF32, logits->shape, std::move(logits->data)};
  absl::Status s = model::WriteSafetensors(*out, {t});
  if (!s.ok()) return Fail("logits", s);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(run, "run", RunCommand, RunFlags);
SWARM_REGISTER_COMMAND_FLAGS(logits, "logits", LogitsCommand, LogitsFlags);

}  // namespace swarm::cli
