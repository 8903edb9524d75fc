// LayerHost::ForwardBatch, the batched step of continuous batching, on every fixture model: a batch
// mixing sessions at different positions (decode tokens, a short chunk, a prefill chunk longer
// than kInvariantMaxRows) gives each session what it gets alone (and Hugging Face's logits);
// decode rows are bit-identical alone and in batches of any composition (batch invariance), their
// logits too; a bad sequence fails alone while the others complete; whole-call errors.
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "model/generate.h"
#include "model/layer_host.h"
#include "tests/model/fixtures.h"
#include "tools/synth.h"

namespace swarm::model {
namespace {

// One session of a test batch: its cache holds positions 0..start-1 (prefilled alone beforehand),
// and the step brings ids[start .. start+rows).
struct Step {
  int64_t start = 0;
  int64_t rows = 1;
};

class Batcher {
 public:
  Batcher(const Engine& engine, std::vector<int64_t> ids) : e_(engine), ids_(std::move(ids)) {}

  HostTensor Embed(int64_t start, int64_t rows) const {
    std::vector<int64_t> chunk(ids_.begin() + start, ids_.begin() + start + rows);
    auto h = e_.ends().Embed(chunk, start);
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? *h : HostTensor{};
  }

  // A cache holding positions 0..start-1, written by one Forward.
  std::unique_ptr<KvCache> Prefilled(int64_t start) const {
    std::unique_ptr<KvCache> cache = e_.layers().NewCache();
    if (start > 0) {
      auto out = e_.layers().Forward(Embed(0, start), 0, e_.layers().layers(), cache.get());
      EXPECT_TRUE(out.ok()) << out.status();
    }
    return cache;
  }

  // The step's output alone (Forward on its own cache).
  HostTensor Alone(const Step& s) const {
    std::unique_ptr<KvCache> cache = Prefilled(s.start);
    auto out =
        e_.layers().Forward(Embed(s.start, s.rows), s.start, e_.layers().layers(), cache.get());
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : HostTensor{};
  }

  // The steps as one ForwardBatch, each on its own cache; each step's output rows.
  std::vector<HostTensor> Batched(const std::vector<Step>& steps) const {
    std::vector<std::unique_ptr<KvCache>> caches;
    std::vector<BatchSequence> seqs;
    std::vector<HostTensor> parts;
    for (const Step& s : steps) {
      caches.push_back(Prefilled(s.start));
      seqs.push_back({s.start, s.rows, caches.back().get()});
      parts.push_back(Embed(s.start, s.rows));
    }
    auto out = e_.layers().ForwardBatch(Concat(parts), seqs, e_.layers().layers());
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return std::vector<HostTensor>(steps.size());
    std::vector<HostTensor> result;
    int64_t row = 0;
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_TRUE(out->status[i].ok()) << out->status[i];
      EXPECT_EQ(caches[i]->Length(e_.layers().layers()[0]), steps[i].start + steps[i].rows);
      result.push_back(RowsOf(out->hidden, row, steps[i].rows));
      row += steps[i].rows;
    }
    return result;
  }

  static HostTensor Concat(const std::vector<HostTensor>& parts) {
    HostTensor h;
    h.dtype = parts.at(0).dtype;
    h.shape = {0, parts[0].shape.at(1)};
    for (const HostTensor& p : parts) {
      h.data += p.data;
      h.shape[0] += p.shape[0];
    }
    return h;
  }
  static HostTensor RowsOf(const HostTensor& h, int64_t row, int64_t rows) {
    const int64_t row_bytes = h.shape[1] * DTypeSize(h.dtype);
    HostTensor t;
    t.dtype = h.dtype;
    t.shape = {rows, h.shape[1]};
    t.data = h.data.substr(row * row_bytes, rows * row_bytes);
    return t;
  }

  std::vector<float> Logits(const HostTensor& h) const {
    auto logits = LastRowLogits(e_.ends(), h);
    EXPECT_TRUE(logits.ok()) << logits.status();
    return logits.ok() ? logits->ToFloats() : std::vector<float>{};
  }

