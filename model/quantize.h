// The tensors of a quantized checkpoint (`swarm quantize`, tools/quantize.h writes the directory):
// layer by layer, and the ends, as the loader reads them back with no quantization step. The
// linear weights are quantized by the loader itself (model/weights_torch.h's WeightLoader in q8/q4
// mode, the families choosing which tensors are linear), so a written checkpoint loads to the
// same bytes as quantizing at load. Torch-free header; functions are thread-compatible (each call
// reads the checkpoint and returns new buffers).
//
// Naming (docs/cli.md "swarm quantize"): a linear weight keeps its name and holds the codes, I8
// (q8) or U8 (q4) [out, QuantRowBytes(in)] — oriented [out, in] even where the original was
// stored [in, out] (GPT-2's Conv1D) — and "<name>.scales" holds its F16 scales
// [out, QuantGroups(in)]. Every other tensor (norms, biases, embeddings) is copied as stored. The
// LM head is quantized; a head tied to the embeddings is written as a quantized "lm_head.weight"
// (the embedding table stays as stored).
#ifndef SWARM_MODEL_QUANTIZE_H_
#define SWARM_MODEL_QUANTIZE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "common/weight_format.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

namespace swarm::model {

// Layer `layer`'s tensors in `format` (peak memory: that layer quantized plus one slice of rows
// in f32). InvalidArgument when the checkpoint is quantized already; loading errors name the
// tensor.
absl::StatusOr<std::vector<TensorToWrite>> QuantizedLayerTensors(const Checkpoint& checkpoint,
                                                                 int layer, WeightQuant format);
// The embedding, final-norm and head tensors in `format`.
absl::StatusOr<std::vector<TensorToWrite>> QuantizedEndTensors(const Checkpoint& checkpoint,
                                                               WeightQuant format);

}  // namespace swarm::model

#endif  // SWARM_MODEL_QUANTIZE_H_
