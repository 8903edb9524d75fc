#include "router/router_file.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "model/safetensors.h"

namespace swarm::router {
namespace {

using model::StDType;
using model::TensorToWrite;

TensorToWrite F32(const std::string& name, std::vector<int64_t> shape,
                  const std::vector<float>& v) {
  TensorToWrite t;
  t.name = name;
  t.dtype = StDType::kF32;
  t.shape = std::move(shape);
  t.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  return t;
}

TensorToWrite I64(const std::string& name, std::vector<int64_t> shape,
                  const std::vector<int64_t>& v) {
  TensorToWrite t;
  t.name = name;
  t.dtype = StDType::kI64;
  t.shape = std::move(shape);
  t.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int64_t));
  return t;
}

absl::Status CheckSize(const char* what, size_t got, int64_t want) {
  if (static_cast<int64_t>(got) != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("router data: '", what, "' has ", got, " values, expected ", want));
  }
  return absl::OkStatus();
}

class Reader {
 public:
  explicit Reader(const model::SafetensorsFile& file) : file_(file) {}

  absl::StatusOr<std::vector<float>> F32(const std::string& name,
                                         const std::vector<int64_t>& shape) const {
    ASSIGN_OR_RETURN(model::TensorView v, Get(name, StDType::kF32, shape));
    std::vector<float> out(v.NumElements());
    std::memcpy(out.data(), v.data, v.nbytes);
    return out;
  }
  absl::StatusOr<std::vector<int64_t>> I64(const std::string& name,
                                           const std::vector<int64_t>& shape) const {
    ASSIGN_OR_RETURN(model::TensorView v, Get(name, StDType::kI64, shape));
    std::vector<int64_t> out(v.NumElements());
    std::memcpy(out.data(), v.data, v.nbytes);
    return out;
  }
  // Shape of `name` (for sizes the metadata does not carry).
  absl::StatusOr<std::vector<int64_t>> Shape(const std::string& name) const {
    auto v = file_.Get(name);
    if (!v.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("router file ", file_.path(), ": missing tensor '", name, "'"));
    }
    return v->shape;
  }

 private:
  absl::StatusOr<model::TensorView> Get(const std::string& name, StDType dtype,
                                        const std::vector<int64_t>& shape) const {
    auto v = file_.Get(name);
    if (!v.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("router file ", file_.path(), ": missing tensor '", name, "'"));
    }
    if (v->dtype != dtype || v->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router file ", file_.path(), ": tensor '", name, "' is ", model::StDTypeName(v->dtype),
          " [", absl::StrJoin(v->shape, ","), "], expected ", model::StDTypeName(dtype), " [",
          absl::StrJoin(shape, ","), "]"));
    }
    return *v;
  }
  const model::SafetensorsFile& file_;
};

absl::StatusOr<int64_t> MetaInt(const std::map<std::string, std::string>& meta,
                                const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  int64_t v;
  if (it == meta.end() || !absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router file ", path, ": metadata '", key, "' is missing or not an integer"));
  }
  return v;
}

}  // namespace

std::vector<float> GateWeights::Forward(const float* x) const {
  std::vector<float> h(hidden);
  for (int64_t j = 0; j < hidden; ++j) {
    const float* row = w1.data() + j * in;
    float s = b1[j];
    for (int64_t i = 0; i < in; ++i) s += row[i] * x[i];
    h[j] = s > 0 ? s : 0;
  }
  std::vector<float> out(this->out);
  for (int64_t o = 0; o < this->out; ++o) {
    const float* row = w2.data() + o * hidden;
    float s = b2[o];
    for (int64_t j = 0; j < hidden; ++j) s += row[j] * h[j];
    out[o] = s;
  }
  return out;
}

