// The router file: everything calibration measured and fitted, in one safetensors file that the
// coordinator (Router::Load), `swarm eval` and the benchmarks read. Written by `swarm calibrate`.
//
// Tensors (all little-endian; P calibration prompts, N blocks, S stored subsets, d embedding
// width, r PCA rank, V vocabulary):
//   idf [V] f32, feature_mean [d] f32, feature_basis [r, d] f32   the feature space
//   features [P, r] f32                                           calibration prompts' features
//   subset_masks [S] i64, subset_damage [P, S] f32                damage of running only that
//   subset skip_damage [P, N] f32                                        damage of skipping one
//   block subset_prior [S] f32, skip_prior [N] f32                      calibration means (static
//   prior) blend [N + 1] f32                                             prior weight β per k
//   (leave-one-out) damage_scale [N + 2] f32                                      typical spread
//   per k / per block prompt_hashes [P] i64                                         to keep test
//   sets disjoint gate.w1 [H, r], gate.b1 [H], gate.w2 [S + N, H], gate.b2 [S + N] f32,
//   gate_temperature [N + 2]
//                                                                 optional MLP gate (--fit-gate)
//   prompt_offsets [P + 1] i64, prompt_ids [offsets[P]] i64      optional: the calibration
//                                                                 prompts (near-duplicate checks)
// Metadata: format, fingerprint (ModelConfig::Fingerprint), num_blocks, num_layers, keep_blocks,
// neighbours, continuation_tokens, seed, prompt_source, feature ("embedding" when absent: files
// written before the block0 feature load unchanged), and free-form notes.
// Subsets of one size k are either every admissible subset (enumerated) or a measured candidate
// list (the strongest static subsets a search found plus the additive model's proposals).
// "Damage" is the mean KL(full ‖ sparse) per continuation token, in nats.
//
// Plain data; thread-compatible.
#ifndef SWARM_ROUTER_ROUTER_FILE_H_
#define SWARM_ROUTER_ROUTER_FILE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/block_set.h"
#include "router/features.h"

namespace swarm::router {

inline constexpr char kRouterFormat[] = "swarm-router-v1";
inline constexpr int kDefaultNeighbours = 7;
// Prompt feature kinds (features.h): the embedding mean needs no model run; block0 is the
// IDF-weighted mean of block 0's output rows, which only callers that run block 0 can compute.
inline constexpr char kFeatureEmbedding[] = "embedding";
inline constexpr char kFeatureBlock0[] = "block0";

// A one-hidden-layer MLP: logits = w2 · relu(w1 · x + b1) + b2. Row-major weights.
struct GateWeights {
  int64_t in = 0, hidden = 0, out = 0;
  std::vector<float> w1, b1, w2, b2;
  // logits [out] for input x [in].
  std::vector<float> Forward(const float* x) const;
};

struct RouterData {
  // Identity.
  std::string fingerprint;
  int num_blocks = 0;
  int num_layers = 0;
  BlockMask keep = 0;
  int neighbours = kDefaultNeighbours;
  int continuation_tokens = 0;
  uint64_t seed = 0;
  std::string prompt_source;                // "sampled" or the prompts file.
  std::string feature = kFeatureEmbedding;  // kFeatureEmbedding or kFeatureBlock0.
  std::map<std::string, std::string> notes;

  // Feature space.
  std::vector<float> idf;
  FeatureSpace space;

  // Calibration measurements.
  int num_prompts = 0;
  std::vector<float> features;         // [P, r]
  std::vector<BlockMask> subsets;      // [S]
  std::vector<float> subset_damage;    // [P, S]
  std::vector<float> skip_damage;      // [P, N]
  std::vector<float> subset_prior;     // [S]
  std::vector<float> skip_prior;       // [N]
  std::vector<float> blend;            // [N + 1]
  std::vector<float> damage_scale;     // [N + 2]
  std::vector<int64_t> prompt_hashes;  // [P]
  // The calibration prompts' ids, concatenated (optional: empty in older files).
  std::vector<int64_t> prompt_offsets;  // [P + 1] or empty
  std::vector<int64_t> prompt_ids;      // [prompt_offsets[P]]

  std::optional<GateWeights> gate;
  std::vector<float> gate_temperature;  // [N + 2]

  int num_subsets() const { return static_cast<int>(subsets.size()); }
  // Index into blend/damage_scale/gate_temperature for the per-block group.
  int block_group() const { return num_blocks + 1; }
  // Checks every size against the others (InvalidArgument naming the tensor).
  absl::Status Validate() const;
};

absl::Status SaveRouterData(const std::string& path, const RouterData& data);
// Reads and validates `path`. Errors name the file and the tensor or metadata key at fault.
absl::StatusOr<RouterData> LoadRouterData(const std::string& path);

// FNV-1a of the ids, masked to 63 bits (prompt_hashes).
int64_t HashIds(const std::vector<int64_t>& ids);

}  // namespace swarm::router

#endif  // SWARM_ROUTER_ROUTER_FILE_H_
