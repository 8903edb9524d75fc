#include "tools/quantize.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "model/checkpoint.h"
#include "model/quantize.h"
#include "nlohmann/json.hpp"
#include "tools/hf_files.h"

namespace swarm::tools {
namespace {

namespace fs = std::filesystem;

int64_t TensorBytes(const std::vector<model::TensorToWrite>& tensors) {
  int64_t n = 0;
  for (const model::TensorToWrite& t : tensors) n += static_cast<int64_t>(t.data.size());
  return n;
}

// config.json with the swarm_quantization field added.
absl::StatusOr<std::string> QuantizedConfig(const std::string& model_dir, WeightQuant format) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON"));
  }
  j["swarm_quantization"] = {{"format", WeightQuantName(format)}, {"group_size", kQuantGroup}};
  return j.dump(2) + "\n";
}

}  // namespace

absl::StatusOr<QuantizeResult> QuantizeModel(const QuantizeOptions& options) {
  std::error_code ec;
  if (fs::exists(options.out_dir, ec) && fs::equivalent(options.model_dir, options.out_dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--out '", options.out_dir, "' is the model directory; give a new one"));
  }
  ASSIGN_OR_RETURN(auto checkpoint, model::Checkpoint::Open(options.model_dir));
  const int L = static_cast<int>(checkpoint->config().num_layers);
  ASSIGN_OR_RETURN(std::string config, QuantizedConfig(options.model_dir, options.format));
  RETURN_IF_ERROR(CreateOutputDir(options.out_dir));
  QuantizeResult result;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  const int shards = L + 1;
  auto write_shard = [&](int index, const std::vector<model::TensorToWrite>& tensors) {
    const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, shards);
    const std::string path = options.out_dir + "/" + name;
    RETURN_IF_ERROR(model::WriteSafetensors(path, tensors));
    for (const model::TensorToWrite& t : tensors) weight_map[t.name] = name;
    result.bytes_out += TensorBytes(tensors);
    result.files.push_back(path);
    return absl::OkStatus();
  };
  for (int l = 0; l < L; ++l) {
    ASSIGN_OR_RETURN(std::vector<model::TensorToWrite> tensors,
                     model::QuantizedLayerTensors(*checkpoint, l, options.format));
    result.bytes_in += checkpoint->LayerBytes(l);
    RETURN_IF_ERROR(write_shard(l, tensors));
  }
  ASSIGN_OR_RETURN(std::vector<model::TensorToWrite> ends,
                   model::QuantizedEndTensors(*checkpoint, options.format));
  result.bytes_in += checkpoint->EmbeddingBytes() + checkpoint->HeadBytes();
  RETURN_IF_ERROR(write_shard(L, ends));
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", result.bytes_out}};
  index["weight_map"] = weight_map;
  const std::string index_path = options.out_dir + "/model.safetensors.index.json";
  RETURN_IF_ERROR(WriteTextFile(index_path, index.dump(2) + "\n"));
  result.files.push_back(index_path);
  const std::string config_path = options.out_dir + "/config.json";
  RETURN_IF_ERROR(WriteTextFile(config_path, config));
  result.files.push_back(config_path);
  // The other files of the directory (tokenizer, generation config, chat template, README), as
  // they are; subdirectories and the weights are not copied.
  for (const fs::directory_entry& e : fs::directory_iterator(options.model_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || absl::EndsWith(name, ".safetensors") || name == "config.json" ||
        name == "model.safetensors.index.json") {
      continue;
    }
    const std::string to = options.out_dir + "/" + name;
    fs::copy_file(e.path(), to, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("copying ", e.path().string(), " to ", to, ": ", ec.message()));
    }
    result.files.push_back(to);
  }
  if (ec) {
    return absl::NotFoundError(absl::StrCat("listing ", options.model_dir, ": ", ec.message()));
  }
  return result;
}

}  // namespace swarm::tools
