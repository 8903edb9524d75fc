// LayerHost on LibTorch: validates each call, then runs the family's DecoderLayers in order over
// the call's rows (Forward: one sequence; ForwardBatch: the sequences that pass their checks, then
// scattered back to their rows). Sequences of at most kInvariantMaxRows rows (decode tokens, short
// chunks) go through the fused CPU path (model/cpu_layer_torch.h: f32 activations, the row kernel
// on the process's ComputeTeam) where every hosted layer supports it; longer ones through
// LibTorch. Without the fused path (other devices or dtypes, SWARM_FUSED_LAYERS=0) the short
// sequences go first in one LibTorch batch, their rows computed batch-invariantly there.
#include "model/layer_host.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "model/architecture_torch.h"

namespace swarm::model {
namespace {

class LayerHostImpl final : public LayerHost {
 public:
  static absl::StatusOr<std::unique_ptr<LayerHostImpl>> Create(
      std::shared_ptr<const Checkpoint> ckpt, std::vector<int> layers, const LoadOptions& options);

  const std::vector<int>& layers() const override { return layers_; }
  bool Hosts(int layer) const override { return decoders_.count(layer) > 0; }
  const ModelConfig& config() const override { return ckpt_->config(); }
  int64_t WeightBytes() const override { return weight_bytes_; }
  int64_t KvBytesPerToken() const override {
    const ModelConfig& c = config();
    return static_cast<int64_t>(layers_.size()) * 2 * c.num_kv_heads * c.head_dim *
           DTypeSize(dtype_);
  }
  std::string KernelPath() const override {
    return fused_ ? absl::StrCat("fused ", MatmulIsaName(isa_)) : "libtorch";
  }
  int64_t InvariantStepRows() const override { return fused_ ? kInvariantMaxRows : 0; }
  std::unique_ptr<KvCache> NewCache(int64_t capacity) const override {
    return std::make_unique<TorchKvCache>(capacity, config().max_position_embeddings);
  }

  absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                     absl::Span<const int> layers, KvCache* cache) const override;
  absl::StatusOr<BatchOutput> ForwardBatch(const HostTensor& h,
                                           absl::Span<const BatchSequence> sequences,
                                           absl::Span<const int> layers) const override;

 private:
  LayerHostImpl() = default;

  // One sequence's checks (Forward's and each of ForwardBatch's): the context, the cache's
  // implementation, every layer's cached length == start_pos. Returns the cache.
  absl::StatusOr<TorchKvCache*> CheckSequence(int64_t start_pos, int64_t rows,
                                              absl::Span<const int> layers, KvCache* cache) const;
  // The math of Forward and ForwardBatch: h's rows (as `batch` says) through `layers`.
  absl::StatusOr<HostTensor> Run(const HostTensor& h, BatchRows batch,
                                 absl::Span<const int> layers) const;
  // The same through the fused CPU path (h f32 or bf16; every sequence short).
  absl::StatusOr<HostTensor> RunRows(const HostTensor& h, std::vector<RowSequence> sequences,
                                     absl::Span<const int> layers) const;
  // Whether a call with hidden states of `dtype` and sequences of at most kInvariantMaxRows rows
  // runs through RunRows.
  bool Fused(DType dtype) const {
    return fused_ && (dtype == DType::kF32 || dtype == DType::kBF16);
  }

