// A fail-over's replay may send consecutive short steps as one (coordinator/scheduler.h,
// ReplayGroups) where the layer host promises it (LayerHost::InvariantStepRows): the fused CPU
// path computes a step of up to kInvariantMaxRows rows row by row (the row kernel; each row's
// attention over its own positions, after every row's keys and values are written). Here, on
// every fixture model and every row-kernel implementation this CPU has: a sequence fed as a
// 20-row prefill chunk (LibTorch's gemm path), a 3-row chunk and single decode rows, against the
// same prefill chunk and then the rest in steps of up to 16 rows. Every row's output and the
// outputs of the decode steps that follow (which read every cached key and value) must be the
// same bits. (The caches' storage is the model's internal, model/kv_cache_torch.h.)
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/cpu_matmul.h"
#include "model/generate.h"
#include "model/layer_host.h"
#include "model/safetensors.h"
#include "tests/model/fixtures.h"

namespace swarm::model {
namespace {

// Feeds ids[from..] to `cache` in steps of `sizes` (cycled; the last one cut at the end), every
// layer at once; returns the concatenated outputs (raw bytes, row order).
std::string Feed(const Engine& engine, const std::vector<int64_t>& ids, int64_t from,
                 const std::vector<int64_t>& sizes, KvCache* cache) {
  const LayerHost& host = engine.layers();
  std::string out;
  size_t k = 0;
  for (int64_t pos = from; pos < static_cast<int64_t>(ids.size()); ++k) {
    const int64_t n = std::min<int64_t>(sizes[k % sizes.size()], ids.size() - pos);
    std::vector<int64_t> chunk(ids.begin() + pos, ids.begin() + pos + n);
    auto x = engine.ends().Embed(chunk, pos);
    EXPECT_TRUE(x.ok()) << x.status();
    if (!x.ok()) return out;
    auto y = host.Forward(*x, pos, host.layers(), cache);
    EXPECT_TRUE(y.ok()) << y.status();
    if (!y.ok()) return out;
    out += y->data;
    pos += n;
  }
  return out;
}

TEST(ReplayChunks, ShortStepsMergedIntoOneGiveTheBitsOfOneRowSteps) {
  std::vector<std::string> isas = {"scalar"};
  if (CpuHasAvx2Fma()) isas.push_back("avx2");
  if (CpuHasAvx512()) isas.push_back("avx512");
  for (const Fixture& fx : Fixtures()) {
    auto golden =
        SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    const std::vector<int64_t> ids = ReadIds(**golden, fx.sequences[0] + ".input_ids");
    ASSERT_GE(ids.size(), 40u);
    for (const std::string& isa : isas) {
      SCOPED_TRACE(fx.name + " " + isa);
      ScopedEnv env("SWARM_CPU_ISA", isa.c_str());
      auto engine = Engine::Create(fx.model_dir);
      ASSERT_TRUE(engine.ok()) << engine.status();
      const LayerHost& host = (*engine)->layers();
      ASSERT_EQ(host.InvariantStepRows(), kInvariantMaxRows);
      // Both: a 20-row prefill chunk (gemm); then one 3-row chunk and single rows, or the same
      // positions in steps of 16 (the first holding the 3-row chunk's rows too).
      std::vector<int64_t> prefix(ids.begin(), ids.end() - 4), tail(ids.end() - 4, ids.end());
      auto a = host.NewCache(), b = host.NewCache();
      std::string out_a = Feed(**engine, std::vector<int64_t>(prefix.begin(), prefix.begin() + 20),
                               0, {20}, a.get());
      std::string out_b = Feed(**engine, std::vector<int64_t>(prefix.begin(), prefix.begin() + 20),
                               0, {20}, b.get());
      ASSERT_EQ(out_a, out_b);
      std::vector<int64_t> after_three(prefix.begin(), prefix.begin() + 23);
      out_a = Feed(**engine, after_three, 20, {3}, a.get());
      out_a += Feed(**engine, prefix, 23, {1}, a.get());
      out_b = Feed(**engine, prefix, 20, {kInvariantMaxRows}, b.get());
      ASSERT_EQ(out_a.size(), out_b.size());
      EXPECT_TRUE(out_a == out_b) << "the rows' outputs differ";
      EXPECT_EQ(a->Bytes(), b->Bytes());
      // The decode steps after the replay: each attends over every cached key and value of every
      // layer, so a bit changed there changes their outputs.
      EXPECT_TRUE(Feed(**engine, ids, prefix.size(), {1}, a.get()) ==
                  Feed(**engine, ids, prefix.size(), {1}, b.get()))
          << "the steps after the replay differ";
    }
  }
}

// Without the fused path (SWARM_FUSED_LAYERS=0: LibTorch, whose attention is one product over
// the step's rows) nothing is promised: the coordinator replays each step as it was.
TEST(ReplayChunks, LibTorchPathPromisesNoRowInvariance) {
  ScopedEnv off("SWARM_FUSED_LAYERS", "0");
  auto engine = Engine::Create(kShared + "/models/stories260K");
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->layers().InvariantStepRows(), 0);
}

}  // namespace
}  // namespace swarm::model