 private:
  const Engine& e_;
  const std::vector<int64_t> ids_;
};

class BatchTest : public ::testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    const Fixture& fx = GetParam();
    auto golden =
        SafetensorsFile::Open(kShared + "/fixtures/golden/" + fx.name + "/golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    auto engine = Engine::Create(fx.model_dir);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    ids_ = ReadIds(**golden, fx.sequences[0] + ".input_ids");
    golden_logits_ = ReadFloats(**golden, fx.sequences[0] + ".logits");
    ASSERT_GE(ids_.size(), 40u);
    batcher_ = std::make_unique<Batcher>(*engine_, ids_);
  }

  // Hugging Face's logits of positions start..start+rows-1.
  std::vector<float> GoldenRows(int64_t start, int64_t rows) const {
    const int64_t V = engine_->config().vocab_size;
    return std::vector<float>(golden_logits_.begin() + start * V,
                              golden_logits_.begin() + (start + rows) * V);
  }

  std::unique_ptr<Engine> engine_;
  std::vector<int64_t> ids_;
  std::vector<float> golden_logits_;
  std::unique_ptr<Batcher> batcher_;
};

// Decode tokens at several positions (one past the sliding window of mistral-swa's 16), a short
// chunk, and a 20-row prefill chunk (through gemm), not in row-length order.
TEST_P(BatchTest, MixedBatchGivesEachSessionWhatItGetsAlone) {
  const std::vector<Step> steps = {{5, 1}, {10, 20}, {12, 1}, {2, 3}, {33, 1}, {0, 4}};
  std::vector<HostTensor> batched = batcher_->Batched(steps);
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    SCOPED_TRACE("session at " + std::to_string(s.start) + ", " + std::to_string(s.rows) + " rows");
    HostTensor alone = batcher_->Alone(s);
    EXPECT_LT(MaxAbsDiff(batched[i].ToFloats(), alone.ToFloats()), 1e-4);
    std::vector<float> logits = batcher_->Logits(batched[i]);
    EXPECT_LT(MaxAbsDiff(logits, batcher_->Logits(alone)), 1e-4);
    EXPECT_LT(MaxAbsDiff(logits, GoldenRows(s.start, s.rows)), 1e-4);
    if (s.rows <= kInvariantMaxRows) {
      EXPECT_EQ(batched[i].data, alone.data) << "a short sequence's rows are batch-invariant";
    }
  }
}

// The property: a decode row is the same bytes alone and in batches of several compositions
// (other decode rows, more of them than kInvariantMaxRows, short and long chunks, any order); its
// logits too, alone and among the last rows of other sequences. Both with fused q/k/v and gate/up
// weights (copies) and with separate zero-copy views, whose activations see other shapes.
void ExpectDecodeRowsBitIdentical(const Engine& engine, const Batcher& batcher) {
  std::vector<Step> decodes;
  for (int64_t pos = 2; pos < 38; pos += 2) decodes.push_back({pos, 1});  // 18 sessions.
  std::vector<HostTensor> alone;
  std::vector<std::vector<float>> alone_logits;
  for (const Step& s : decodes) {
    alone.push_back(batcher.Alone(s));
    alone_logits.push_back(batcher.Logits(alone.back()));
  }
  const std::vector<std::vector<int>> compositions = {
      {0, 1, 2, 3},
      {3, 2, 1, 0, 7},
      {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17},
      {5, -20, 9, -3, 1},  // -n: a chunk of n rows of another session (at position 10).
      {-17, 4},
  };
  for (const std::vector<int>& comp : compositions) {
    std::vector<Step> steps;
    for (int i : comp) steps.push_back(i >= 0 ? decodes[i] : Step{10, -i});
    SCOPED_TRACE("batch of " + std::to_string(steps.size()) + " sequences");
    std::vector<HostTensor> out = batcher.Batched(steps);
    std::vector<HostTensor> last_rows;
    std::vector<int> decode_index;
    for (size_t j = 0; j < comp.size(); ++j) {
      if (comp[j] < 0) continue;
      EXPECT_EQ(out[j].data, alone[comp[j]].data) << "decode row at " << decodes[comp[j]].start;
      last_rows.push_back(out[j]);
      decode_index.push_back(comp[j]);
    }
    // The head over all the decode rows together (18 in one composition: more than the layers'
    // kInvariantMaxRows, one head product).
    const int64_t V = engine.config().vocab_size;
    const size_t n = last_rows.size();
    std::vector<float> logits = batcher.Logits(Batcher::Concat(last_rows));
    ASSERT_EQ(logits.size(), n * V);
    for (size_t r = 0; r < n; ++r) {
      const std::vector<float>& want = alone_logits[decode_index[r]];
      EXPECT_EQ(std::memcmp(logits.data() + r * V, want.data(), V * sizeof(float)), 0)
          << "logits of the decode row at " << decodes[decode_index[r]].start;
    }
  }
}

