// Worker::ForwardBatch (continuous batching, without gRPC): sessions at different positions —
// prefill chunks and decode rows in one call — get what separate Forward calls give them
// (bit-identical through LayerHost's per-sequence default ForwardBatch, within 1e-4 of the golden
// hidden states through the model's own), each step's failure is its own, whole-call errors
// change nothing, two batches over the same sessions in opposite orders do not deadlock, and a
// ResidentLayerHost (--memory-budget) runs a batch unit by unit, loading each unit once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor_rows.h"
#include "model/checkpoint.h"
#include "model/layer_host.h"
#include "model/weights.h"
#include "tests/coordinator/test_cluster.h"
#include "worker/block_residency.h"
#include "worker/worker.h"

namespace swarm::worker {
namespace {

using ::swarm::testing::GoldenFloats;
using ::swarm::testing::ModelDir;

// A LayerHost whose ForwardBatch is LayerHost's default (Forward per sequence) over a real host's
// Forward, counting the calls: the reference semantics of a batch, bit for bit.
class LoopingHost : public model::LayerHost {
 public:
  explicit LoopingHost(std::unique_ptr<model::LayerHost> inner) : inner_(std::move(inner)) {}
  const std::vector<int>& layers() const override { return inner_->layers(); }
  bool Hosts(int layer) const override { return inner_->Hosts(layer); }
  const model::ModelConfig& config() const override { return inner_->config(); }
  int64_t WeightBytes() const override { return inner_->WeightBytes(); }
  int64_t KvBytesPerToken() const override { return inner_->KvBytesPerToken(); }
  std::unique_ptr<model::KvCache> NewCache(int64_t capacity) const override {
    return inner_->NewCache(capacity);
  }
  absl::StatusOr<HostTensor> Forward(const HostTensor& h, int64_t start_pos,
                                     absl::Span<const int> layers,
                                     model::KvCache* cache) const override {
    return inner_->Forward(h, start_pos, layers, cache);
  }
  absl::StatusOr<model::BatchOutput> ForwardBatch(const HostTensor& h,
                                                  absl::Span<const model::BatchSequence> sequences,
                                                  absl::Span<const int> layers) const override {
    batch_calls_.fetch_add(1);
    return model::LayerHost::ForwardBatch(h, sequences, layers);
  }
  int batch_calls() const { return batch_calls_.load(); }

