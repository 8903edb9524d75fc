// ModelEnds on LibTorch. The LM head is loaded here, the same way for every family: lm_head.weight
// unless the config ties it to the embeddings and the checkpoint does not store it.
#include "model/model_ends.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/compute_team.h"
#include "common/status_macros.h"
#include "common/tensor_rows.h"
#include "model/architecture_torch.h"

namespace swarm::model {
namespace {

class ModelEndsImpl final : public ModelEnds {
 public:
  static absl::StatusOr<std::unique_ptr<ModelEndsImpl>> Create(
      std::shared_ptr<const Checkpoint> ckpt, const LoadOptions& options) {
    auto ends = std::unique_ptr<ModelEndsImpl>(new ModelEndsImpl());
    const ModelConfig& c = ckpt->config();
    ends->family_ = &ckpt->architecture().family();
    ASSIGN_OR_RETURN(WeightLoader w, WeightLoader::Create(*ckpt, options));
    ASSIGN_OR_RETURN(ends->w_, ends->family_->LoadEnds(w));
    const TensorSpec head_spec{"lm_head.weight", {c.vocab_size, c.hidden_size}};
    if (!c.tie_word_embeddings || ckpt->store().Has("lm_head.weight")) {
      auto head = w.LoadLinear(head_spec);
      if (head.ok()) {
        ends->head_ = *std::move(head);
      } else if (c.tie_word_embeddings) {
        RETURN_IF_ERROR(ends->TiedHead(w, c));
      } else {
        return head.status();
      }
    } else {
      RETURN_IF_ERROR(ends->TiedHead(w, c));
    }
    ends->device_ = w.device();
    ends->dtype_ = w.dtype();
    ends->bytes_ = w.bytes();
    ends->ckpt_ = std::move(ckpt);
    if (ends->device_.is_cpu()) ends->team_ = SharedComputeTeam();
    // bf16 on the CPU: the head's rows through the row kernel in f32 (Logits).
    if (ends->device_.is_cpu() && ends->dtype_ != at::kFloat && RowKernelSupports(ends->head_)) {
      RETURN_IF_ERROR(TorchCall("preparing the head", [&]() -> absl::Status {
        const NormWeights& n = ends->w_.norm;
        ends->norm_f32_.weight = n.weight.to(at::kFloat);
        if (n.bias.defined()) ends->norm_f32_.bias = n.bias.to(at::kFloat);
        return absl::OkStatus();
      }));
      ends->rows_head_ = true;
    }
    return ends;
  }

  const ModelConfig& config() const override { return ckpt_->config(); }
  int64_t WeightBytes() const override { return bytes_; }

  absl::StatusOr<HostTensor> Embed(absl::Span<const int64_t> ids,
                                   int64_t start_pos) const override {
    const ModelConfig& c = config();
    RETURN_IF_ERROR(CheckIds(ids));
    const int64_t T = static_cast<int64_t>(ids.size());
    if (start_pos < 0 || start_pos + T > c.max_position_embeddings) {
      return absl::OutOfRangeError(absl::StrCat("positions ", start_pos, "..", start_pos + T - 1,
                                                " exceed the context of ",
                                                c.max_position_embeddings, " tokens"));
    }
    return TorchCall("embed", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      at::Tensor x = w_.embed.index_select(0, Ids(ids));
      if (w_.positions.defined()) x = x + w_.positions.narrow(0, start_pos, T);
      return ToHost(x, DType::kF32);
    });
  }

  absl::StatusOr<HostTensor> FinalNorm(const HostTensor& h) const override {
    RETURN_IF_ERROR(CheckHidden(h));
    return TorchCall("final norm", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      return ToHost(family_->FinalNorm(w_.norm, FromHost(h).to(device_, dtype_)), DType::kF32);
    });
  }

