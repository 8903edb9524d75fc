#include "model/architecture.h"

namespace swarm::model {

std::unique_ptr<const Architecture> Architecture::Create(const ModelConfig& config,
                                                         const TensorStore& store) {
  switch (config.arch) {
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
      return NewLlamaFamily(config);
    case Arch::kGpt2:
      return NewGpt2Family(config, store);
  }
  return NewLlamaFamily(config);
}

std::string Architecture::FileName(absl::string_view logical) const { return std::string(logical); }

bool Architecture::IsBuffer(absl::string_view /*file_name*/) const { return false; }

}  // namespace swarm::model
