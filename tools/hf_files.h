// The small text files of a Hugging Face model directory that Swarm writes itself
// (`swarm convert-llama2c`, `swarm synth`): one place for their contents. Stateless functions.
#ifndef SWARM_TOOLS_HF_FILES_H_
#define SWARM_TOOLS_HF_FILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace swarm::tools {

// Creates `dir` and its parents (fine when it exists). PermissionDenied naming the directory.
absl::Status CreateOutputDir(const std::string& dir);

// Writes `text` to `path` (truncating). PermissionDenied / DataLoss naming the path.
absl::Status WriteTextFile(const std::string& path, const std::string& text);

// Writes DIR/generation_config.json (BOS 1, EOS 2) and, when `tokenizer_json` is not empty,
// DIR/tokenizer.json and a LlamaTokenizerFast DIR/tokenizer_config.json (<s>, </s>, <unk>, BOS
// added) with `model_max_length`. Appends each path written to `files`.
absl::Status WriteLlamaSideFiles(const std::string& dir, int64_t model_max_length,
                                 const std::string& tokenizer_json,
                                 std::vector<std::string>* files);

}  // namespace swarm::tools

#endif  // SWARM_TOOLS_HF_FILES_H_
