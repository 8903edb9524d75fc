// Quality of the quantized weight formats (common/weight_format.h), the figures docs/quality.md
// quotes: for each model, KL(f32 ‖ quantized) and top-1 agreement of every position of its
// Hugging Face golden sequences (against the golden f32 logits); for stories260K also on
// continuations the f32 model samples from BOS (T = 1, fixed seeds), teacher-forced through both,
// with the perplexity ratio exp(mean NLL_quantized − mean NLL_f32) of those continuations (the
// f32 model's own generations), and the first greedy divergence from BOS.
//
// bf16 weights are listed beside them as a reference for what 8 bits of mantissa do.
//
//   quant_bench [--shared ../shared] [--formats bf16,q8,q4] [--continuations 64] [--tokens 64]
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/lock_checks.h"
#include "common/weight_format.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "model/sampler.h"
#include "model/weights.h"

namespace {

using swarm::WeightFormat;
using swarm::WeightQuant;
using swarm::model::Engine;

struct Stats {
  double kl = 0, top1 = 0, nll_ref = 0, nll_got = 0;
  int64_t n = 0;
  void Add(const float* p, const float* q, int64_t V, int64_t next) {
    double mp = p[0], mq = q[0];
    int64_t ap = 0, aq = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (p[v] > mp) mp = p[v], ap = v;
      if (q[v] > mq) mq = q[v], aq = v;
    }
    double zp = 0, zq = 0;
    for (int64_t v = 0; v < V; ++v) {
      zp += std::exp(p[v] - mp);
      zq += std::exp(q[v] - mq);
    }
    const double lzp = std::log(zp) + mp, lzq = std::log(zq) + mq;
    double k = 0;
    for (int64_t v = 0; v < V; ++v) k += std::exp(p[v] - lzp) * ((p[v] - lzp) - (q[v] - lzq));
    kl += k;
    top1 += ap == aq;
    if (next >= 0) {
      nll_ref -= p[next] - lzp;
      nll_got -= q[next] - lzq;
    }
    ++n;
  }
};

std::vector<float> Floats(const swarm::model::SafetensorsFile& f, const std::string& key) {
  auto v = f.Get(key);
  if (!v.ok()) return {};
  const float* p = reinterpret_cast<const float*>(v->data);
  return std::vector<float>(p, p + v->NumElements());
}
std::vector<int64_t> Ids(const swarm::model::SafetensorsFile& f, const std::string& key) {
  auto v = f.Get(key);
  if (!v.ok()) return {};
  const int64_t* p = reinterpret_cast<const int64_t*>(v->data);
  return std::vector<int64_t>(p, p + v->NumElements());
}