absl::Status RouterData::Validate() const {
  if (num_blocks < 1 || num_blocks > kMaxBlocks) {
    return absl::InvalidArgumentError(absl::StrCat("router data: num_blocks ", num_blocks));
  }
  if (num_prompts < 1) {
    return absl::InvalidArgumentError("router data: no calibration prompts");
  }
  const int64_t P = num_prompts, N = num_blocks, S = num_subsets();
  RETURN_IF_ERROR(CheckSize("feature_mean", space.mean.size(), space.dim));
  RETURN_IF_ERROR(CheckSize("feature_basis", space.basis.size(), space.rank * space.dim));
  RETURN_IF_ERROR(CheckSize("features", features.size(), P * space.rank));
  RETURN_IF_ERROR(CheckSize("subset_damage", subset_damage.size(), P * S));
  RETURN_IF_ERROR(CheckSize("skip_damage", skip_damage.size(), P * N));
  RETURN_IF_ERROR(CheckSize("subset_prior", subset_prior.size(), S));
  RETURN_IF_ERROR(CheckSize("skip_prior", skip_prior.size(), N));
  RETURN_IF_ERROR(CheckSize("blend", blend.size(), N + 1));
  RETURN_IF_ERROR(CheckSize("damage_scale", damage_scale.size(), N + 2));
  RETURN_IF_ERROR(CheckSize("prompt_hashes", prompt_hashes.size(), P));
  if (keep & ~FullMask(num_blocks)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router data: kept blocks ", FormatMask(keep), " outside N = ", N));
  }
  for (BlockMask m : subsets) {
    if ((m & ~FullMask(num_blocks)) || (m & keep) != keep) {
      return absl::InvalidArgumentError(absl::StrCat("router data: subset ", FormatMask(m),
                                                     " is not admissible for N = ", N,
                                                     " with kept blocks ", FormatMask(keep)));
    }
  }
  if (feature != kFeatureEmbedding && feature != kFeatureBlock0) {
    return absl::InvalidArgumentError(absl::StrCat("router data: unknown feature '", feature,
                                                   "' (expected embedding or block0)"));
  }
  if (!prompt_offsets.empty()) {
    RETURN_IF_ERROR(CheckSize("prompt_offsets", prompt_offsets.size(), P + 1));
    if (prompt_offsets[0] != 0 || !std::is_sorted(prompt_offsets.begin(), prompt_offsets.end()) ||
        prompt_offsets[P] != static_cast<int64_t>(prompt_ids.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "router data: prompt_offsets do not index the ", prompt_ids.size(), " prompt_ids"));
    }
  } else if (!prompt_ids.empty()) {
    return absl::InvalidArgumentError("router data: prompt_ids without prompt_offsets");
  }
  if (gate.has_value()) {
    const GateWeights& g = *gate;
    if (g.in != space.rank || g.out != S + N) {
      return absl::InvalidArgumentError(absl::StrCat("router data: gate is ", g.in, " -> ", g.out,
                                                     ", expected ", space.rank, " -> ", S + N));
    }
    RETURN_IF_ERROR(CheckSize("gate.w1", g.w1.size(), g.hidden * g.in));
    RETURN_IF_ERROR(CheckSize("gate.b1", g.b1.size(), g.hidden));
    RETURN_IF_ERROR(CheckSize("gate.w2", g.w2.size(), g.out * g.hidden));
    RETURN_IF_ERROR(CheckSize("gate.b2", g.b2.size(), g.out));
    RETURN_IF_ERROR(CheckSize("gate_temperature", gate_temperature.size(), N + 2));
  }
  return absl::OkStatus();
}