  std::shared_ptr<const Checkpoint> ckpt_;  // Keeps the mapping zero-copy weights point into.
  std::vector<int> layers_;
  std::map<int, std::unique_ptr<const DecoderLayer>> decoders_;
  at::Device device_{at::kCPU};
  DType dtype_ = DType::kF32;
  int64_t weight_bytes_ = 0;
  bool fused_ = false;                  // Every hosted layer supports the fused CPU path.
  MatmulIsa isa_ = MatmulIsa::kScalar;  // Resolved at Create (SWARM_CPU_ISA).
  std::shared_ptr<ComputeTeam> team_;   // The process's team, held while this host lives.
};

absl::StatusOr<std::unique_ptr<LayerHostImpl>> LayerHostImpl::Create(
    std::shared_ptr<const Checkpoint> ckpt, std::vector<int> layers, const LoadOptions& options) {
  auto host = std::unique_ptr<LayerHostImpl>(new LayerHostImpl());
  const ModelConfig& c = ckpt->config();
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  for (int l : layers) {
    if (l < 0 || l >= c.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", l, " out of range: the model has ", c.num_layers, " layers"));
    }
  }
  ASSIGN_OR_RETURN(WeightLoader loader, WeightLoader::Create(*ckpt, options));
  ASSIGN_OR_RETURN(std::vector<std::unique_ptr<const DecoderLayer>> decoders,
                   ckpt->architecture().family().LoadLayers(layers, loader));
  if (decoders.size() != layers.size()) {
    return absl::InternalError(absl::StrCat("the architecture family loaded ", decoders.size(),
                                            " layers of ", layers.size()));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    host->decoders_.emplace(layers[i], std::move(decoders[i]));
  }
  host->layers_ = std::move(layers);
  host->device_ = loader.device();
  host->dtype_ = options.dtype;
  host->weight_bytes_ = loader.bytes();
  host->ckpt_ = std::move(ckpt);
  const char* fused_env = std::getenv("SWARM_FUSED_LAYERS");
  host->fused_ = host->device_.is_cpu() && !host->decoders_.empty() &&
                 (fused_env == nullptr || std::strcmp(fused_env, "0") != 0);
  for (const auto& [l, decoder] : host->decoders_) host->fused_ &= decoder->RowsSupported();
  host->isa_ = ResolveIsa(MatmulIsa::kAuto);
  if (host->fused_) host->team_ = SharedComputeTeam();
  return host;
}

// h is [T, hidden_size] with its bytes (Forward's and ForwardBatch's first check).
absl::Status CheckHidden(const LayerHost& host, const HostTensor& h) {
  const int64_t d = host.config().hidden_size;
  RETURN_IF_ERROR(h.Validate());
  if (h.shape.size() != 2 || h.shape[1] != d) {
    return absl::InvalidArgumentError(
        absl::StrCat("hidden states have shape ", ShapeString(h.shape), ", expected [T,", d, "]"));
  }
  return absl::OkStatus();
}

// Every layer of `layers` is hosted.
absl::Status CheckHosted(const LayerHost& host, absl::Span<const int> layers) {
  for (int l : layers) {
    if (!host.Hosts(l)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", l, " is not hosted here (hosted: ", absl::StrJoin(host.layers(), ","), ")"));
    }
  }
  return absl::OkStatus();
}

// The checks of a whole ForwardBatch call (LayerHost's contract), shared by the default
// implementation and LayerHostImpl's.
absl::Status CheckBatchCall(const LayerHost& host, const HostTensor& h,
                            absl::Span<const BatchSequence> sequences,
                            absl::Span<const int> layers) {
  RETURN_IF_ERROR(CheckHidden(host, h));
  if (sequences.empty()) return absl::InvalidArgumentError("a batch with no sequences");
  int64_t total = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const BatchSequence& s = sequences[i];
    if (s.rows < 1 || s.rows > h.shape[0] - total) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " brings ", s.rows,
                                                     " rows; the batch's hidden states hold ",
                                                     h.shape[0], " rows in all"));
    }
    if (s.cache == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", i, " has no KV cache"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (sequences[j].cache == s.cache) {
        return absl::InvalidArgumentError(
            absl::StrCat("sequences ", j, " and ", i, " share one KV cache"));
      }
    }
    total += s.rows;
  }
  if (total != h.shape[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat("the sequences bring ", total, " rows; the hidden states hold ", h.shape[0]));
  }
  return CheckHosted(host, layers);
}

absl::StatusOr<TorchKvCache*> LayerHostImpl::CheckSequence(int64_t start_pos, int64_t rows,
                                                           absl::Span<const int> layers,
                                                           KvCache* cache) const {
  const int64_t context = config().max_position_embeddings;
  if (start_pos < 0 || start_pos > context - rows) {
    return absl::OutOfRangeError(absl::StrCat("positions ", start_pos, "..", start_pos + rows - 1,
                                              " exceed the context of ", context, " tokens"));
  }
  auto* kvc = dynamic_cast<TorchKvCache*>(cache);
  if (kvc == nullptr) return absl::InvalidArgumentError("KV cache from another implementation");
  for (int l : layers) {
    if (kvc->Length(l) != start_pos) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer ", l, " has ", kvc->Length(l), " cached positions, step starts at ", start_pos));
    }
  }
  return kvc;
}

