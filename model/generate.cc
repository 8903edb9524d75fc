#include "model/generate.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <numeric>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/status_macros.h"

namespace swarm::model {

LocalExecutor::LocalExecutor(const LayerHost* host) : host_(host), cache_(host->NewCache()) {}

absl::StatusOr<HostTensor> LocalExecutor::Run(const HostTensor& h, int64_t start_pos) {
  return host_->Forward(h, start_pos, host_->layers(), cache_.get());
}

absl::StatusOr<std::unique_ptr<SequenceDecoder>> SequenceDecoder::Create(
    const ModelConfig& config, const tokenizer::Tokenizer* tokenizer,
    std::vector<int64_t> prompt_ids, const SamplingParams& params,
    const std::vector<int64_t>& resume_ids) {
  RETURN_IF_ERROR(params.Validate());
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt is empty");
  const int64_t ctx = config.max_position_embeddings;
  if (static_cast<int64_t>(prompt_ids.size()) > ctx) {
    return absl::OutOfRangeError(absl::StrCat(
        "prompt of ", prompt_ids.size(), " tokens is longer than the context of ", ctx, " tokens"));
  }
  auto d = std::unique_ptr<SequenceDecoder>(new SequenceDecoder());
  d->context_ = ctx;
  d->vocab_size_ = config.vocab_size;
  d->params_ = params;
  d->eos_ = config.eos_token_ids;
  if (tokenizer != nullptr && tokenizer->eos_id().has_value()) {
    d->eos_.push_back(*tokenizer->eos_id());
  }
  if (!params.stop.empty() && tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "stop strings need the model's tokenizer.json (this model has none)");
  }
  d->sampler_ = std::make_unique<Sampler>(params);
  d->tokenizer_ = tokenizer;
  if (tokenizer != nullptr) {
    d->text_ = std::make_unique<tokenizer::StreamDecoder>(tokenizer, prompt_ids);
  }
  d->prompt_ = std::move(prompt_ids);
  d->prefill_ = d->prompt_;
  if (params.max_new_tokens == 0) d->finish_reason_ = "length";
  if (!resume_ids.empty()) RETURN_IF_ERROR(d->Resume(resume_ids));
  return d;
}

absl::Status SequenceDecoder::Resume(const std::vector<int64_t>& ids) {
  const int64_t k = static_cast<int64_t>(ids.size());
  if (k >= params_.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(k, " resume ids: max_new_tokens (",
                                                   params_.max_new_tokens,
                                                   ") would have ended the request already"));
  }
  // The last of them is fed at position prompt + k - 1.
  if (k > context_ - static_cast<int64_t>(prompt_.size())) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", prompt_.size(), " tokens) + ", k,
                                              " resume ids pass the context of ", context_));
  }
  for (int64_t j = 0; j < k; ++j) {
    const int64_t id = ids[j];
    if (id < 0 || id >= vocab_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("resume id ", id, " is outside the vocabulary of ", vocab_size_));
    }
    if (params_.stop_at_eos && std::find(eos_.begin(), eos_.end(), id) != eos_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resume id ", id, " (at ", j, ") is end-of-sequence: the request had ended"));
    }
    generated_.push_back(id);
    // What the first run released for these ids was streamed already: only the state it leaves
    // (held-back bytes, the stop-string window) matters.
    ReleaseText(text_ ? text_->Push(id) : std::string(), /*final=*/false);
    if (stopped_) {
      return absl::InvalidArgumentError(
          absl::StrCat("resume ids complete a stop string at ", j, ": the request had ended"));
    }
  }
  prefill_.insert(prefill_.end(), ids.begin(), ids.end());
  return absl::OkStatus();
}

absl::Span<const int64_t> SequenceDecoder::NextInput(int64_t max_ids) const {
  if (done()) return {};
  const int64_t prefill_len = static_cast<int64_t>(prefill_.size());
  if (fed_ < prefill_len) {
    return absl::MakeConstSpan(prefill_).subspan(fed_, std::min(max_ids, prefill_len - fed_));
  }
  return absl::MakeConstSpan(generated_).subspan(generated_.size() - 1, 1);
}

bool SequenceDecoder::Fed(int64_t n) {
  fed_ += n;
  return fed_ >= static_cast<int64_t>(prefill_.size());
}

