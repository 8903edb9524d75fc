// A set of transformer layers (not necessarily contiguous) loaded onto a device in a dtype: what a
// worker hosts, what the in-process engine and the router's sparse executor run. Loading touches
// only those layers' tensors. The family's layer math comes from the checkpoint's architecture
// (model/architecture_torch.h); this interface is torch-free, so the worker and coordinator see
// HostTensor only. worker::ResidentLayerHost implements it too (residency under a memory budget).
//
// Threading: Forward is const and thread-safe for different KvCaches; one KvCache must not be
// used by two threads at once.
#ifndef SWARM_MODEL_LAYER_HOST_H_
#define SWARM_MODEL_LAYER_HOST_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/host_tensor.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace swarm::model {

// One sequence of a batched step (LayerHost::ForwardBatch): `rows` consecutive rows of the batch's
// hidden states, holding positions start_pos .. start_pos+rows-1 of the sequence whose keys and
// values live in `cache` (a decode token: rows = 1; a prefill chunk: more).
struct BatchSequence {
  int64_t start_pos = 0;
  int64_t rows = 0;
  KvCache* cache = nullptr;
};

// What ForwardBatch returns: the batch's output rows and one status per sequence.
struct BatchOutput {
  HostTensor hidden;                 // [sum of rows, hidden_size], h's dtype; a failed row is 0.
  std::vector<absl::Status> status;  // One per sequence, in order.
};

class LayerHost {
 public:
  // Loads `layers` (sorted and deduplicated here; each < num_layers) from `checkpoint` onto
  // options.device. Errors name the tensor at fault (missing, wrong shape or dtype for the
  // config), or the layer out of range, or the device.
  static absl::StatusOr<std::unique_ptr<LayerHost>> Create(
      std::shared_ptr<const Checkpoint> checkpoint, std::vector<int> layers,
      const LoadOptions& options);
  virtual ~LayerHost() = default;

  virtual const std::vector<int>& layers() const = 0;
  virtual bool Hosts(int layer) const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual int64_t WeightBytes() const = 0;  // As resident on the device.
  // Bytes one token of KV cache takes across all hosted layers.
  virtual int64_t KvBytesPerToken() const = 0;
  // How sequences of at most kInvariantMaxRows rows are computed: "fused avx512", "fused avx2"
  // or "fused scalar" (the fused CPU path, model/cpu_layer_torch.h, with that row kernel), or
  // "libtorch". For logs, benchmarks and tests.
  virtual std::string KernelPath() const { return "libtorch"; }
  // The most rows a Forward step may hold for each of its rows (f32 or bf16 hidden states) to get
  // the same bits as through steps of one row: one step over positions p..p+k-1 leaves the same
  // KV cache and outputs as k steps of one position (kInvariantMaxRows on the fused CPU path,
  // whose rows go through the row kernel and attend over their own positions one by one); 0 when
  // that is not promised (LibTorch: its attention is one product over the step's rows).
  virtual int64_t InvariantStepRows() const { return 0; }

  // A new, empty cache. With `capacity` > 0 each layer's first write allocates room for exactly
  // that many positions (a session's known maximum, so a KV budget reserves what is allocated);
  // past it, or without a hint, capacity grows geometrically up to the context.
  virtual std::unique_ptr<KvCache> NewCache(int64_t capacity = 0) const = 0;

  // Runs `layers` (each hosted, in the given order) over hidden states `h` [T, hidden_size]
  // holding positions start_pos .. start_pos+T-1, appending their keys/values to `cache`.
  // Every layer in `layers` must have Length(layer) == start_pos in the cache
  // (FailedPrecondition otherwise) and start_pos + T must not exceed the context
  // (OutOfRange). Output keeps h's dtype. The layers run ungated: a sparse block's gate is
  // applied by whoever combines block outputs, through model/combine.h.
  virtual absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                             absl::Span<const int> layers,
                                             KvCache* cache) const = 0;

  // One step of several sequences at once (continuous batching): `layers` run once over all the
  // rows of h [sum of rows, hidden_size] — every weight multiplies every row in one product —
  // while attention runs per sequence against its own cache. Each sequence is checked as Forward
  // checks a call (its cache's Length(layer) == start_pos for every layer: FailedPrecondition;
  // past the context: OutOfRange); one that fails gets that status in BatchOutput::status, is
  // left out of the computation (its cache untouched, its output rows zero), and the others run.
  // Errors of the whole call: h's shape, rows that do not add up to h's, no sequences, a null or
  // repeated cache, a layer not hosted (InvalidArgument). A sequence's output does not depend on
  // what else is in the batch: with f32 weights on the CPU, a sequence of at most
  // kInvariantMaxRows rows (model/cpu_matmul.h: decode tokens, short chunks) gets the same bits as
  // alone (the row kernel's fixed reduction order); longer chunks go through gemm and agree with
  // their Forward to rounding. Other dtypes and devices: to rounding.
  // The default implementation runs Forward per sequence (correct, not batched);
  // LayerHost::Create's runs the layers once over all rows (model/layer_host.cc).
  virtual absl::StatusOr<BatchOutput> ForwardBatch(const HostTensor& h,
                                                   absl::Span<const BatchSequence> sequences,
                                                   absl::Span<const int> layers) const;
};

}  // namespace swarm::model

#endif  // SWARM_MODEL_LAYER_HOST_H_
