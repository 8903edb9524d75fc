// `swarm calibrate`: measure what skipping blocks costs on a calibration prompt set and write the
// router file (router/calibration/calibrate.h).
#include <chrono>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/command.h"
#include "common/block_layout.h"
#include "common/flags.h"
#include "common/progress.h"
#include "model/generate.h"
#include "router/calibration/calibrate.h"
#include "router/calibration/probe.h"
#include "router/router_file.h"

namespace swarm::cli {
namespace {

absl::StatusOr<int> IntFlag(const Flags& flags, const std::string& name) {
  auto v = flags.Int(name);
  if (!v.ok()) return v.status();
  return static_cast<int>(*v);
}

absl::Status Calibrate(const Flags& flags) {
  auto dir = flags.Required("model");
  if (!dir.ok()) return dir.status();
  auto out = flags.Required("out");
  if (!out.ok()) return out.status();
  if (!flags.Has("num-blocks")) {
    return absl::InvalidArgumentError("missing required flag --num-blocks");
  }
  router::CalibrationOptions options;
  auto n = IntFlag(flags, "num-blocks");
  auto ks = flags.IntList("top-k-blocks");
  if (!ks.ok()) return ks.status();
  auto count = IntFlag(flags, "num-prompts");
  auto seed = flags.Int("seed");
  auto cont = IntFlag(flags, "continuation");
  auto min_len = IntFlag(flags, "min-prompt-tokens");
  auto max_len = IntFlag(flags, "max-prompt-tokens");
  auto neighbours = IntFlag(flags, "neighbours");
  auto rank = IntFlag(flags, "pca-rank");
  auto epochs = IntFlag(flags, "gate-epochs");
  auto max_subsets = IntFlag(flags, "max-subsets");
  auto beam = IntFlag(flags, "search-beam");
  auto search_prompts = IntFlag(flags, "search-prompts");
  for (const absl::Status& s :
       {n.status(), beam.status(), search_prompts.status(), count.status(), seed.status(),
        cont.status(), min_len.status(), max_len.status(), neighbours.status(), rank.status(),
        epochs.status(), max_subsets.status()}) {
    if (!s.ok()) return s;
  }
  for (int64_t k : *ks) {
    if (k == 0 && ks->size() == 1) break;  // 0 = every k.
    if (k < 1) {
      return absl::InvalidArgumentError(absl::StrCat("top-k-blocks must be at least 1, got ", k));
    }
    options.top_ks.push_back(static_cast<int>(k));
  }
  options.num_blocks = *n;
  options.search_beam = *beam;
  options.search_prompts = *search_prompts;
  options.feature = flags.String("feature");
  options.neighbours = *neighbours;
  options.pca_rank = *rank;
  options.fit_gate = flags.Bool("fit-gate");
  options.gate.epochs = *epochs;
  options.max_subsets_per_k = *max_subsets;
  options.seed = static_cast<uint64_t>(*seed);
  auto keep = ParseKeepList(flags.String("keep-blocks"), &options.default_keep);
  if (!keep.ok()) return keep.status();
  options.keep_blocks = *keep;
  options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  LazyProgress progress("measuring", "prompts");
  options.progress = [&](int done, int total) { progress.Report(done, total); };

  auto t0 = std::chrono::steady_clock::now();
  auto engine = model::Engine::Create(*dir);
  if (!engine.ok()) return engine.status();
  // Validate N and k before spending time on sampling.
  auto layout = BlockLayout::Create(static_cast<int>((*engine)->config().num_layers), *n);
  if (!layout.ok()) return layout.status();

  router::SampleOptions so;
  so.count = *count;
  so.seed = options.seed;
  so.stream = 1;
  so.min_prompt_tokens = *min_len;
  so.max_prompt_tokens = *max_len;
  so.continuation_tokens = *cont;
  auto ctemp = flags.Double("continuation-temperature");
  if (!ctemp.ok()) return ctemp.status();
  if (*ctemp < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--continuation-temperature must be >= 0, got ", *ctemp));
  }
  so.continuation_temperature = static_cast<float>(*ctemp);
  absl::StatusOr<std::vector<router::Sample>> samples;
  if (flags.Has("prompts")) {
    auto lines = router::ReadPromptLines(flags.String("prompts"));
    if (!lines.ok()) return lines.status();
    if (flags.Has("num-prompts") && static_cast<int>(lines->size()) > *count) {
      lines->resize(*count);
    }
    options.prompt_source = flags.String("prompts");
    samples = router::SamplesFromTexts(**engine, *lines, so);
  } else {
    options.prompt_source = "sampled";
    samples = router::SampleFromModel(**engine, so);
  }
  if (!samples.ok()) return samples.status();
  std::fprintf(stderr, "%zu calibration prompts (%s, seed %llu)\n", samples->size(),
               options.prompt_source.c_str(), static_cast<unsigned long long>(options.seed));

  router::CalibrationReport report;
  auto data = router::Calibrate(**engine, *samples, options, &report);
  if (!data.ok()) return data.status();
  data->notes["model_dir"] = *dir;
  data->notes["continuation_temperature"] = absl::StrCat(so.continuation_temperature);
  data->notes["min_prompt_tokens"] = absl::StrCat(so.min_prompt_tokens);
  data->notes["max_prompt_tokens"] = absl::StrCat(so.max_prompt_tokens);
  absl::Status saved = router::SaveRouterData(*out, *data);
  if (!saved.ok()) return saved;
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %s: %d prompts, N=%d, kept %s, %d subsets measured, gate %s, %.1f s\n",
              out->c_str(), report.num_prompts, data->num_blocks, FormatMask(data->keep).c_str(),
              report.num_subsets, data->gate.has_value() ? "yes" : "no", seconds);
  if (report.search_seconds > 0) {
    std::printf("strongest-static search: %.1f s of the %.1f s of measuring\n",
                report.search_seconds, report.measure_seconds);
  }
  for (const auto& [kind, loo] : report.feature_loo) {
    for (const router::LooSummary& s : loo) {
      std::string what = s.additive     ? " (additive skip damages)"
                         : s.enumerated ? ""
                                        : absl::StrCat(" (", s.candidates, " measured candidates)");
      std::printf(
          "%s feature, k=%d%s: leave-one-out mean KL: best static %.4f, neighbours %.4f, router "
          "(β=%.1f) %.4f, oracle %.4f; neighbour damage correlation %+.3f\n",
          kind.c_str(), s.top_k, what.c_str(), s.static_kl, s.neighbours_only_kl, s.blend,
          s.router_kl, s.oracle_kl, s.correlation);
    }
  }
  std::printf("feature written: %s\n", report.feature.c_str());
  return absl::OkStatus();
}

const FlagSet& CalibrateFlags() {
  static const FlagSet flags = [] {
    FlagSet f(
        "swarm calibrate",
        "measure what skipping blocks costs on calibration prompts and write the router file");
    f.Required("model", "DIR", "the model directory")
        .Required("num-blocks", "N", "blocks the layers are split into")
        .Required("out", "FILE", "the router file to write (router.safetensors)")
        .Value("top-k-blocks", "K[,K...]", "0", "blocks a request runs; 0 = measure every k")
        .Value("prompts", "FILE", "",
               "calibration prompts, one per line (default: sampled from "
               "the model)")
        .Value("num-prompts", "P", "1024", "calibration prompts to use")
        .Value("seed", "S", "1", "random seed of the sampling")
        .Value("continuation", "T", "16", "tokens of continuation measured per prompt")
        .Value("continuation-temperature", "T", "1", "temperature of the sampled continuations")
        .Value("min-prompt-tokens", "N", "8", "shortest sampled prompt")
        .Value("max-prompt-tokens", "N", "32", "longest sampled prompt")
        .Value("keep-blocks", "0,-1|none", "",
               "blocks every request runs (default: the first and the last)")
        .Value("neighbours", "N", absl::StrCat(router::kDefaultNeighbours),
               "nearest calibration prompts the router blends")
        .Value("pca-rank", "R", "16", "rank of the router's prompt features")
        .Value("gate-epochs", "E", "400", "epochs of the gate fit (with --fit-gate)")
        .Value("max-subsets", "M", "128",
               "block subsets enumerated per k at most; beyond, measured candidates")
        .Value("search-beam", "B", "4",
               "beam width of the strongest-static search where a k is not enumerated; 0 = off "
               "(additive skip damages only)")
        .Value("search-prompts", "P", "64", "calibration prompts scoring each search step")
        .Value("feature", "embedding|block0|auto", "embedding",
               "the router's prompt feature: the embedding mean (what serving computes), block "
               "0's output, or the better of the two by leave-one-out")
        .Bool("fit-gate", "fit per-block gate weights g");
    return f;
  }();
  return flags;
}

int CalibrateCommand(const std::vector<std::string>& args) {
  auto flags = CalibrateFlags().Parse(args);
  if (!flags.ok()) return Fail("calibrate", flags.status());
  absl::Status s = Calibrate(*flags);
  if (!s.ok()) return Fail("calibrate", s);
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(calibrate, "calibrate", CalibrateCommand, CalibrateFlags);

}  // namespace swarm::cli