std::unique_ptr<Engine> Open(const std::string& dir, const WeightFormat& f) {
  swarm::model::LoadOptions o;
  o.dtype = f.dtype;
  o.quant = f.quant;
  auto e = Engine::Create(dir, o);
  if (!e.ok()) {
    std::fprintf(stderr, "quant_bench: %s: %s\n", dir.c_str(),
                 std::string(e.status().message()).c_str());
    return nullptr;
  }
  return *std::move(e);
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  std::string shared = "../shared";
  std::vector<WeightFormat> formats = {{swarm::DType::kBF16, WeightQuant::kNone},
                                       {swarm::DType::kF32, WeightQuant::kQ8},
                                       {swarm::DType::kF32, WeightQuant::kQ4}};
  int continuations = 64, tokens = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--shared") {
      shared = next();
    } else if (a == "--formats") {
      formats.clear();
      for (absl::string_view v : absl::StrSplit(next(), ',')) {
        auto f = swarm::ParseWeightFormat(v);
        if (!f.ok()) {
          std::fprintf(stderr, "quant_bench: %s\n", std::string(f.status().message()).c_str());
          return 2;
        }
        formats.push_back(*f);
      }
    } else if (a == "--continuations") {
      continuations = std::atoi(next().c_str());
    } else if (a == "--tokens") {
      tokens = std::atoi(next().c_str());
    } else {
      std::fprintf(stderr, "quant_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  struct Model {
    std::string name, dir, golden;
    std::vector<std::string> sequences;
  };
  const std::string g = shared + "/fixtures/golden/";
  const std::vector<Model> models = {
      {"stories260K", shared + "/models/stories260K", g + "stories260K", {"greedy", "prompt"}},
      {"stories-distill-12L",
       shared + "/models/stories-distill-12L",
       shared + "/models/stories-distill-12L",
       {"long"}},
      {"llama-gqa", shared + "/fixtures/hf-random/llama-gqa", g + "llama-gqa", {"long", "short"}},
      {"qwen2", shared + "/fixtures/hf-random/qwen2", g + "qwen2", {"long", "short"}},
      {"mistral-swa",
       shared + "/fixtures/hf-random/mistral-swa",
       g + "mistral-swa",
       {"long", "short"}},
      {"gpt2", shared + "/fixtures/hf-random/gpt2", g + "gpt2", {"long", "short"}},
  };
  std::printf("golden sequences (all positions, against Hugging Face's f32 logits)\n");
  std::printf("| model | format | positions | mean KL (nats) | top-1 agreement |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  for (const Model& m : models) {
    auto golden = swarm::model::SafetensorsFile::Open(m.golden + "/golden.safetensors");
    if (!golden.ok()) {
      std::fprintf(stderr, "quant_bench: %s\n", std::string(golden.status().message()).c_str());
      return 1;
    }
    for (const WeightFormat& q : formats) {
      auto engine = Open(m.dir, q);
      if (!engine) return 1;
      const int64_t V = engine->config().vocab_size;
      Stats s;
      for (const std::string& seq : m.sequences) {
        auto logits = engine->Logits(Ids(**golden, seq + ".input_ids"));
        if (!logits.ok()) return 1;
        const std::vector<float> got = logits->ToFloats();
        const std::vector<float> ref = Floats(**golden, seq + ".logits");
        for (size_t t = 0; t * V < ref.size(); ++t) s.Add(&ref[t * V], &got[t * V], V, -1);
      }
      std::printf("| %s | %s | %lld | %.6f | %.4f |\n", m.name.c_str(), swarm::WeightFormatName(q),
                  static_cast<long long>(s.n), s.kl / s.n, s.top1 / s.n);
    }
  }

  // stories260K: the f32 model's own sampled continuations from BOS, teacher-forced.
  const std::string dir = shared + "/models/stories260K";
  auto f32 = Open(dir, WeightFormat{});
  if (!f32) return 1;
  const int64_t V = f32->config().vocab_size;
  std::vector<std::vector<int64_t>> seqs;
  for (int c = 0; c < continuations; ++c) {
    swarm::model::SamplingParams p;
    p.max_new_tokens = tokens;
    p.temperature = 1.0f;
    p.seed = 1000 + c;
    p.stop_at_eos = false;
    auto r = f32->Generate({1}, p);
    if (!r.ok()) return 1;
    std::vector<int64_t> ids = {1};
    ids.insert(ids.end(), r->ids.begin(), r->ids.end());
    seqs.push_back(ids);
  }
  std::printf(
      "\nstories260K: %d continuations of %d tokens sampled from BOS by the f32 model (T = 1, "
      "seeds 1000..), teacher-forced\n",
      continuations, tokens);
  std::printf(
      "| format | tokens | mean KL (nats) | top-1 agreement | perplexity ratio | greedy from BOS: "
      "first divergence |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  swarm::model::SamplingParams greedy;
  greedy.max_new_tokens = 200;
  greedy.stop_at_eos = false;
  auto ref_greedy = f32->Generate({1}, greedy);
  if (!ref_greedy.ok()) return 1;
  for (const WeightFormat& q : formats) {
    auto engine = Open(dir, q);
    if (!engine) return 1;
    Stats s;
    for (const std::vector<int64_t>& ids : seqs) {
      auto a = f32->Logits(ids);
      auto b = engine->Logits(ids);
      if (!a.ok() || !b.ok()) return 1;
      const std::vector<float> ra = a->ToFloats(), rb = b->ToFloats();
      // Position t predicts ids[t + 1]: the generated tokens only (not BOS).
      for (size_t t = 0; t + 1 < ids.size(); ++t) s.Add(&ra[t * V], &rb[t * V], V, ids[t + 1]);
    }
    auto got = engine->Generate({1}, greedy);
    if (!got.ok()) return 1;
    size_t same = 0;
    while (same < got->ids.size() && same < ref_greedy->ids.size() &&
           got->ids[same] == ref_greedy->ids[same])
      ++same;
    std::printf("| %s | %lld | %.6f | %.4f | %.5f | %s |\n", swarm::WeightFormatName(q),
                static_cast<long long>(s.n), s.kl / s.n, s.top1 / s.n,
                std::exp((s.nll_got - s.nll_ref) / s.n),
                same == got->ids.size() ? ("none in " + std::to_string(same)).c_str()
                                        : ("token " + std::to_string(same)).c_str());
  }
  return 0;
}
