// Measuring what skipping blocks costs, on the exact model in-process: the shared machinery of
// `swarm calibrate` and `swarm eval`.
//
//  - Samples: a prompt and a continuation drawn from the full model with a fixed seed, either
//    from BOS (the prompt is the first tokens of a sampled text) or after a user prompt.
//  - MeasureSubsets: for one sample, the Divergence of every requested block subset (teacher-
//    forced over prompt + continuation, scored on the continuation), sharing the hidden states of
//    common prefixes: subsets are visited as a binary tree over blocks, so each block runs once
//    per distinct prefix rather than once per subset.
//  - GreedyDivergence: the first position where sparse greedy decoding leaves the exact one.
// Functions are stateless; the Engine is only read (safe from one thread per call).
#ifndef SWARM_ROUTER_CALIBRATION_PROBE_H_
#define SWARM_ROUTER_CALIBRATION_PROBE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/block_layout.h"
#include "common/block_set.h"
#include "model/generate.h"
#include "router/calibration/divergence.h"
#include "router/sparse.h"

namespace swarm::router {

struct Sample {
  std::vector<int64_t> prompt;        // BOS included.
  std::vector<int64_t> continuation;  // Drawn from the full model after the prompt.
};

// A deterministic 64-bit seed for item `index` of `stream` under `base` (SplitMix64).
uint64_t DeriveSeed(uint64_t base, uint64_t stream, uint64_t index);

struct SampleOptions {
  int count = 0;
  uint64_t seed = 0;
  uint64_t stream = 0;        // Keeps calibration (1) and evaluation (2) draws apart.
  int min_prompt_tokens = 4;  // BOS included.
  int max_prompt_tokens = 24;
  int continuation_tokens = 16;
  float temperature = 1.0f;  // Prompts sampled from BOS.
  // Continuations: 1 = samples of the model's distribution (perplexity is meaningful);
  // 0 = greedy, what a default `swarm run` returns (then the prompt determines the damage).
  float continuation_temperature = 1.0f;
};

// Prompts sampled from the full model starting at BOS. InvalidArgument for count < 1 or bad
// lengths; FailedPrecondition when the model has no BOS id.
absl::StatusOr<std::vector<Sample>> SampleFromModel(const model::Engine& engine,
                                                    const SampleOptions& options);
// User prompts (tokenized with BOS), each followed by a continuation sampled with a fixed seed.
// Prompts longer than the context minus the continuation are truncated to their last tokens.
absl::StatusOr<std::vector<Sample>> SamplesFromTexts(const model::Engine& engine,
                                                     const std::vector<std::string>& texts,
                                                     const SampleOptions& options);
// Non-empty lines of `path` (InvalidArgument naming the file when there are none).
absl::StatusOr<std::vector<std::string>> ReadPromptLines(const std::string& path);

// Divergence of each mask in `masks` (each a non-empty subset of the N blocks) for `sample`,
// plus the full model's NLL in every entry. The result maps mask → divergence.
absl::StatusOr<std::map<BlockMask, Divergence>> MeasureSubsets(const model::Engine& engine,
                                                               const BlockLayout& layout,
                                                               const Sample& sample,
                                                               const std::vector<BlockMask>& masks);

// The block0 feature's raw vector (features.h HiddenFeature) of `prompt`: block 0 of `layout`
// runs on the prompt's embeddings and its output rows are averaged with IDF weights.
absl::StatusOr<std::vector<float>> Block0Feature(const model::Engine& engine,
                                                 const BlockLayout& layout,
                                                 absl::Span<const float> idf,
                                                 const std::vector<int64_t>& prompt);

// Greedy-decodes `tokens` tokens after the prompt with the exact model (`reference`, computed by
// the caller once) and with `plan`; returns the index of the first differing token, or `tokens`
// when none differs.
absl::StatusOr<int> GreedyDivergence(const model::Engine& engine, const BlockLayout& layout,
                                     const std::vector<int64_t>& prompt,
                                     const std::vector<int64_t>& reference, const SparsePlan& plan);
// The exact model's greedy continuation (no EOS stop).
absl::StatusOr<std::vector<int64_t>> GreedyReference(const model::Engine& engine,
                                                     const std::vector<int64_t>& prompt,
                                                     int tokens);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_CALIBRATION_PROBE_H_