  absl::StatusOr<HostTensor> Logits(const HostTensor& h, bool last_only) const override {
    RETURN_IF_ERROR(CheckHidden(h));
    return TorchCall("logits", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      const int64_t in_rows = last_only ? 1 : h.shape[0];
      if (rows_head_ && in_rows <= kInvariantHeadRows) {
        // Narrower weights on the CPU: the final norm in f32 and the head through the row kernel
        // with f32 activations (what the fused layers hand over), as accurate as the weights.
        at::Tensor x = FromHost(h).to(at::kFloat);
        if (last_only) x = x.narrow(0, x.size(0) - 1, 1);
        at::Tensor normed = family_->FinalNorm(norm_f32_, x).contiguous();
        const int64_t vocab = head_.out();
        HostTensor out;
        out.dtype = DType::kF32;
        out.shape = {in_rows, vocab};
        out.data.resize(in_rows * vocab * sizeof(float));
        LinearRows(head_, normed.data_ptr<float>(), in_rows, normed.stride(0),
                   reinterpret_cast<float*>(out.data.data()), vocab, MatmulIsa::kAuto, team_.get());
        return out;
      }
      at::Tensor x = FromHost(h).to(device_, dtype_);
      if (last_only) x = x.narrow(0, x.size(0) - 1, 1);
      // Up to kInvariantHeadRows rows (a decode step's last rows) through the batch-invariant row
      // kernel, so a sequence's logits are the same bits alone or batched; more through gemm.
      const int64_t rows = x.size(0);
      at::Tensor logits =
          Linear(family_->FinalNorm(w_.norm, x), head_, rows <= kInvariantHeadRows ? rows : 0);
      return ToHost(logits, DType::kF32);
    });
  }

  absl::StatusOr<HostTensor> EmbeddingRows(absl::Span<const int64_t> ids) const override {
    RETURN_IF_ERROR(CheckIds(ids));
    return TorchCall("embedding rows", [&]() -> absl::StatusOr<HostTensor> {
      c10::InferenceMode guard;
      return ToHost(w_.embed.index_select(0, Ids(ids)), DType::kF32);
    });
  }

 private:
  ModelEndsImpl() = default;

  // The head tied to the token embeddings: the table itself, or quantized from it (q8/q4 weights:
  // the head is quantized like the layers' linear weights; the table stays f32 for lookups).
  absl::Status TiedHead(WeightLoader& w, const ModelConfig& c) {
    if (w.quant() == WeightQuant::kNone) {
      head_.weight = w_.embed;
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(head_,
                     w.LoadLinear({family_->EmbeddingTensors()[0], {c.vocab_size, c.hidden_size}}));
    return absl::OkStatus();
  }

  absl::Status CheckIds(absl::Span<const int64_t> ids) const {
    const int64_t vocab = config().vocab_size;
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " outside the vocabulary of ", vocab));
      }
    }
    return absl::OkStatus();
  }
  absl::Status CheckHidden(const HostTensor& h) const {
    RETURN_IF_ERROR(h.Validate());
    const int64_t d = config().hidden_size;
    if (h.shape.size() != 2 || h.shape[1] != d || h.shape[0] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hidden states have shape ", ShapeString(h.shape), ", expected [T,", d, "] with T >= 1"));
    }
    return absl::OkStatus();
  }
  // `ids` as an int64 index tensor on the device.
  at::Tensor Ids(absl::Span<const int64_t> ids) const {
    return at::from_blob(const_cast<int64_t*>(ids.data()), {static_cast<int64_t>(ids.size())},
                         at::kLong)
        .to(device_);
  }

  std::shared_ptr<const Checkpoint> ckpt_;  // Owns the family; keeps zero-copy weights mapped.
  const ArchitectureFamily* family_ = nullptr;
  EndsWeights w_;
  LinearWeights head_;  // [vocab, hidden]; the embedding table itself when tied.
  at::Device device_{at::kCPU};
  at::ScalarType dtype_ = at::kFloat;
  int64_t bytes_ = 0;
  // The process's team the head's row-kernel products run on, held while these ends live.
  std::shared_ptr<ComputeTeam> team_;
  // Weights narrower than f32 on the CPU: Logits runs the final norm (on these f32 copies) and
  // the head in f32 through the row kernel for up to kInvariantHeadRows rows.
  bool rows_head_ = false;
  NormWeights norm_f32_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelEnds>> ModelEnds::Create(
    std::shared_ptr<const Checkpoint> checkpoint, const LoadOptions& options) {
  ASSIGN_OR_RETURN(auto ends, ModelEndsImpl::Create(std::move(checkpoint), options));
  return std::unique_ptr<ModelEnds>(std::move(ends));
}

absl::StatusOr<HostTensor> LastRowLogits(const ModelEnds& ends, const HostTensor& h) {
  if (h.shape.size() != 2 || h.shape[0] <= kInvariantHeadRows) return ends.Logits(h, false);
  const int64_t rows = h.shape[0];
  HostTensor out;
  for (int64_t begin = 0; begin < rows; begin += kInvariantHeadRows) {
    ASSIGN_OR_RETURN(HostTensor group,
                     SliceRows(h, begin, std::min(kInvariantHeadRows, rows - begin)));
    ASSIGN_OR_RETURN(HostTensor logits, ends.Logits(group, false));
    if (begin == 0) {
      out = ZeroRows(logits.dtype, rows, logits.shape[1]);
    }
    RETURN_IF_ERROR(CopyRows(logits, 0, logits.shape[0], &out, begin));
  }
  return out;
}

}  // namespace swarm::model