absl::StatusOr<HostTensor> LayerHostImpl::Run(const HostTensor& h, BatchRows batch,
                                              absl::Span<const int> layers) const {
  return TorchCall("forward", [&]() -> absl::StatusOr<HostTensor> {
    c10::InferenceMode guard;
    at::Tensor x = FromHost(h).to(device_, ToTorch(dtype_));
    batch.positions = batch.positions.to(device_);
    for (int l : layers) x = decoders_.at(l)->Forward(x, batch);
    return ToHost(x, h.dtype);
  });
}

absl::StatusOr<HostTensor> LayerHostImpl::RunRows(const HostTensor& h,
                                                  std::vector<RowSequence> sequences,
                                                  absl::Span<const int> layers) const {
  std::vector<float> x = h.ToFloats();
  RowStep step(std::move(sequences), team_.get(), isa_, ToTorch(dtype_));
  RETURN_IF_ERROR(TorchCall("forward", [&]() -> absl::Status {
    for (int l : layers) decoders_.at(l)->ForwardRows(x.data(), step);
    return absl::OkStatus();
  }));
  HostTensor out = HostTensor::FromFloats(h.shape, x);
  if (h.dtype == DType::kBF16) {
    std::string bytes(x.size() * sizeof(uint16_t), '\0');
    for (size_t i = 0; i < x.size(); ++i) {
      const uint16_t b = FloatToBf16(x[i]);
      std::memcpy(&bytes[i * sizeof b], &b, sizeof b);
    }
    out.dtype = DType::kBF16;
    out.data = std::move(bytes);
  }
  return out;
}

absl::StatusOr<HostTensor> LayerHostImpl::Forward(const HostTensor& h, int64_t start_pos,
                                                  absl::Span<const int> layers,
                                                  KvCache* cache) const {
  RETURN_IF_ERROR(CheckHidden(*this, h));
  const int64_t T = h.shape[0];
  if (T < 1) return absl::InvalidArgumentError("hidden states hold no tokens");
  RETURN_IF_ERROR(CheckHosted(*this, layers));
  ASSIGN_OR_RETURN(TorchKvCache * kvc, CheckSequence(start_pos, T, layers, cache));
  if (T <= kInvariantMaxRows && Fused(h.dtype)) return RunRows(h, {{0, T, start_pos, kvc}}, layers);
  // The batch of one: the same code as ForwardBatch.
  ASSIGN_OR_RETURN(
      BatchRows batch, TorchCall("forward", [&]() -> absl::StatusOr<BatchRows> {
        return BatchRows::Make({{0, T, start_pos, kvc}}, T <= kInvariantMaxRows ? T : 0, at::kCPU);
      }));
  return Run(h, std::move(batch), layers);
}