 private:
  std::unique_ptr<model::LayerHost> inner_;
  mutable std::atomic<int> batch_calls_{0};
};

std::unique_ptr<model::LayerHost> NativeHost(const std::string& model, std::vector<int> layers) {
  auto ckpt = model::Checkpoint::Open(ModelDir(model));
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return nullptr;
  auto host = model::LayerHost::Create(*ckpt, std::move(layers), model::LoadOptions());
  EXPECT_TRUE(host.ok()) << host.status();
  return host.ok() ? *std::move(host) : nullptr;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Rows [begin, begin + count) of a [T, d] golden tensor.
HostTensor GoldenRows(const std::vector<float>& all, int64_t d, int64_t begin, int64_t count) {
  return HostTensor::FromFloats(
      {count, d}, std::vector<float>(all.begin() + begin * d, all.begin() + (begin + count) * d));
}

// One step of a scenario: session `s` (an index), `count` golden rows from `start`.
struct Step {
  int s;
  int64_t start;
  int64_t count;
};

// Sequence and layers per fixture model: stories260K's "greedy" (48 positions), the random
// models' "long" (40); the layers' output is golden hidden.<last layer + 1>.
struct Fixture {
  std::string model;
  std::string sequence;
};

class BatchMatchesSeparateStepsTest : public ::testing::TestWithParam<Fixture> {};

// Rounds of batches mixing prefill chunks and decode rows of four sessions at different
// positions, joining and leaving; the same steps run one by one on a second worker.
const std::vector<std::vector<Step>>& Rounds() {
  static const auto* rounds = new std::vector<std::vector<Step>>{
      {{0, 0, 10}, {1, 0, 4}, {2, 0, 1}},
      {{0, 10, 1}, {1, 4, 8}, {2, 1, 1}, {3, 0, 20}},
      {{3, 20, 1}, {0, 11, 1}, {2, 2, 1}, {1, 12, 1}},
      {{1, 13, 1}, {3, 21, 6}},
      {{2, 3, 1}},
  };
  return *rounds;
}

void RunScenario(const Fixture& f, bool looping) {
  const std::vector<int> layers = {0, 1};
  const std::vector<float> h0 = GoldenFloats(f.model, f.sequence + ".hidden.0");
  const std::vector<float> h2 = GoldenFloats(f.model, f.sequence + ".hidden.2");
  auto make = [&]() -> std::unique_ptr<model::LayerHost> {
    auto native = NativeHost(f.model, layers);
    if (native == nullptr || !looping) return native;
    return std::make_unique<LoopingHost>(std::move(native));
  };
  auto batched_host = make();
  auto single_host = make();
  ASSERT_NE(batched_host, nullptr);
  ASSERT_NE(single_host, nullptr);
  const int64_t d = batched_host->config().hidden_size;
  const LoopingHost* looping_host =
      looping ? static_cast<LoopingHost*>(batched_host.get()) : nullptr;
  Worker batched(std::move(batched_host), SessionLimits{});
  Worker single(std::move(single_host), SessionLimits{});
  std::vector<std::string> b_ids, s_ids;
  for (int i = 0; i < 4; ++i) {
    auto b = batched.OpenSession(0);
    auto s = single.OpenSession(0);
    ASSERT_TRUE(b.ok() && s.ok());
    b_ids.push_back(*b);
    s_ids.push_back(*s);
  }
  std::map<int, uint64_t> next_step;
  int calls = 0;
  for (const std::vector<Step>& round : Rounds()) {
    BatchRequest batch;
    batch.layers = layers;
    HostTensor hidden = HostTensor::FromFloats({0, d}, {});
    std::vector<std::vector<float>> alone;
    for (const Step& st : round) {
      const uint64_t id = ++next_step[st.s];
      batch.steps.push_back({b_ids[st.s], id, st.start, st.count, 1.0f});
      const HostTensor rows = GoldenRows(h0, d, st.start, st.count);
      hidden.shape[0] += st.count;
      hidden.data += rows.data;
      StepRequest one;
      one.session_id = s_ids[st.s];
      one.step_id = id;
      one.start_position = st.start;
      one.layers = layers;
      auto r = single.Forward(one, rows);
      ASSERT_TRUE(r.ok()) << r.status();
      alone.push_back(r->hidden.ToFloats());
    }
    auto result = batched.ForwardBatch(batch, std::move(hidden));
    ++calls;
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->steps.size(), round.size());
    EXPECT_EQ(result->sequences_computed, static_cast<int>(round.size()));
    int64_t row = 0;
    for (size_t k = 0; k < round.size(); ++k) {
      const Step& st = round[k];
      ASSERT_TRUE(result->steps[k].status.ok()) << result->steps[k].status;
      EXPECT_EQ(result->steps[k].length, st.start + st.count);
      EXPECT_FALSE(result->steps[k].replayed);
      auto mine = SliceRows(result->hidden, row, st.count);
      ASSERT_TRUE(mine.ok());
      row += st.count;
      const std::vector<float> got = mine->ToFloats();
      const std::vector<float> golden = GoldenRows(h2, d, st.start, st.count).ToFloats();
      EXPECT_LT(MaxAbsDiff(got, golden), 1e-4) << f.model << " session " << st.s;
      if (looping) {
        EXPECT_EQ(got, alone[k]) << "session " << st.s << " at " << st.start;
      } else {
        EXPECT_LT(MaxAbsDiff(got, alone[k]), 1e-4) << "session " << st.s << " at " << st.start;
      }
    }
  }
  if (looping_host != nullptr) {
    EXPECT_EQ(looping_host->batch_calls(), calls);  // One LayerHost call per batch.
  }
  const WorkerStats stats = batched.Stats();
  size_t steps = 0;
  int64_t rows = 0;
  for (const auto& round : Rounds()) {
    steps += round.size();
    for (const Step& st : round) rows += st.count;
  }
  EXPECT_EQ(stats.batches_total, static_cast<uint64_t>(calls));
  EXPECT_EQ(stats.batch_sequences_total, steps);
  EXPECT_EQ(stats.batch_rows_total, static_cast<uint64_t>(rows));
  EXPECT_EQ(stats.steps_total, steps);
  EXPECT_EQ(stats.tokens_total, static_cast<uint64_t>(rows));
  EXPECT_GT(stats.busy_seconds, 0);
  EXPECT_EQ(stats.inflight_steps, 0);
}

TEST_P(BatchMatchesSeparateStepsTest, ThroughTheDefaultPerSequenceBatchBitForBit) {
  RunScenario(GetParam(), /*looping=*/true);
}

TEST_P(BatchMatchesSeparateStepsTest, ThroughTheModelsOwnBatchWithinTheContract) {
  RunScenario(GetParam(), /*looping=*/false);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchMatchesSeparateStepsTest,
                         ::testing::Values(Fixture{"stories260K", "greedy"},
                                           Fixture{"llama-gqa", "long"}, Fixture{"qwen2", "long"},
                                           Fixture{"mistral-swa", "long"}, Fixture{"gpt2", "long"}),
                         [](const ::testing::TestParamInfo<Fixture>& info) {
                           std::string name = info.param.model;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// stories260K layers 0-1 behind a LoopingHost, with a KV budget, for the per-step rules.
class BatchStepRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto native = NativeHost("stories260K", {0, 1});
    ASSERT_NE(native, nullptr);
    per_token_ = native->KvBytesPerToken();
    d_ = native->config().hidden_size;
    SessionLimits limits;
    limits.max_sessions = 8;
    limits.kv_budget_bytes = budget_tokens_ * per_token_;
    auto host = std::make_unique<LoopingHost>(std::move(native));
    host_ = host.get();
    worker_ = std::make_unique<Worker>(std::move(host), limits);
    reference_ = std::make_unique<Worker>(NativeHost("stories260K", {0, 1}), SessionLimits{});
    h0_ = GoldenFloats("stories260K", "greedy.hidden.0");
  }

  std::string Open(int64_t max_length) {
    auto id = worker_->OpenSession(max_length);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : "";
  }

  // The rows a session alone gets for `count` golden rows from position 0 (a fresh session).
  std::vector<float> Alone(int64_t count) {
    auto id = reference_->OpenSession(0);
    EXPECT_TRUE(id.ok());
    StepRequest r;
    r.session_id = *id;
    r.step_id = 1;
    r.layers = {0, 1};
    auto out = reference_->Forward(r, GoldenRows(h0_, d_, 0, count));
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->hidden.ToFloats() : std::vector<float>();
  }

  // A batch over layers 0-1 whose steps bring golden rows [start, start + positions) (from 0
  // for a start past the golden sequence).
  absl::StatusOr<BatchResult> Run(const std::vector<BatchStepRequest>& steps) {
    BatchRequest batch;
    batch.layers = {0, 1};
    batch.steps = steps;
    HostTensor hidden = HostTensor::FromFloats({0, d_}, {});
    const int64_t golden_rows = static_cast<int64_t>(h0_.size()) / d_;
    for (const BatchStepRequest& s : steps) {
      const int64_t begin = s.start_position + s.positions <= golden_rows ? s.start_position : 0;
      const HostTensor rows = GoldenRows(h0_, d_, begin, s.positions);
      hidden.shape[0] += rows.shape[0];
      hidden.data += rows.data;
    }
    return worker_->ForwardBatch(batch, std::move(hidden));
  }

  static std::vector<float> RowsOf(const BatchResult& r, int64_t begin, int64_t count) {
    auto rows = SliceRows(r.hidden, begin, count);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? rows->ToFloats() : std::vector<float>();
  }

  const int64_t budget_tokens_ = 36;
  int64_t per_token_ = 0;
  int64_t d_ = 0;
  LoopingHost* host_ = nullptr;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<Worker> reference_;
  std::vector<float> h0_;
};

TEST_F(BatchStepRulesTest, EachStepFailsOnItsOwnAndTheOthersComplete) {
  // 36 positions of budget: a, b, c and d reserve 8 each, e and f 2 each.
  const std::string a = Open(8), b = Open(8), c = Open(8), d = Open(8), e = Open(2), f = Open(2);
  auto first = Run({{a, 1, 0, 5}, {b, 1, 0, 3}});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::vector<float> b_first = RowsOf(*first, 5, 3);
  const uint64_t steps_before = worker_->Stats().steps_total;

  auto r = Run({
      {"no-such-session", 1, 0, 1},  // NOT_FOUND
      {a, 2, 7, 1},                  // a holds 5 positions: FAILED_PRECONDITION
      {b, 1, 0, 3},                  // b's last step again: replayed
      {c, 1, 0, 4},                  // fine
      {d, 1, 0, 9},                  // grows d from 8 to 9 positions: over the budget
      {e, 0, 0, 1},                  // step_id 0: INVALID_ARGUMENT
      {f, 1, 510, 3},                // past the context of 512: OUT_OF_RANGE
  });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->steps.size(), 7u);
  const std::vector<absl::StatusCode> codes = {absl::StatusCode::kNotFound,
                                               absl::StatusCode::kFailedPrecondition,
                                               absl::StatusCode::kOk,
                                               absl::StatusCode::kOk,
                                               absl::StatusCode::kResourceExhausted,
                                               absl::StatusCode::kInvalidArgument,
                                               absl::StatusCode::kOutOfRange};
  for (size_t k = 0; k < codes.size(); ++k) {
    EXPECT_EQ(r->steps[k].status.code(), codes[k]) << k << ": " << r->steps[k].status;
  }
  EXPECT_NE(r->steps[0].status.message().find("no-such-session"), std::string::npos);
  EXPECT_TRUE(r->steps[2].replayed);
  EXPECT_EQ(r->steps[2].length, 3);
  EXPECT_FALSE(r->steps[3].replayed);
  EXPECT_EQ(r->steps[3].length, 4);
  // Rows: 1 (unknown) + 1 (a) + 3 (b) + 4 (c) + 9 (d) + 1 (e) + 3 (f).
  EXPECT_EQ(r->hidden.shape, (std::vector<int64_t>{22, d_}));
  EXPECT_EQ(RowsOf(*r, 2, 3), b_first);   // The cached reply, as it was.
  EXPECT_EQ(RowsOf(*r, 5, 4), Alone(4));  // c as if alone.
  for (auto [begin, count] : {std::pair<int64_t, int64_t>{0, 2}, {9, 13}}) {
    EXPECT_EQ(RowsOf(*r, begin, count), std::vector<float>(count * d_, 0.0f)) << begin;
  }
  // Only c's step was computed: one pass of one sequence; the replay is not a new step.
  EXPECT_EQ(r->sequences_computed, 1);
  EXPECT_EQ(r->rows_computed, 4);
  EXPECT_EQ(worker_->Stats().steps_total, steps_before + 1);

