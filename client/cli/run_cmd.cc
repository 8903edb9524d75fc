// `swarm run` (generate in-process) and `swarm logits` (full-forward logits to safetensors).
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/command.h"
#include "client/cli/sampling_flags.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "common/weight_format.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace swarm::cli {
namespace {

// --model, --device and --dtype, declared once for both commands.
void AddEngineFlags(FlagSet& f) {
  f.Required("model", "DIR", "the model directory (config.json, safetensors, tokenizer.json)")
      .Value("device", "cpu|cuda:N", "cpu", "where the layers run")
      .Value("dtype", "f32|bf16|f16|q8|q4", "f32",
             "compute and storage dtype of the weights; q8/q4: the linear weights quantized "
             "(compute in f32)");
}

const FlagSet& RunFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm run", "generate in-process with the whole model (no servers)");
    AddEngineFlags(f);
    f.Value("prompt", "TEXT", "", "the prompt text (needs tokenizer.json)")
        .Value("ids", "1,2,3", "", "the prompt as token ids")
        .Value("prompts-file", "FILE", "",
               "many prompts at once, one per line, batched (continuous batching in-process)")
        .Value("max-batch-tokens", "N", "512", "with --prompts-file: rows in one step")
        .Value("max-batch-sequences", "N", "64", "with --prompts-file: sequences in one step");
    AddSamplingFlags(f);
    f.Bool("json", "print one JSON object {prompt_ids, ids, text, finish_reason}")
        .Note("Give exactly one of --prompt, --ids or --prompts-file.");
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
  auto format = ParseWeightFormat(flags.String("dtype"));
  if (!format.ok()) return format.status();
  options.dtype = format->dtype;
  options.quant = format->quant;
  return model::Engine::Create(*dir, options);
}

constexpr int64_t kMaxPromptsFileBytes = int64_t{16} << 20;

// The prompts of --prompts-file: one per line (a trailing '\r' is dropped), none empty.
absl::StatusOr<std::vector<std::string>> ReadPrompts(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--prompts-file '", path, "': cannot open"));
  std::string text(kMaxPromptsFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (static_cast<int64_t>(text.size()) > kMaxPromptsFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat("--prompts-file '", path, "': larger than ",
                                                   kMaxPromptsFileBytes >> 20, " MiB"));
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  std::vector<std::string> prompts;
  if (text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--prompts-file '", path, "': no prompt"));
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::ConsumeSuffix(&line, "\r");
    if (line.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prompts-file '", path, "' line ", prompts.size() + 1, ": empty prompt"));
    }
    prompts.emplace_back(line);
  }
  return prompts;
}

// `swarm run --prompts-file FILE`: every prompt at once through Engine::GenerateBatch (continuous
// batching in one process); the results in input order, each as `swarm run` prints it for that
// prompt alone (--json: one object per line; text: prompt and completion, a blank line between).
int RunPromptsFile(const Flags& flags, const model::SamplingParams& params) {
  model::BatchLimits limits;
  auto max_tokens = flags.Int("max-batch-tokens", limits.max_batch_tokens);
  if (!max_tokens.ok()) return Fail("run", max_tokens.status());
  auto max_sequences = flags.Int("max-batch-sequences", limits.max_batch_sequences);
  if (!max_sequences.ok()) return Fail("run", max_sequences.status());
  if (*max_tokens < 1 || *max_sequences < 1 || *max_sequences > (int64_t{1} << 20)) {
    return Fail("run", absl::InvalidArgumentError(absl::StrCat(
                           "--max-batch-tokens (", *max_tokens, ") and --max-batch-sequences (",
                           *max_sequences,
                           ") must be at least 1 (--max-batch-sequences at most 1048576)")));
  }
  limits.max_batch_tokens = *max_tokens;
  limits.max_batch_sequences = static_cast<int>(*max_sequences);
  const std::string path = flags.String("prompts-file");
  auto prompts = ReadPrompts(path);
  if (!prompts.ok()) return Fail("run", prompts.status());
  auto engine = OpenEngine(flags);
  if (!engine.ok()) return Fail("run", engine.status());
  if ((*engine)->tokenizer() == nullptr) {
    return Fail("run", absl::FailedPreconditionError(
                           "--prompts-file needs a tokenizer.json in the model directory"));
  }
  std::vector<model::BatchedRequest> requests;
  for (size_t i = 0; i < prompts->size(); ++i) {
    auto ids = (*engine)->tokenizer()->Encode((*prompts)[i], true);
    if (!ids.ok()) {
      return Fail("run", absl::Status(ids.status().code(),
                                      absl::StrCat("--prompts-file '", path, "' line ", i + 1, ": ",
                                                   ids.status().message())));
    }
    model::BatchedRequest r;
    r.prompt_ids = *std::move(ids);
    r.params = params;
    requests.push_back(std::move(r));
  }
  std::vector<std::vector<int64_t>> prompt_ids;
  for (const model::BatchedRequest& r : requests) prompt_ids.push_back(r.prompt_ids);
  const std::vector<absl::StatusOr<model::GenerateResult>> results =
      (*engine)->GenerateBatch(std::move(requests), limits);
  const bool json = flags.Bool("json");
  int failed = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const absl::StatusOr<model::GenerateResult>& r = results[i];
    if (!r.ok()) {
      ++failed;
      const std::string why = absl::StrCat("line ", i + 1, ": ", r.status().ToString());
      if (json) {
        nlohmann::json out = {{"line", i + 1}, {"error", r.status().ToString()}};
        std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      }
      std::fprintf(stderr, "run: %s\n", why.c_str());
      continue;
    }
    if (json) {
      nlohmann::json out = {{"prompt_ids", prompt_ids[i]},
                            {"ids", r->ids},
                            {"text", r->text},
                            {"finish_reason", r->finish_reason}};
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      std::cout << (i > 0 ? "\n" : "") << (*prompts)[i] << r->text << "\n";
    }
  }
  std::cout.flush();
  if (failed > 0) {
    std::fprintf(stderr, "run: %d of %zu prompts failed\n", failed, results.size());
    return 1;
  }
  return 0;
}

int RunCommand(const std::vector<std::string>& args) {
  auto flags = RunFlags().Parse(args);
  if (!flags.ok()) return Fail("run", flags.status());
  auto params = ParseSamplingFlags(*flags);
  if (!params.ok()) return Fail("run", params.status());
  const int inputs = flags->Has("prompt") + flags->Has("ids") + flags->Has("prompts-file");
  if (inputs != 1) {
    return Fail(
        "run", absl::InvalidArgumentError("give exactly one of --prompt, --ids or --prompts-file"));
  }
  if (flags->Has("prompts-file")) return RunPromptsFile(*flags, *params);
  if (flags->Has("max-batch-tokens") || flags->Has("max-batch-sequences")) {
    return Fail("run", absl::InvalidArgumentError(
                           "--max-batch-tokens and --max-batch-sequences need --prompts-file"));
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
