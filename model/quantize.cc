#include "model/quantize.h"

#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "model/architecture_torch.h"

namespace swarm::model {
namespace {

std::string Bytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// What the loader's sink saw: file name → the quantized part.
using Captured = std::map<std::string, QuantizedWeight>;

absl::StatusOr<WeightLoader> QuantizingLoader(const Checkpoint& checkpoint, WeightQuant format,
                                              Captured* captured) {
  if (checkpoint.config().quantization != WeightQuant::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat(checkpoint.dir(), " is quantized already (",
                     WeightQuantName(checkpoint.config().quantization), ")"));
  }
  if (format == WeightQuant::kNone) return absl::InvalidArgumentError("no quantized format given");
  LoadOptions options;
  options.quant = format;
  ASSIGN_OR_RETURN(WeightLoader loader, WeightLoader::Create(checkpoint, options));
  loader.set_quantized_sink(
      [captured](const std::string& name, const QuantizedWeight& q) { (*captured)[name] = q; });
  return loader;
}

void AppendQuantized(const std::string& name, const QuantizedWeight& q,
                     std::vector<TensorToWrite>* out) {
  TensorToWrite codes;
  codes.name = name;
  codes.dtype = q.format == WeightQuant::kQ8 ? StDType::kI8 : StDType::kU8;
  codes.shape = {q.data.size(0), q.data.size(1)};
  codes.data = Bytes(q.data);
  TensorToWrite scales;
  scales.name = name + ".scales";
  scales.dtype = StDType::kF16;
  scales.shape = {q.scales.size(0), q.scales.size(1)};
  scales.data = Bytes(q.scales);
  out->push_back(std::move(codes));
  out->push_back(std::move(scales));
}

absl::Status AppendStored(const Checkpoint& checkpoint, const std::string& name,
                          std::vector<TensorToWrite>* out) {
  ASSIGN_OR_RETURN(TensorView v, checkpoint.store().Get(name));
  TensorToWrite t;
  t.name = name;
  t.dtype = v.dtype;
  t.shape = v.shape;
  t.data.assign(reinterpret_cast<const char*>(v.data), v.nbytes);
  out->push_back(std::move(t));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TensorToWrite>> QuantizedLayerTensors(const Checkpoint& checkpoint,
                                                                 int layer, WeightQuant format) {
  Captured captured;
  ASSIGN_OR_RETURN(WeightLoader loader, QuantizingLoader(checkpoint, format, &captured));
  const int layers[1] = {layer};
  RETURN_IF_ERROR(checkpoint.architecture().family().LoadLayers(layers, loader).status());
  std::vector<TensorToWrite> out;
  for (const std::string& name : checkpoint.LayerTensorNames(layer)) {
    auto q = captured.find(name);
    if (q != captured.end()) {
      AppendQuantized(name, q->second, &out);
    } else {
      RETURN_IF_ERROR(AppendStored(checkpoint, name, &out));
    }
  }
  return out;
}

absl::StatusOr<std::vector<TensorToWrite>> QuantizedEndTensors(const Checkpoint& checkpoint,
                                                               WeightQuant format) {
  Captured captured;
  ASSIGN_OR_RETURN(WeightLoader loader, QuantizingLoader(checkpoint, format, &captured));
  const ModelConfig& c = checkpoint.config();
  const Architecture& arch = checkpoint.architecture();
  std::vector<TensorToWrite> out;
  for (const std::string& name : checkpoint.EmbeddingTensorNames()) {
    RETURN_IF_ERROR(AppendStored(checkpoint, name, &out));
  }
  constexpr char kHead[] = "lm_head.weight";
  for (const std::string& name : checkpoint.HeadTensorNames()) {
    if (name != kHead) RETURN_IF_ERROR(AppendStored(checkpoint, name, &out));
  }
  // The head as ModelEnds loads it: lm_head.weight, or the token embeddings when tied and absent.
  const std::string source =
      checkpoint.store().Has(kHead) ? std::string(kHead) : arch.EmbeddingTensors()[0];
  ASSIGN_OR_RETURN(LinearWeights head, loader.LoadLinear({source, {c.vocab_size, c.hidden_size}}));
  AppendQuantized(kHead, head.quant, &out);
  return out;
}

}  // namespace swarm::model