absl::StatusOr<BatchOutput> LayerHostImpl::ForwardBatch(const HostTensor& h,
                                                        absl::Span<const BatchSequence> sequences,
                                                        absl::Span<const int> layers) const {
  RETURN_IF_ERROR(CheckBatchCall(*this, h, sequences, layers));
  const int64_t d = config().hidden_size;
  const int64_t row_bytes = d * DTypeSize(h.dtype);
  BatchOutput out;
  out.hidden.dtype = h.dtype;
  out.hidden.shape = h.shape;
  out.hidden.data.assign(h.data.size(), '\0');
  out.status.resize(sequences.size());

  // Each sequence checked on its own; the ones that pass run. Short sequences (decode tokens,
  // short chunks) go first: their rows are the batch's invariant rows (model/layers_torch.h).
  struct Survivor {
    size_t index;    // In `sequences`.
    int64_t in_row;  // First row in h.
    TorchKvCache* cache;
  };
  std::vector<Survivor> short_seqs, long_seqs;
  int64_t row = 0;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const BatchSequence& s = sequences[i];
    absl::StatusOr<TorchKvCache*> kvc = CheckSequence(s.start_pos, s.rows, layers, s.cache);
    out.status[i] = kvc.status();
    if (kvc.ok()) {
      (s.rows <= kInvariantMaxRows ? short_seqs : long_seqs).push_back({i, row, *kvc});
    }
    row += s.rows;
  }
  // Each group of sequences runs as one step and its rows are scattered back; a group that fails
  // fails each of its sequences (nothing in it is known to have run correctly).
  auto run_group = [&](const std::vector<Survivor>& group, bool fused, int64_t invariant_rows) {
    if (group.empty()) return;
    HostTensor x;
    x.dtype = h.dtype;
    std::vector<SequenceRows> rows;
    std::vector<RowSequence> row_seqs;
    int64_t total = 0;
    for (const Survivor& v : group) {
      const BatchSequence& s = sequences[v.index];
      x.data.append(h.data, v.in_row * row_bytes, s.rows * row_bytes);
      rows.push_back({total, s.rows, s.start_pos, v.cache});
      row_seqs.push_back({total, s.rows, s.start_pos, v.cache});
      total += s.rows;
    }
    x.shape = {total, d};
    absl::StatusOr<HostTensor> y;
    if (fused) {
      y = RunRows(x, std::move(row_seqs), layers);
    } else {
      absl::StatusOr<BatchRows> batch = TorchCall("forward", [&]() -> absl::StatusOr<BatchRows> {
        return BatchRows::Make(std::move(rows), invariant_rows, at::kCPU);
      });
      if (batch.ok()) {
        y = Run(x, std::move(*batch), layers);
      } else {
        y = batch.status();
      }
    }
    if (!y.ok()) {
      for (const Survivor& v : group) out.status[v.index] = y.status();
      return;
    }
    int64_t y_row = 0;
    for (const Survivor& v : group) {
      const int64_t n = sequences[v.index].rows;
      out.hidden.data.replace(v.in_row * row_bytes, n * row_bytes, y->data, y_row * row_bytes,
                              n * row_bytes);
      y_row += n;
    }
  };
  if (Fused(h.dtype)) {
    // The short sequences through the fused path, the long ones through LibTorch: two steps that
    // each read the weights (the price of exact rows in a step mixed with a prefill chunk).
    run_group(short_seqs, /*fused=*/true, 0);
    run_group(long_seqs, /*fused=*/false, 0);
    return out;
  }
  std::vector<Survivor> order = std::move(short_seqs);
  int64_t invariant_rows = 0;
  for (const Survivor& v : order) invariant_rows += sequences[v.index].rows;
  order.insert(order.end(), long_seqs.begin(), long_seqs.end());
  run_group(order, /*fused=*/false, invariant_rows);
  return out;
}

}  // namespace

absl::StatusOr<BatchOutput> LayerHost::ForwardBatch(const HostTensor& h,
                                                    absl::Span<const BatchSequence> sequences,
                                                    absl::Span<const int> layers) const {
  RETURN_IF_ERROR(CheckBatchCall(*this, h, sequences, layers));
  const int64_t row_bytes = config().hidden_size * DTypeSize(h.dtype);
  BatchOutput out;
  out.hidden.dtype = h.dtype;
  out.hidden.shape = h.shape;
  out.hidden.data.assign(h.data.size(), '\0');
  int64_t row = 0;
  for (const BatchSequence& s : sequences) {
    HostTensor part;
    part.dtype = h.dtype;
    part.shape = {s.rows, config().hidden_size};
    part.data = h.data.substr(row * row_bytes, s.rows * row_bytes);
    absl::StatusOr<HostTensor> y = Forward(part, s.start_pos, layers, s.cache);
    if (y.ok()) {
      out.hidden.data.replace(row * row_bytes, s.rows * row_bytes, y->data);
      out.status.push_back(absl::OkStatus());
    } else {
      out.status.push_back(y.status());
    }
    row += s.rows;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LayerHost>> LayerHost::Create(
    std::shared_ptr<const Checkpoint> checkpoint, std::vector<int> layers,
    const LoadOptions& options) {
  ASSIGN_OR_RETURN(auto host,
                   LayerHostImpl::Create(std::move(checkpoint), std::move(layers), options));
  return std::unique_ptr<LayerHost>(std::move(host));
}

}  // namespace swarm::model
