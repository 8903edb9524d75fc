// `swarm convert-llama2c`: turns a llama2.c checkpoint (+ tokenizer.bin) into a Hugging Face
// model directory that every other command loads. The work is in tools/llama2c.h.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"
#include "common/flags.h"
#include "tools/llama2c.h"

namespace swarm::cli {
namespace {

const FlagSet& ConvertLlama2cFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm convert-llama2c",
              "convert a llama2.c checkpoint into a Hugging Face model directory");
    f.Required("checkpoint", "MODEL.bin", "the llama2.c checkpoint")
        .Value("tokenizer", "TOKENIZER.bin", "", "llama2.c tokenizer to convert to tokenizer.json")
        .Required("out", "DIR", "the directory to write");
    return f;
  }();
  return flags;
}

int ConvertLlama2cCommand(const std::vector<std::string>& args) {
  constexpr const char* kName = "convert-llama2c";
  auto flags = ConvertLlama2cFlags().Parse(args);
  if (!flags.ok()) return Fail(kName, flags.status());
  tools::ConvertLlama2cOptions options;
  auto checkpoint = flags->Required("checkpoint");
  if (!checkpoint.ok()) return Fail(kName, checkpoint.status());
  auto out = flags->Required("out");
  if (!out.ok()) return Fail(kName, out.status());
  options.checkpoint_path = *checkpoint;
  options.out_dir = *out;
  options.tokenizer_path = flags->String("tokenizer");
  auto result = tools::ConvertLlama2c(options);
  if (!result.ok()) return Fail(kName, result.status());
  const tools::Llama2cHeader& h = result->header;
  std::printf(
      "converted llama2.c v%d checkpoint: %d layers, dim %d, hidden %d, %d heads (%d kv), "
      "vocab %d, seq_len %d, %s embeddings%s\n",
      h.version, h.n_layers, h.dim, h.hidden_dim, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len,
      h.shared_classifier ? "tied" : "untied",
      options.tokenizer_path.empty() ? ""
                                     : absl::StrCat(", ", result->num_merges, " merges").c_str());
  if (options.tokenizer_path.empty()) {
    std::fprintf(stderr, "swarm %s: no --tokenizer given; wrote no tokenizer.json\n", kName);
  }
  for (const std::string& f : result->files) std::printf("wrote %s\n", f.c_str());
  return 0;
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(convert_llama2c, "convert-llama2c", ConvertLlama2cCommand,
                             ConvertLlama2cFlags);

}  // namespace swarm::cli