absl::Status SaveRouterData(const std::string& path, const RouterData& d) {
  RETURN_IF_ERROR(Annotate(d.Validate(), absl::StrCat("writing ", path)));
  const int64_t P = d.num_prompts, N = d.num_blocks, S = d.num_subsets();
  std::vector<TensorToWrite> t;
  t.push_back(F32("idf", {static_cast<int64_t>(d.idf.size())}, d.idf));
  t.push_back(F32("feature_mean", {d.space.dim}, d.space.mean));
  t.push_back(F32("feature_basis", {d.space.rank, d.space.dim}, d.space.basis));
  t.push_back(F32("features", {P, d.space.rank}, d.features));
  std::vector<int64_t> masks(d.subsets.begin(), d.subsets.end());
  t.push_back(I64("subset_masks", {S}, masks));
  t.push_back(F32("subset_damage", {P, S}, d.subset_damage));
  t.push_back(F32("skip_damage", {P, N}, d.skip_damage));
  t.push_back(F32("subset_prior", {S}, d.subset_prior));
  t.push_back(F32("skip_prior", {N}, d.skip_prior));
  t.push_back(F32("blend", {N + 1}, d.blend));
  t.push_back(F32("damage_scale", {N + 2}, d.damage_scale));
  t.push_back(I64("prompt_hashes", {P}, d.prompt_hashes));
  if (!d.prompt_offsets.empty()) {
    t.push_back(I64("prompt_offsets", {P + 1}, d.prompt_offsets));
    t.push_back(I64("prompt_ids", {static_cast<int64_t>(d.prompt_ids.size())}, d.prompt_ids));
  }
  if (d.gate.has_value()) {
    const GateWeights& g = *d.gate;
    t.push_back(F32("gate.w1", {g.hidden, g.in}, g.w1));
    t.push_back(F32("gate.b1", {g.hidden}, g.b1));
    t.push_back(F32("gate.w2", {g.out, g.hidden}, g.w2));
    t.push_back(F32("gate.b2", {g.out}, g.b2));
    t.push_back(F32("gate_temperature", {N + 2}, d.gate_temperature));
  }
  std::map<std::string, std::string> meta = d.notes;
  meta["format"] = kRouterFormat;
  meta["fingerprint"] = d.fingerprint;
  meta["num_blocks"] = absl::StrCat(d.num_blocks);
  meta["num_layers"] = absl::StrCat(d.num_layers);
  meta["keep_blocks"] = absl::StrJoin(MaskToBlocks(d.keep), ",");
  meta["neighbours"] = absl::StrCat(d.neighbours);
  meta["continuation_tokens"] = absl::StrCat(d.continuation_tokens);
  meta["seed"] = absl::StrCat(d.seed);
  meta["prompt_source"] = d.prompt_source;
  meta["feature"] = d.feature;
  return Annotate(model::WriteSafetensors(path, t, meta),
                  absl::StrCat("writing router file ", path));
}

