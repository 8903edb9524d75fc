#include "model/checkpoint.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace swarm::model {

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  auto ckpt = std::shared_ptr<Checkpoint>(new Checkpoint());
  ckpt->dir_ = model_dir;
  ASSIGN_OR_RETURN(ckpt->config_, LoadModelConfig(model_dir));
  ASSIGN_OR_RETURN(ckpt->store_, TensorStore::Open(model_dir));
  ckpt->architecture_ = Architecture::Create(ckpt->config_, *ckpt->store_);
  return std::shared_ptr<const Checkpoint>(std::move(ckpt));
}

absl::StatusOr<std::string> Checkpoint::Resolve(absl::string_view logical_name) const {
  std::string name = architecture_->FileName(logical_name);
  if (!store_->Has(name)) {
    return absl::NotFoundError(absl::StrCat("missing tensor '", name, "' in ", dir_));
  }
  return name;
}

std::vector<std::string> Checkpoint::LayerTensorNames(int layer) const {
  std::vector<std::string> out;
  const std::string prefix = architecture_->FileName(architecture_->LayerTensor(layer, ""));
  for (const std::string& name : store_->Names()) {
    if (absl::StartsWith(name, prefix) && !architecture_->IsBuffer(name)) out.push_back(name);
  }
  return out;
}

std::vector<std::string> Checkpoint::Present(const std::vector<std::string>& logical) const {
  std::vector<std::string> out;
  for (const std::string& n : logical) {
    auto name = Resolve(n);
    if (name.ok()) out.push_back(*std::move(name));
  }
  return out;
}

std::vector<std::string> Checkpoint::EmbeddingTensorNames() const {
  return Present(architecture_->EmbeddingTensors());
}

std::vector<std::string> Checkpoint::HeadTensorNames() const {
  return Present(architecture_->HeadTensors());
}

int64_t Checkpoint::BytesOf(const std::vector<std::string>& file_names) const {
  int64_t bytes = 0;
  for (const std::string& name : file_names) {
    auto v = store_->Get(name);
    if (v.ok()) bytes += v->nbytes;
  }
  return bytes;
}

int64_t Checkpoint::LayerBytes(int layer) const { return BytesOf(LayerTensorNames(layer)); }

int64_t Checkpoint::EmbeddingBytes() const { return BytesOf(EmbeddingTensorNames()); }

int64_t Checkpoint::HeadBytes() const { return BytesOf(HeadTensorNames()); }

}  // namespace swarm::model