  // Nothing of the failed steps was applied: each one's right step works now.
  auto next = Run({{a, 2, 5, 1}, {d, 1, 0, 8}, {e, 1, 0, 1}, {f, 1, 0, 2}, {b, 2, 3, 1}});
  ASSERT_TRUE(next.ok()) << next.status();
  for (const BatchStepOutcome& o : next->steps) EXPECT_TRUE(o.status.ok()) << o.status;
  // An older step id, or the last id with other contents, is ALREADY_EXISTS; the rest go on.
  auto dup = Run({{b, 1, 0, 3}, {c, 2, 4, 1}, {a, 2, 0, 1}});
  ASSERT_TRUE(dup.ok()) << dup.status();
  EXPECT_EQ(dup->steps[0].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(dup->steps[1].status.ok()) << dup->steps[1].status;
  EXPECT_EQ(dup->steps[2].status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(worker_->Stats().sessions, 6);
}

TEST_F(BatchStepRulesTest, ANonFiniteRowFailsItsOwnStepOnly) {
  const std::string a = Open(8), b = Open(8), c = Open(8);
  BatchRequest batch;
  batch.layers = {0, 1};
  batch.steps = {{a, 1, 0, 2, 1.0f}, {b, 1, 0, 3, 1.0f}, {c, 1, 0, 4, 1.0f}};
  HostTensor hidden = GoldenRows(h0_, d_, 0, 2);
  hidden.data += GoldenRows(h0_, d_, 0, 3).data;
  hidden.data += GoldenRows(h0_, d_, 0, 4).data;
  hidden.shape[0] = 9;
  std::vector<float> v = hidden.ToFloats();
  v[(2 + 1) * d_ + 5] = std::numeric_limits<float>::quiet_NaN();  // b's second row.
  hidden = HostTensor::FromFloats(hidden.shape, v);
  auto r = worker_->ForwardBatch(batch, std::move(hidden));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->steps.size(), 3u);
  EXPECT_EQ(r->steps[1].status.code(), absl::StatusCode::kInvalidArgument) << r->steps[1].status;
  EXPECT_NE(r->steps[1].status.message().find("row 3, column 5"), std::string::npos)
      << r->steps[1].status;
  EXPECT_TRUE(r->steps[0].status.ok()) << r->steps[0].status;
  EXPECT_TRUE(r->steps[2].status.ok()) << r->steps[2].status;
  EXPECT_EQ(RowsOf(*r, 0, 2), Alone(2));
  EXPECT_EQ(RowsOf(*r, 5, 4), Alone(4));
  EXPECT_EQ(r->rows_computed, 6);
  // b's session was not touched: its first step runs now.
  auto again = Run({{b, 1, 0, 3}});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->steps[0].status.ok()) << again->steps[0].status;
  EXPECT_FALSE(again->steps[0].replayed);
}

TEST_F(BatchStepRulesTest, WholeCallErrorsApplyNothing) {
  const std::string a = Open(8), b = Open(8);
  auto code = [&](const BatchRequest& batch, HostTensor hidden) {
    return worker_->ForwardBatch(batch, std::move(hidden)).status().code();
  };
  const HostTensor two = GoldenRows(h0_, d_, 0, 2);
  BatchRequest ok;
  ok.layers = {0, 1};
  ok.steps = {{a, 1, 0, 1, 1.0f}, {b, 1, 0, 1, 1.0f}};
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

  BatchRequest none = ok;
  none.steps.clear();
  EXPECT_EQ(code(none, two), kInvalid);
  BatchRequest twice = ok;
  twice.steps[1].session_id = a;
  EXPECT_EQ(code(twice, two), kInvalid);
  auto s = worker_->ForwardBatch(twice, two).status();
  EXPECT_NE(s.message().find("more than one step"), std::string::npos) << s;
  BatchRequest short_rows = ok;
  short_rows.steps[1].positions = 2;  // 3 positions for 2 rows.
  EXPECT_EQ(code(short_rows, two), kInvalid);
  BatchRequest long_rows = ok;
  long_rows.steps.pop_back();  // 1 position for 2 rows.
  EXPECT_EQ(code(long_rows, two), kInvalid);
  BatchRequest zero = ok;
  zero.steps[0].positions = 0;
  zero.steps[1].positions = 2;
  EXPECT_EQ(code(zero, two), kInvalid);
  for (std::vector<int> layers : {std::vector<int>{}, {1, 0}, {0, 0}, {0, 2}}) {
    BatchRequest bad = ok;
    bad.layers = layers;
    EXPECT_EQ(code(bad, two), kInvalid);
  }
  EXPECT_EQ(code(ok, HostTensor::FromFloats({2, d_ + 1}, std::vector<float>(2 * (d_ + 1)))),
            kInvalid);
  EXPECT_EQ(code(ok, HostTensor::FromFloats({2 * d_}, std::vector<float>(2 * d_))), kInvalid);
  EXPECT_EQ(code(ok, HostTensor::FromFloats({0, d_}, {})), kInvalid);
  // More steps than sessions could be open (8): refused before any lookup.
  BatchRequest many;
  many.layers = {0, 1};
  for (int i = 0; i < 9; ++i) many.steps.push_back({absl::StrCat("s", i), 1, 0, 1, 1.0f});
  EXPECT_EQ(code(many, GoldenRows(h0_, d_, 0, 9)), kInvalid);

  EXPECT_EQ(host_->batch_calls(), 0);
  EXPECT_EQ(worker_->Stats().steps_total, 0u);
  // The sessions are untouched: their first steps run now.
  auto r = worker_->ForwardBatch(ok, two);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->steps[0].status.ok() && r->steps[1].status.ok());
}