absl::StatusOr<RouterData> LoadRouterData(const std::string& path) {
  auto file_or = model::SafetensorsFile::Open(path);
  if (!file_or.ok()) {
    return Annotate(file_or.status(), absl::StrCat("reading router file ", path));
  }
  const model::SafetensorsFile& file = **file_or;
  const auto& meta = file.metadata();
  auto fmt = meta.find("format");
  if (fmt == meta.end() || fmt->second != kRouterFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("router file ", path, ": not a router file (metadata 'format' is '",
                     fmt == meta.end() ? "" : fmt->second, "', expected '", kRouterFormat,
                     "'; write one with swarm calibrate)"));
  }
  RouterData d;
  d.notes = meta;
  d.fingerprint = meta.count("fingerprint") ? meta.at("fingerprint") : "";
  ASSIGN_OR_RETURN(int64_t n, MetaInt(meta, "num_blocks", path));
  ASSIGN_OR_RETURN(int64_t layers, MetaInt(meta, "num_layers", path));
  ASSIGN_OR_RETURN(int64_t k, MetaInt(meta, "neighbours", path));
  ASSIGN_OR_RETURN(int64_t cont, MetaInt(meta, "continuation_tokens", path));
  ASSIGN_OR_RETURN(int64_t seed, MetaInt(meta, "seed", path));
  if (n < 1 || n > kMaxBlocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("router file ", path, ": num_blocks ", n, " out of range"));
  }
  d.num_blocks = static_cast<int>(n);
  d.num_layers = static_cast<int>(layers);
  d.neighbours = static_cast<int>(k);
  d.continuation_tokens = static_cast<int>(cont);
  d.seed = static_cast<uint64_t>(seed);
  d.prompt_source = meta.count("prompt_source") ? meta.at("prompt_source") : "";
  d.feature = meta.count("feature") ? meta.at("feature") : kFeatureEmbedding;
  bool unused;
  ASSIGN_OR_RETURN(
      std::vector<int> keep,
      ParseKeepList(meta.count("keep_blocks") ? meta.at("keep_blocks") : "none", &unused));
  ASSIGN_OR_RETURN(d.keep, MakeKeepMask(keep, d.num_blocks));
  for (const char* key :
       {"format", "fingerprint", "num_blocks", "num_layers", "keep_blocks", "neighbours",
        "continuation_tokens", "seed", "prompt_source", "feature"}) {
    d.notes.erase(key);
  }

  Reader r(file);
  ASSIGN_OR_RETURN(std::vector<int64_t> fshape, r.Shape("features"));
  ASSIGN_OR_RETURN(std::vector<int64_t> bshape, r.Shape("feature_basis"));
  ASSIGN_OR_RETURN(std::vector<int64_t> ishape, r.Shape("idf"));
  ASSIGN_OR_RETURN(std::vector<int64_t> sshape, r.Shape("subset_masks"));
  if (fshape.size() != 2 || bshape.size() != 2 || ishape.size() != 1 || sshape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("router file ", path, ": malformed feature/subset tensor ranks"));
  }
  const int64_t P = fshape[0], R = bshape[0], D = bshape[1], V = ishape[0], S = sshape[0];
  const int64_t N = d.num_blocks;
  d.num_prompts = static_cast<int>(P);
  d.space.dim = D;
  d.space.rank = R;
  ASSIGN_OR_RETURN(d.idf, r.F32("idf", {V}));
  ASSIGN_OR_RETURN(d.space.mean, r.F32("feature_mean", {D}));
  ASSIGN_OR_RETURN(d.space.basis, r.F32("feature_basis", {R, D}));
  ASSIGN_OR_RETURN(d.features, r.F32("features", {P, R}));
  ASSIGN_OR_RETURN(std::vector<int64_t> masks, r.I64("subset_masks", {S}));
  d.subsets.assign(masks.begin(), masks.end());
  ASSIGN_OR_RETURN(d.subset_damage, r.F32("subset_damage", {P, S}));
  ASSIGN_OR_RETURN(d.skip_damage, r.F32("skip_damage", {P, N}));
  ASSIGN_OR_RETURN(d.subset_prior, r.F32("subset_prior", {S}));
  ASSIGN_OR_RETURN(d.skip_prior, r.F32("skip_prior", {N}));
  ASSIGN_OR_RETURN(d.blend, r.F32("blend", {N + 1}));
  ASSIGN_OR_RETURN(d.damage_scale, r.F32("damage_scale", {N + 2}));
  ASSIGN_OR_RETURN(d.prompt_hashes, r.I64("prompt_hashes", {P}));
  if (file.Has("prompt_offsets")) {
    ASSIGN_OR_RETURN(d.prompt_offsets, r.I64("prompt_offsets", {P + 1}));
    ASSIGN_OR_RETURN(std::vector<int64_t> idshape, r.Shape("prompt_ids"));
    if (idshape.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("router file ", path, ": tensor 'prompt_ids' must be 1-D"));
    }
    ASSIGN_OR_RETURN(d.prompt_ids, r.I64("prompt_ids", idshape));
  }
  if (file.Has("gate.w1")) {
    GateWeights g;
    ASSIGN_OR_RETURN(std::vector<int64_t> w1shape, r.Shape("gate.w1"));
    if (w1shape.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("router file ", path, ": tensor 'gate.w1' must be 2-D"));
    }
    g.hidden = w1shape[0];
    g.in = R;
    g.out = S + N;
    ASSIGN_OR_RETURN(g.w1, r.F32("gate.w1", {g.hidden, g.in}));
    ASSIGN_OR_RETURN(g.b1, r.F32("gate.b1", {g.hidden}));
    ASSIGN_OR_RETURN(g.w2, r.F32("gate.w2", {g.out, g.hidden}));
    ASSIGN_OR_RETURN(g.b2, r.F32("gate.b2", {g.out}));
    ASSIGN_OR_RETURN(d.gate_temperature, r.F32("gate_temperature", {N + 2}));
    d.gate = std::move(g);
  }
  RETURN_IF_ERROR(Annotate(d.Validate(), absl::StrCat("router file ", path)));
  return d;
}

int64_t HashIds(const std::vector<int64_t>& ids) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t id : ids) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>(id >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return static_cast<int64_t>(h & 0x7fffffffffffffffull);
}

}  // namespace swarm::router
