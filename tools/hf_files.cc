#include "tools/hf_files.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace swarm::tools {

absl::Status CreateOutputDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create output directory '", dir, "': ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", path, "': ", std::strerror(errno)));
  }
  out << text;
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing '", path, "' failed"));
  return absl::OkStatus();
}

absl::Status WriteLlamaSideFiles(const std::string& dir, int64_t model_max_length,
                                 const std::string& tokenizer_json,
                                 std::vector<std::string>* files) {
  nlohmann::ordered_json gen;
  gen["bos_token_id"] = 1;
  gen["eos_token_id"] = 2;
  const std::string gen_path = dir + "/generation_config.json";
  RETURN_IF_ERROR(WriteTextFile(gen_path, gen.dump(2) + "\n"));
  files->push_back(gen_path);
  if (tokenizer_json.empty()) return absl::OkStatus();

  const std::string tok_path = dir + "/tokenizer.json";
  RETURN_IF_ERROR(WriteTextFile(tok_path, tokenizer_json));
  files->push_back(tok_path);
  nlohmann::ordered_json tc;
  tc["bos_token"] = "<s>";
  tc["eos_token"] = "</s>";
  tc["unk_token"] = "<unk>";
  tc["add_bos_token"] = true;
  tc["add_eos_token"] = false;
  tc["model_max_length"] = model_max_length;
  tc["tokenizer_class"] = "LlamaTokenizerFast";
  const std::string tc_path = dir + "/tokenizer_config.json";
  RETURN_IF_ERROR(WriteTextFile(tc_path, tc.dump(2) + "\n"));
  files->push_back(tc_path);
  return absl::OkStatus();
}

}  // namespace swarm::tools