TEST_P(BatchTest, DecodeRowsAreBitIdenticalInAnyBatch) {
  SCOPED_TRACE("fused copies");
  ExpectDecodeRowsBitIdentical(*engine_, *batcher_);
  LoadOptions zero_copy;
  zero_copy.copy_weights = false;
  auto engine = Engine::Create(GetParam().model_dir, zero_copy);
  ASSERT_TRUE(engine.ok()) << engine.status();
  SCOPED_TRACE("zero-copy views");
  ExpectDecodeRowsBitIdentical(**engine, Batcher(**engine, ids_));
}

// A wrong start position and a step past the context fail with their own status, leave their
// caches as they were and their rows zero; the other sequences complete, unchanged.
TEST_P(BatchTest, ABadSequenceFailsAloneWhileTheOthersComplete) {
  const LayerHost& host = engine_->layers();
  const int64_t context = engine_->config().max_position_embeddings;
  auto ok1 = batcher_->Prefilled(5);
  auto wrong_start = batcher_->Prefilled(5);
  auto past_context = host.NewCache();
  auto ok2 = batcher_->Prefilled(12);
  HostTensor h = Batcher::Concat({batcher_->Embed(5, 1), batcher_->Embed(7, 2),
                                  batcher_->Embed(0, 1), batcher_->Embed(12, 3)});
  std::vector<BatchSequence> seqs = {{5, 1, ok1.get()},
                                     {7, 2, wrong_start.get()},
                                     {context, 1, past_context.get()},
                                     {12, 3, ok2.get()}};
  auto out = host.ForwardBatch(h, seqs, host.layers());
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->status.size(), 4u);
  EXPECT_TRUE(out->status[0].ok()) << out->status[0];
  EXPECT_EQ(out->status[1].code(), absl::StatusCode::kFailedPrecondition) << out->status[1];
  EXPECT_EQ(out->status[2].code(), absl::StatusCode::kOutOfRange) << out->status[2];
  EXPECT_TRUE(out->status[3].ok()) << out->status[3];
  const int first = host.layers()[0];
  EXPECT_EQ(wrong_start->Length(first), 5);
  EXPECT_EQ(past_context->Length(first), 0);
  EXPECT_EQ(ok1->Length(first), 6);
  EXPECT_EQ(ok2->Length(first), 15);
  EXPECT_EQ(Batcher::RowsOf(out->hidden, 0, 1).data, batcher_->Alone({5, 1}).data);
  EXPECT_EQ(Batcher::RowsOf(out->hidden, 4, 3).data, batcher_->Alone({12, 3}).data);
  const std::string zeros(3 * h.shape[1] * DTypeSize(h.dtype), '\0');
  EXPECT_EQ(Batcher::RowsOf(out->hidden, 1, 3).data, zeros);
}