TEST_F(BatchStepRulesTest, ForwardIsABatchOfOne) {
  const std::string a = Open(8);
  StepRequest step;
  step.session_id = a;
  step.step_id = 1;
  step.layers = {0, 1};
  auto r = worker_->Forward(step, GoldenRows(h0_, d_, 0, 3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(host_->batch_calls(), 1);
  EXPECT_EQ(r->hidden.ToFloats(), Alone(3));
  // Its duplicate in a batch is the same step: replayed there.
  auto again = Run({{a, 1, 0, 3}});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->steps[0].replayed);
  EXPECT_EQ(again->hidden.ToFloats(), r->hidden.ToFloats());
  EXPECT_EQ(host_->batch_calls(), 1);
  // A duplicate carrying another number of positions is not the same step.
  auto other = Run({{a, 1, 0, 2}});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->steps[0].status.code(), absl::StatusCode::kAlreadyExists);
}

TEST(WorkerLockOrderTest, BatchesOverTheSameSessionsInOppositeOrdersDoNotDeadlock) {
  Worker worker(NativeHost("stories260K", {0, 1}), SessionLimits{});
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  auto a = worker.OpenSession(0);
  auto b = worker.OpenSession(0);
  ASSERT_TRUE(a.ok() && b.ok());
  // Each thread runs its own layer (0 or 1), so their positions never clash; the step ids are
  // shared by both threads, so a step may lose the race (ALREADY_EXISTS) and is then retried.
  std::atomic<uint64_t> next_id{0};
  std::atomic<int> bad{0};
  auto run = [&](std::vector<std::string> order, int layer) {
    std::map<std::string, int64_t> pos;
    for (int i = 0; i < 150; ++i) {
      BatchRequest batch;
      batch.layers = {layer};
      for (const std::string& id : order) {
        batch.steps.push_back({id, next_id.fetch_add(1) + 1, pos[id], 1, 1.0f});
      }
      auto r = worker.ForwardBatch(batch, GoldenRows(h0, 64, 0, 2));
      if (!r.ok()) {
        bad.fetch_add(1);
        continue;
      }
      for (size_t k = 0; k < order.size(); ++k) {
        const absl::Status& s = r->steps[k].status;
        if (s.ok()) {
          ++pos[order[k]];
        } else if (s.code() != absl::StatusCode::kAlreadyExists) {
          bad.fetch_add(1);
        }
      }
    }
  };
  std::thread t1(run, std::vector<std::string>{*a, *b}, 0);
  std::thread t2(run, std::vector<std::string>{*b, *a}, 1);
  t1.join();
  t2.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(worker.Stats().inflight_steps, 0);
  EXPECT_GT(worker.Stats().steps_total, 0u);
}