GeneratedToken SequenceDecoder::Accept(absl::Span<const float> logits) {
  // The token takes position fed_ (the next one to be fed).
  const absl::Span<const float> row = logits.subspan(0, vocab_size_);
  const int64_t id = sampler_->Sample(row, fed_);
  const int64_t previous = generated_.empty() ? prompt_.back() : generated_.back();
  generated_.push_back(id);
  GeneratedToken token;
  token.id = id;
  if (params_.logprobs) {
    token.has_logprob = true;
    token.chosen.id = id;
    token.chosen.logprob = LogSoftmaxAt(row, id, params_.top_logprobs, &token.top_logprobs);
    token.chosen.text = TokenText(previous, id);
    for (TokenLogprob& t : token.top_logprobs) t.text = TokenText(previous, t.id);
  }
  token.text = ReleaseText(text_ ? text_->Push(id) : std::string(), /*final=*/false);
  if (stopped_) {
    finish_reason_ = "stop";
  } else if (params_.stop_at_eos && std::find(eos_.begin(), eos_.end(), id) != eos_.end()) {
    finish_reason_ = "eos";
  } else if (static_cast<int64_t>(generated_.size()) >= params_.max_new_tokens) {
    finish_reason_ = "length";
  } else if (fed_ >= context_) {
    finish_reason_ = "context";
  }
  return token;
}