TEST_P(BatchTest, WholeCallErrorsAreInvalidArgument) {
  const LayerHost& host = engine_->layers();
  auto a = host.NewCache(), b = host.NewCache();
  HostTensor h = batcher_->Embed(0, 3);
  auto code = [&](const HostTensor& x, std::vector<BatchSequence> seqs, std::vector<int> layers) {
    auto out = host.ForwardBatch(x, seqs, layers);
    return out.ok() ? absl::StatusCode::kOk : out.status().code();
  };
  const std::vector<int> all = host.layers();
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(h, {{0, 1, a.get()}, {0, 1, b.get()}}, all), kInvalid) << "2 of 3 rows";
  EXPECT_EQ(code(h, {{0, 2, a.get()}, {0, 2, b.get()}}, all), kInvalid) << "4 of 3 rows";
  EXPECT_EQ(code(h, {{0, 0, a.get()}, {0, 3, b.get()}}, all), kInvalid) << "a sequence of 0 rows";
  EXPECT_EQ(code(h, {{0, 1, a.get()}, {0, 2, a.get()}}, all), kInvalid) << "a shared cache";
  EXPECT_EQ(code(h, {{0, 3, nullptr}}, all), kInvalid) << "no cache";
  EXPECT_EQ(code(h, {}, all), kInvalid) << "no sequences";
  EXPECT_EQ(code(h, {{0, 3, a.get()}}, {static_cast<int>(engine_->config().num_layers)}), kInvalid)
      << "layer";
  HostTensor narrow = h;
  narrow.shape[1] -= 1;
  narrow.data.resize(narrow.shape[0] * narrow.shape[1] * DTypeSize(h.dtype));
  EXPECT_EQ(code(narrow, {{0, 3, a.get()}}, all), kInvalid) << "hidden width";
  EXPECT_EQ(a->Length(all[0]), 0);
  EXPECT_EQ(b->Length(all[0]), 0);
  EXPECT_EQ(code(h, {{0, 1, a.get()}, {0, 2, b.get()}}, all), absl::StatusCode::kOk);
}

// More last rows than one head product takes (kInvariantHeadRows): LastRowLogits splits them, and
// every row's logits are still the bits it gets alone.
TEST_P(BatchTest, LastRowLogitsPastOneHeadProductAreTheRowsAlone) {
  std::vector<HostTensor> pieces;
  for (int64_t rows = 0; rows < kInvariantHeadRows + 5; rows += 4) {
    pieces.push_back(batcher_->Embed((rows / 4) % 9 * 4, 4));
  }
  const HostTensor h = Batcher::Concat(pieces);
  const int64_t n = h.shape[0];
  ASSERT_GT(n, kInvariantHeadRows);
  auto all = LastRowLogits(engine_->ends(), h);
  ASSERT_TRUE(all.ok()) << all.status();
  const int64_t V = engine_->config().vocab_size;
  ASSERT_EQ(all->shape, (std::vector<int64_t>{n, V}));
  const std::vector<float> got = all->ToFloats();
  for (int64_t r : {int64_t{0}, int64_t{1}, kInvariantHeadRows - 1, kInvariantHeadRows, n - 1}) {
    const std::vector<float> want = batcher_->Logits(Batcher::RowsOf(h, r, 1));
    ASSERT_EQ(want.size(), static_cast<size_t>(V));
    EXPECT_EQ(std::memcmp(got.data() + r * V, want.data(), V * sizeof(float)), 0) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, BatchTest, ::testing::ValuesIn(Fixtures()), FixtureTestName);

// At sizes where LibTorch splits elementwise ops and row reductions (norms) between threads and
// vector tails fall inside rows (an intermediate size that is no multiple of 16): decode rows stay
// bit-identical alone and next to 20 other decode rows and a 64-row chunk.
TEST(BatchInvariance, HoldsWhereLibTorchSplitsRowwiseWork) {
  const std::string dir = ::testing::TempDir() + "/swarm_batch_synth";
  std::filesystem::remove_all(dir);
  tools::SynthOptions o;
  o.layers = 2;
  o.hidden = 512;
  o.intermediate = 1380;
  o.heads = 8;
  o.kv_heads = 2;
  o.vocab = 300;
  o.max_position = 256;
  o.seed = 7;
  o.out_dir = dir;
  ASSERT_TRUE(tools::WriteSynthModel(o).ok());
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 100; ++i) ids.push_back(3 + (i * 37) % 290);
  for (bool copy : {true, false}) {
    SCOPED_TRACE(copy ? "fused copies" : "zero-copy views");
    LoadOptions options;
    options.copy_weights = copy;
    auto engine = Engine::Create(dir, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    Batcher batcher(**engine, ids);
    std::vector<Step> steps = {{20, 64}};
    for (int64_t pos = 1; pos <= 21; ++pos) steps.push_back({pos, 1});
    std::vector<HostTensor> out = batcher.Batched(steps);
    for (size_t i = 1; i < steps.size(); ++i) {
      EXPECT_EQ(out[i].data, batcher.Alone(steps[i]).data) << "decode row at " << steps[i].start;
    }
    EXPECT_LT(MaxAbsDiff(out[0].ToFloats(), batcher.Alone(steps[0]).ToFloats()), 1e-4);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace swarm::model