TEST(WorkerListenerTest, SeesEveryPassAndTheBusyTime) {
  std::vector<std::pair<int, int64_t>> batches;
  double busy = 0;
  WorkerListener listener;
  listener.on_batch = [&](int sequences, int64_t rows) { batches.emplace_back(sequences, rows); };
  listener.on_busy = [&](double seconds) { busy += seconds; };
  Worker worker(NativeHost("stories260K", {0}), SessionLimits{}, listener);
  const std::vector<float> h0 = GoldenFloats("stories260K", "greedy.hidden.0");
  auto a = worker.OpenSession(0);
  auto b = worker.OpenSession(0);
  ASSERT_TRUE(a.ok() && b.ok());
  BatchRequest batch;
  batch.layers = {0};
  batch.steps = {{*a, 1, 0, 3, 1.0f}, {*b, 1, 0, 2, 1.0f}, {"gone", 1, 0, 1, 1.0f}};
  ASSERT_TRUE(worker.ForwardBatch(batch, GoldenRows(h0, 64, 0, 6)).ok());
  StepRequest one;
  one.session_id = *a;
  one.step_id = 2;
  one.start_position = 3;
  one.layers = {0};
  ASSERT_TRUE(worker.Forward(one, GoldenRows(h0, 64, 3, 1)).ok());
  one.step_id = 2;  // A replay computes nothing.
  ASSERT_TRUE(worker.Forward(one, GoldenRows(h0, 64, 3, 1)).ok());
  EXPECT_EQ(batches, (std::vector<std::pair<int, int64_t>>{{2, 5}, {1, 1}}));
  EXPECT_GT(busy, 0);
  EXPECT_DOUBLE_EQ(busy, worker.Stats().busy_seconds);
}