std::string SequenceDecoder::ReleaseText(std::string piece, bool final) {
  if (params_.stop.empty()) return piece;
  if (stopped_) return std::string();
  held_ += piece;
  // A stop string can only begin in held_: what was returned before could not begin one.
  size_t cut = std::string::npos;
  for (const std::string& s : params_.stop) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Hold back the longest end of held_ that is the start of some stop string.
  size_t keep = 0;
  if (!final) {
    for (const std::string& s : params_.stop) {
      for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
        if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
          keep = k;
          break;
        }
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string SequenceDecoder::TokenText(int64_t previous, int64_t id) const {
  if (tokenizer_ == nullptr) return std::string();
  // Decoded after the token before it, so that a leading space a decoder strips at the start of
  // a text (SentencePiece's "▁") is kept, as the token reads in the generated text.
  const int64_t before[] = {previous};
  const int64_t both[] = {previous, id};
  const std::string head = tokenizer_->Decode(before, /*skip_special=*/false);
  std::string text = tokenizer_->Decode(both, /*skip_special=*/false);
  if (absl::StartsWith(text, head)) return text.substr(head.size());
  const int64_t one[] = {id};
  return tokenizer_->Decode(one, /*skip_special=*/false);
}

void SequenceDecoder::Cancel() {
  if (!done()) finish_reason_ = "cancelled";
}

std::string SequenceDecoder::Flush() {
  std::string out = ReleaseText(text_ ? text_->Flush() : std::string(), /*final=*/true);
  if (stopped_ && finish_reason_ != "cancelled") finish_reason_ = "stop";
  return out;
}

namespace {

// Appends `token` to `result` and tells `on_token`; a false answer cancels `d`.
void Deliver(SequenceDecoder& d, const GeneratedToken& token, const TokenCallback& on_token,
             GenerateResult& result) {
  result.ids.push_back(token.id);
  result.text += token.text;
  if (on_token && !on_token(token)) {
    d.Cancel();
    // A callback that stops the request wins over the stop rule the token met.
    result.finish_reason = "cancelled";
  }
}

// The end of a request: its finish reason and the text held back.
void Finish(SequenceDecoder& d, const TokenCallback& on_token, GenerateResult& result) {
  std::string rest = d.Flush();  // First: held bytes may complete a stop string.
  if (result.finish_reason != "cancelled") result.finish_reason = d.finish_reason();
  if (rest.empty()) return;
  result.text += rest;
  if (on_token && result.finish_reason != "cancelled") {
    GeneratedToken text_only;
    text_only.id = -1;
    text_only.text = std::move(rest);
    on_token(text_only);
  }
}

}  // namespace

absl::StatusOr<GenerateResult> RunGenerationLoop(const ModelEnds& ends, StepExecutor& executor,
                                                 const tokenizer::Tokenizer* tokenizer,
                                                 const std::vector<int64_t>& prompt_ids,
                                                 const SamplingParams& params,
                                                 const TokenCallback& on_token) {
  ASSIGN_OR_RETURN(std::unique_ptr<SequenceDecoder> d,
                   SequenceDecoder::Create(ends.config(), tokenizer, prompt_ids, params));
  GenerateResult result;
  while (!d->done()) {
    const int64_t pos = d->position();
    absl::Span<const int64_t> in = d->NextInput(std::numeric_limits<int64_t>::max());
    ASSIGN_OR_RETURN(HostTensor h, ends.Embed(in, pos));
    ASSIGN_OR_RETURN(HostTensor out, executor.Run(h, pos));
    if (!d->Fed(static_cast<int64_t>(in.size()))) continue;
    ASSIGN_OR_RETURN(HostTensor logits, ends.Logits(out, /*last_only=*/true));
    const float* row = reinterpret_cast<const float*>(logits.data.data());
    Deliver(*d, d->Accept(absl::MakeConstSpan(row, ends.config().vocab_size)), on_token, result);
  }
  Finish(*d, on_token, result);
  return result;
}

std::vector<std::pair<int, int64_t>> ComposeStep(absl::Span<SequenceDecoder* const> active,
                                                 const BatchLimits& limits) {
  std::vector<std::pair<int, int64_t>> rows;
  int64_t budget = std::max<int64_t>(limits.max_batch_tokens, 1);
  const size_t max_seqs = static_cast<size_t>(std::max(limits.max_batch_sequences, 1));
  for (int i = 0; i < static_cast<int>(active.size()) && rows.size() < max_seqs && budget > 0;
       ++i) {
    if (active[i]->done() || active[i]->prefilling()) continue;
    rows.emplace_back(i, 1);
    --budget;
  }
  for (int i = 0; i < static_cast<int>(active.size()) && rows.size() < max_seqs && budget > 0;
       ++i) {
    if (active[i]->done() || !active[i]->prefilling()) continue;
    const int64_t n = static_cast<int64_t>(active[i]->NextInput(budget).size());
    rows.emplace_back(i, n);
    budget -= n;
  }
  return rows;
}

std::vector<absl::StatusOr<GenerateResult>> RunBatchedGeneration(
    const ModelEnds& ends, const LayerHost& host, const tokenizer::Tokenizer* tokenizer,
    std::vector<BatchedRequest> requests, const BatchLimits& limits) {
  const ModelConfig& c = ends.config();
  const size_t n = requests.size();
  std::vector<absl::StatusOr<GenerateResult>> results(n, GenerateResult{});
  std::vector<std::unique_ptr<SequenceDecoder>> decoders(n);
  std::vector<std::unique_ptr<KvCache>> caches(n);
  std::vector<int> live;  // Indices of requests still running, in arrival order.
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<std::unique_ptr<SequenceDecoder>> d = SequenceDecoder::Create(
        c, tokenizer, std::move(requests[i].prompt_ids), requests[i].params);
    if (!d.ok()) {
      results[i] = d.status();
      continue;
    }
    decoders[i] = *std::move(d);
    const int64_t max_len = std::min<int64_t>(
        c.max_position_embeddings,
        static_cast<int64_t>(decoders[i]->prompt_ids().size()) + requests[i].params.max_new_tokens);
    caches[i] = host.NewCache(max_len);
    live.push_back(static_cast<int>(i));
  }
  auto fail = [&](int i, const absl::Status& status) {
    results[i] = status;
    decoders[i]->Cancel();
  };
  while (true) {
    live.erase(std::remove_if(live.begin(), live.end(),
                              [&](int i) {
                                if (!decoders[i]->done()) return false;
                                if (results[i].ok()) {
                                  Finish(*decoders[i], requests[i].on_token, *results[i]);
                                }
                                caches[i].reset();
                                return true;
                              }),
               live.end());
    if (live.empty()) break;
    std::vector<SequenceDecoder*> active;
    for (int i : live) active.push_back(decoders[i].get());
    const std::vector<std::pair<int, int64_t>> step = ComposeStep(active, limits);
    // Embed every row of the step into one batch.
    std::vector<int64_t> ids;
    std::vector<BatchSequence> seqs;
    for (const auto& [a, rows] : step) {
      SequenceDecoder* d = active[a];
      absl::Span<const int64_t> in = d->NextInput(rows);
      ids.insert(ids.end(), in.begin(), in.end());
      seqs.push_back(BatchSequence{d->position(), rows, caches[live[a]].get()});
    }
    // Positions differ per sequence: embed each sequence's rows at its own positions.
    HostTensor h;
    {
      std::string data;
      size_t off = 0;
      bool ok = true;
      for (size_t s = 0; s < step.size() && ok; ++s) {
        absl::StatusOr<HostTensor> e =
            ends.Embed(absl::MakeConstSpan(ids).subspan(off, seqs[s].rows), seqs[s].start_pos);
        if (!e.ok()) {
          fail(live[step[s].first], e.status());
          ok = false;
          break;
        }
        data += e->data;
        h.dtype = e->dtype;
        off += seqs[s].rows;
      }
      if (!ok) continue;
      h.shape = {static_cast<int64_t>(ids.size()), c.hidden_size};
      h.data = std::move(data);
    }
    absl::StatusOr<BatchOutput> out = host.ForwardBatch(h, seqs, host.layers());
    if (!out.ok()) {
      for (const auto& [a, rows] : step) fail(live[a], out.status());
      continue;
    }
    // The last row of each sequence whose logits are due, gathered for one head product.
    const int64_t row_bytes = c.hidden_size * DTypeSize(out->hidden.dtype);
    HostTensor last;
    last.dtype = out->hidden.dtype;
    std::vector<int> due;
    int64_t row = 0;
    for (size_t s = 0; s < step.size(); ++s) {
      const int i = live[step[s].first];
      row += seqs[s].rows;
      if (!out->status[s].ok()) {
        fail(i, out->status[s]);
        continue;
      }
      if (!decoders[i]->Fed(seqs[s].rows)) continue;
      last.data.append(out->hidden.data, (row - 1) * row_bytes, row_bytes);
      due.push_back(i);
    }
    if (due.empty()) continue;
    last.shape = {static_cast<int64_t>(due.size()), c.hidden_size};
    absl::StatusOr<HostTensor> logits = LastRowLogits(ends, last);
    if (!logits.ok()) {
      for (int i : due) fail(i, logits.status());
      continue;
    }
    const float* base = reinterpret_cast<const float*>(logits->data.data());
    for (size_t k = 0; k < due.size(); ++k) {
      const int i = due[k];
      Deliver(*decoders[i],
              decoders[i]->Accept(absl::MakeConstSpan(base + k * c.vocab_size, c.vocab_size)),
              requests[i].on_token, *results[i]);
    }
  }
  return results;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const std::string& model_dir,
                                                       const LoadOptions& options) {
  auto engine = std::unique_ptr<Engine>(new Engine());
  ASSIGN_OR_RETURN(engine->checkpoint_, Checkpoint::Open(model_dir));
  const std::string tok_path = model_dir + "/tokenizer.json";
  if (std::ifstream(tok_path).good()) {
    ASSIGN_OR_RETURN(engine->tokenizer_, tokenizer::Tokenizer::FromFile(tok_path));
  }
  ASSIGN_OR_RETURN(engine->ends_, ModelEnds::Create(engine->checkpoint_, options));
  std::vector<int> all(engine->config().num_layers);
  std::iota(all.begin(), all.end(), 0);
  ASSIGN_OR_RETURN(engine->layers_, LayerHost::Create(engine->checkpoint_, all, options));
  return engine;
}

absl::StatusOr<HostTensor> Engine::Logits(const std::vector<int64_t>& ids) const {
  if (ids.empty()) return absl::InvalidArgumentError("no input ids");
  if (static_cast<int64_t>(ids.size()) > config().max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("input of ", ids.size(),
                                              " tokens is longer than the context of ",
                                              config().max_position_embeddings, " tokens"));
  }
  ASSIGN_OR_RETURN(HostTensor h, ends_->Embed(ids, 0));
  auto cache = layers_->NewCache();
  ASSIGN_OR_RETURN(HostTensor out, layers_->Forward(h, 0, layers_->layers(), cache.get()));
  return ends_->Logits(out, /*last_only=*/false);
}

absl::StatusOr<GenerateResult> Engine::Generate(const std::vector<int64_t>& prompt_ids,
                                                const SamplingParams& params,
                                                const TokenCallback& on_token) const {
  LocalExecutor executor(layers_.get());
  return model::RunGenerationLoop(*ends_, executor, tokenizer_.get(), prompt_ids, params, on_token);
}

std::vector<absl::StatusOr<GenerateResult>> Engine::GenerateBatch(
    std::vector<BatchedRequest> requests, const BatchLimits& limits) const {
  return RunBatchedGeneration(*ends_, *layers_, tokenizer_.get(), std::move(requests), limits);
}

}  // namespace swarm::model
