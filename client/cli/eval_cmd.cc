// `swarm eval`: the quality table of sparse routing on a test set disjoint from calibration
// (router/calibration/evaluate.h).
#include <chrono>
#include <cstdio>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "common/progress.h"
#include "model/generate.h"
#include "router/calibration/evaluate.h"
#include "router/calibration/probe.h"
#include "router/router.h"

namespace swarm::cli {
namespace {

absl::Status Eval(const Flags& flags) {
  auto dir = flags.Required("model");
  if (!dir.ok()) return dir.status();
  auto path = flags.Required("router");
  if (!path.ok()) return path.status();
  auto ks = flags.IntList("top-k-blocks");
  if (!ks.ok()) return ks.status();
  auto count = flags.Int("num-prompts");
  auto seed = flags.Int("seed");
  auto greedy = flags.Int("greedy-tokens");
  auto bootstrap = flags.Int("bootstrap");
  for (const absl::Status& s :
       {count.status(), seed.status(), greedy.status(), bootstrap.status()}) {
    if (!s.ok()) return s;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto engine = model::Engine::Create(*dir);
  if (!engine.ok()) return engine.status();
  router::RouterOptions ro;
  ro.allow_block0_feature = true;  // Evaluation runs block 0 itself for such a file.
  if (flags.Has("num-blocks")) {
    auto n = flags.Int("num-blocks", 0);
    if (!n.ok()) return n.status();
    ro.expected_num_blocks = static_cast<int>(*n);
  }
  auto router = router::Router::Load(*path, (*engine)->checkpoint(), ro);
  if (!router.ok()) return router.status();
  router::EvalOptions options;
  if (!flags.Has("top-k-blocks")) {
    // Default: the k the file was calibrated for (files without the note: every k).
    auto it = (*router)->data().notes.find("calibrated_k");
    std::vector<int64_t> calibrated;
    if (it != (*router)->data().notes.end()) {
      for (absl::string_view part : absl::StrSplit(it->second, ',', absl::SkipEmpty())) {
        int64_t k;
        if (absl::SimpleAtoi(part, &k) && k > PopCount((*router)->keep_mask()) &&
            k < (*router)->num_blocks()) {
          calibrated.push_back(k);
        }
      }
    }
    *ks = calibrated;
  }
  for (int64_t k : *ks) {
    absl::Status valid =
        ValidateTopK(static_cast<int>(k), (*router)->num_blocks(), (*router)->keep_mask());
    if (!valid.ok()) return valid;
    options.top_ks.push_back(static_cast<int>(k));
  }
  options.greedy_tokens = static_cast<int>(*greedy);
  options.bootstrap_samples = static_cast<int>(*bootstrap);
  options.seed = static_cast<uint64_t>(*seed);
  options.balance = !flags.Bool("no-balance");
  auto oracle_subsets = flags.Int("max-oracle-subsets");
  auto ngram = flags.Int("ngram");
  auto max_overlap = flags.Double("max-ngram-overlap");
  for (const absl::Status& s : {oracle_subsets.status(), ngram.status(), max_overlap.status()}) {
    if (!s.ok()) return s;
  }
  if (*ngram < 1)
    return absl::InvalidArgumentError(absl::StrCat("--ngram must be >= 1, got ", *ngram));
  options.max_oracle_subsets = static_cast<int>(*oracle_subsets);
  router::OverlapOptions overlap;
  overlap.ngram = static_cast<int>(*ngram);
  overlap.max_overlap = *max_overlap;
  options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  LazyProgress progress("evaluating", "prompts");
  options.progress = [&](int done, int total) { progress.Report(done, total); };

  const auto& notes = (*router)->data().notes;
  router::SampleOptions so;
  so.count = static_cast<int>(*count);
  so.seed = options.seed;
  so.stream = 2;  // Calibration draws from stream 1.
  so.continuation_tokens =
      (*router)->data().continuation_tokens > 0 ? (*router)->data().continuation_tokens : 16;
  {
    // Default: the calibration's continuation temperature.
    auto it = notes.find("continuation_temperature");
    double t = 1.0;
    if (it != notes.end() && !absl::SimpleAtod(it->second, &t)) t = 1.0;
    auto ct = flags.Double("continuation-temperature", t);
    if (!ct.ok()) return ct.status();
    so.continuation_temperature = static_cast<float>(*ct);
  }
  options.continuation_temperature = so.continuation_temperature;
  {
    auto m = flags.Int("ceiling-continuations", so.continuation_temperature > 0 ? 4 : 0);
    if (!m.ok()) return m.status();
    options.ceiling_continuations = static_cast<int>(*m);
  }
  if (flags.Has("continuation")) {
    auto c = flags.Int("continuation", 16);
    if (!c.ok()) return c.status();
    so.continuation_tokens = static_cast<int>(*c);
  }
  // Test prompts are drawn like the calibration prompts unless told otherwise.
  auto note_int = [&](const char* key, int64_t fallback) {
    auto it = notes.find(key);
    int64_t v;
    return it != notes.end() && absl::SimpleAtoi(it->second, &v) ? v : fallback;
  };
  auto min_len = flags.Int("min-prompt-tokens", note_int("min_prompt_tokens", 8));
  auto max_len = flags.Int("max-prompt-tokens", note_int("max_prompt_tokens", 32));
  if (!min_len.ok()) return min_len.status();
  if (!max_len.ok()) return max_len.status();
  so.min_prompt_tokens = static_cast<int>(*min_len);
  so.max_prompt_tokens = static_cast<int>(*max_len);
  absl::StatusOr<std::vector<router::Sample>> samples;
  if (flags.Has("prompts")) {
    auto lines = router::ReadPromptLines(flags.String("prompts"));
    if (!lines.ok()) return lines.status();
    if (flags.Has("num-prompts") && static_cast<int64_t>(lines->size()) > *count) {
      lines->resize(*count);
    }
    samples = router::SamplesFromTexts(**engine, *lines, so);
  } else {
    samples = router::SampleFromModel(**engine, so);
  }
  if (!samples.ok()) return samples.status();
  int dropped = 0, near = 0;
  std::vector<router::Sample> test =
      router::DisjointFromCalibration(**router, std::move(*samples), &dropped, overlap, &near);
  if ((*router)->data().prompt_offsets.empty() && overlap.max_overlap <= 1) {
    std::fprintf(stderr,
                 "the router file does not hold its calibration prompts (written before "
                 "near-duplicate checks): only exact repeats are dropped\n");
  }
  auto report = router::Evaluate(**engine, **router, test, options);
  if (!report.ok()) return report.status();
  report->dropped_overlap = dropped;
  report->dropped_near = near;
  report->overlap = overlap;
  report->test_source = flags.Has("prompts") ? flags.String("prompts") : "sampled";
  std::fputs(router::FormatReport(*report).c_str(), stdout);
  std::printf("\n(evaluated in %.1f s)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return absl::OkStatus();
}

const FlagSet& EvalFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm eval",
              "the quality cost of sparse serving on held-out prompts: KL to the exact model, "
              "top-1 agreement, perplexity ratio");
    f.Required("model", "DIR", "the model directory")
        .Required("router", "FILE", "the router file (swarm calibrate)")
        .Value("top-k-blocks", "K[,K...]", "",
               "the k to evaluate (default: those the router file was calibrated for)")
        .Value("num-blocks", "N", "", "refuse a router calibrated for another block count")
        .Value("num-prompts", "P", "512", "test prompts")
        .Value("prompts", "FILE", "", "test prompts, one per line (default: sampled)")
        .Value("seed", "S", "1", "random seed of the sampling")
        .Value("greedy-tokens", "G", "32", "greedy tokens compared per prompt")
        .Value("bootstrap", "B", "2000", "bootstrap samples of the confidence intervals")
        .Value("continuation", "T", "", "continuation tokens (default: the calibration's)")
        .Value("continuation-temperature", "T", "",
               "temperature of the continuations (default: the calibration's)")
        .Value("ceiling-continuations", "M", "",
               "continuations of the noise ceiling (default: 4, or 0 when greedy)")
        .Value("min-prompt-tokens", "N", "", "shortest sampled prompt (default: the calibration's)")
        .Value("max-prompt-tokens", "N", "", "longest sampled prompt (default: the calibration's)")
        .Value("max-oracle-subsets", "M", "64",
               "enumerate every admissible subset (oracle, prompt ceiling) up to this many; "
               "beyond, the router file's measured candidates")
        .Value("ngram", "N", "4", "n of the near-duplicate test against calibration prompts")
        .Value("max-ngram-overlap", "X", "0.5",
               "drop test prompts whose n-gram overlap with a calibration prompt reaches X; "
               "above 1 = only exact repeats")
        .Bool("no-balance", "route without the router's load tolls");
    return f;
  }();
  return flags;
}

int EvalCommand(const std::vector<std::string>& args) {
  auto flags = EvalFlags().Parse(args);
  if (!flags.ok()) return Fail("eval", flags.status());
  absl::Status s = Eval(*flags);
  if (!s.ok()) return Fail("eval", s);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(eval, "eval", EvalCommand, EvalFlags);

}  // namespace swarm::cli