// ResidentLayerHost::ForwardBatch: all five layers with room for one at a time.
class ResidentBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ckpt = model::Checkpoint::Open(ModelDir("stories260K"));
    ASSERT_TRUE(ckpt.ok());
    auto one = model::LayerHost::Create(*ckpt, {0}, model::LoadOptions());
    ASSERT_TRUE(one.ok());
    auto paged =
        ResidentLayerHost::Create(*ckpt, all_, model::LoadOptions(), 1, (*one)->WeightBytes());
    ASSERT_TRUE(paged.ok()) << paged.status();
    paged_ = *std::move(paged);
    auto whole = model::LayerHost::Create(*ckpt, all_, model::LoadOptions());
    ASSERT_TRUE(whole.ok());
    whole_ = *std::move(whole);
    h0_ = GoldenFloats("stories260K", "greedy.hidden.0");
  }
  const std::vector<int> all_ = {0, 1, 2, 3, 4};
  std::unique_ptr<ResidentLayerHost> paged_;
  std::unique_ptr<model::LayerHost> whole_;
  std::vector<float> h0_;
};

TEST_F(ResidentBatchTest, LoadsEachUnitOnceForTheWholeBatchAndMatchesOneHost) {
  Worker paged(std::move(paged_), SessionLimits{});
  const ResidentLayerHost& host = static_cast<const ResidentLayerHost&>(paged.host());
  Worker whole(std::move(whole_), SessionLimits{});
  std::vector<std::string> p_ids, w_ids;
  for (int i = 0; i < 3; ++i) {
    p_ids.push_back(*paged.OpenSession(0));
    w_ids.push_back(*whole.OpenSession(0));
  }
  const std::vector<std::vector<Step>> rounds = {{{0, 0, 6}, {1, 0, 2}, {2, 0, 9}},
                                                 {{0, 6, 1}, {1, 2, 1}, {2, 9, 1}},
                                                 {{2, 10, 1}, {0, 7, 3}, {1, 3, 1}}};
  uint64_t id = 0;
  for (const auto& round : rounds) {
    ++id;
    BatchRequest pb, wb;
    pb.layers = wb.layers = all_;
    HostTensor hidden = HostTensor::FromFloats({0, 64}, {});
    for (const Step& st : round) {
      pb.steps.push_back({p_ids[st.s], id, st.start, st.count, 1.0f});
      wb.steps.push_back({w_ids[st.s], id, st.start, st.count, 1.0f});
      const HostTensor rows = GoldenRows(h0_, 64, st.start, st.count);
      hidden.shape[0] += st.count;
      hidden.data += rows.data;
    }
    const ResidencyStats before = host.Stats();
    auto p = paged.ForwardBatch(pb, hidden);
    auto w = whole.ForwardBatch(wb, hidden);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(w.ok()) << w.status();
    for (size_t k = 0; k < round.size(); ++k) {
      EXPECT_TRUE(p->steps[k].status.ok()) << p->steps[k].status;
      EXPECT_TRUE(w->steps[k].status.ok()) << w->steps[k].status;
    }
    EXPECT_LT(MaxAbsDiff(p->hidden.ToFloats(), w->hidden.ToFloats()), 1e-4);
    // Each of the five units is acquired once for the three sessions, not once per session.
    const ResidencyStats after = host.Stats();
    EXPECT_EQ((after.loads_total - before.loads_total) + (after.hits_total - before.hits_total),
              5u);
    EXPECT_LE(after.max_resident_bytes, after.budget_bytes);
  }
}

TEST_F(ResidentBatchTest, ASequenceFailingInOneUnitIsLeftOutOfTheNext) {
  auto good1 = paged_->NewCache(), bad = paged_->NewCache(), good2 = paged_->NewCache();
  auto ref1 = whole_->NewCache(), ref2 = whole_->NewCache();
  const HostTensor rows = GoldenRows(h0_, 64, 0, 7);  // 3 + 2 + 2 rows.
  const std::vector<model::BatchSequence> seqs = {
      {0, 3, good1.get()}, {4, 2, bad.get()}, {0, 2, good2.get()}};  // bad holds 0, not 4.
  auto out = paged_->ForwardBatch(rows, seqs, all_);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->status.size(), 3u);
  EXPECT_TRUE(out->status[0].ok()) << out->status[0];
  EXPECT_EQ(out->status[1].code(), absl::StatusCode::kFailedPrecondition) << out->status[1];
  EXPECT_TRUE(out->status[2].ok()) << out->status[2];
  for (int l : all_) EXPECT_EQ(bad->Length(l), 0) << l;
  // The others as the one-host reference; the failed rows are zeros.
  auto a = whole_->Forward(GoldenRows(h0_, 64, 0, 3), 0, all_, ref1.get());
  auto c = whole_->Forward(GoldenRows(h0_, 64, 5, 2), 0, all_, ref2.get());
  ASSERT_TRUE(a.ok() && c.ok());
  EXPECT_LT(MaxAbsDiff(SliceRows(out->hidden, 0, 3)->ToFloats(), a->ToFloats()), 1e-4);
  EXPECT_EQ(SliceRows(out->hidden, 3, 2)->ToFloats(), std::vector<float>(2 * 64, 0.0f));
  EXPECT_LT(MaxAbsDiff(SliceRows(out->hidden, 5, 2)->ToFloats(), c->ToFloats()), 1e-4);
  // Whole-call errors are the call's.
  EXPECT_EQ(paged_->ForwardBatch(rows, seqs, {5}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(paged_->ForwardBatch(rows, {}, all_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace swarm::worker
