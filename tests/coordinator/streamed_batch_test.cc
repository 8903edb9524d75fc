// The scheduler's streamed batch path (ForwardBatchStream, scheduler.cc): a micro-batch whose
// hidden states are larger than one message piece (rpc kMaxTensorPieceBytes) travels as a stream
// of pieces to the worker and back. A prompt of a synthetic d=768 Llama prefilled in one chunk
// (1,100 rows x 768 x 4 bytes = 3.2 MiB > 3 MiB) through 2 workers gives exactly the ids the
// in-process engine gives (greedy, and seeded), and the workers saw a pass of more rows than a
// single message can carry.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/pipeline.h"
#include "coordinator/worker_set.h"
#include "model/generate.h"
#include "rpc/channel.h"
#include "tests/coordinator/test_cluster.h"
#include "tools/synth.h"
#include "worker/worker_server.h"

namespace swarm::coordinator {
namespace {

constexpr int64_t kHidden = 768;

// The largest pass (rows) any worker computed.
class RowsObserver : public worker::WorkerObserver {
 public:
  void OnBatch(int /*sequences*/, int64_t rows) override {
    int64_t seen = max_rows_.load();
    while (rows > seen && !max_rows_.compare_exchange_weak(seen, rows)) {
    }
  }
  int64_t max_rows() const { return max_rows_.load(); }

 private:
  std::atomic<int64_t> max_rows_{0};
};

class StreamedBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/swarm-streamed-batch-", getpid());
    tools::SynthOptions o;
    o.layers = 2;
    o.hidden = kHidden;
    o.intermediate = 256;
    o.heads = 12;
    o.vocab = 300;
    o.max_position = 2048;
    o.seed = 7;
    o.out_dir = dir_;
    auto written = tools::WriteSynthModel(o);
    ASSERT_TRUE(written.ok()) << written.status();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
};

TEST_F(StreamedBatchTest, APrefillOverOnePieceStreamsAndKeepsTheIds) {
  // A prompt of 1,100 positions in one chunk: a micro-batch beyond one piece.
  const int64_t kPrompt = 1100;
  ASSERT_GT(kPrompt * kHidden * 4, static_cast<int64_t>(rpc::kMaxTensorPieceBytes));
  std::vector<model::SamplingParams> sampling(2);
  std::vector<std::vector<int64_t>> prompts(2);
  for (int r = 0; r < 2; ++r) {
    for (int64_t i = 0; i < kPrompt; ++i) prompts[r].push_back(3 + (i * (7 + r) + r) % 290);
    sampling[r].max_new_tokens = 6;
    sampling[r].stop_at_eos = false;
  }
  sampling[1].temperature = 0.8f;
  sampling[1].seed = 42;

  auto engine = model::Engine::Create(dir_);
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<std::vector<int64_t>> alone;
  for (int r = 0; r < 2; ++r) {
    auto out = (*engine)->Generate(prompts[r], sampling[r]);
    ASSERT_TRUE(out.ok()) << out.status();
    alone.push_back(out->ids);
  }

  RowsObserver rows;
  std::vector<std::unique_ptr<worker::WorkerServer>> workers;
  std::vector<std::string> addresses;
  for (const std::vector<int>& layers : {std::vector<int>{0}, std::vector<int>{1}}) {
    worker::WorkerServerOptions options;
    options.model_dir = dir_;
    options.layers = layers;
    options.listen = "127.0.0.1:0";
    options.observer = &rows;
    auto server = worker::WorkerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_TRUE((*server)->Load().ok());
    addresses.push_back((*server)->address());
    workers.push_back(*std::move(server));
  }
  CoordinatorModelOptions mo;
  mo.model_dir = dir_;
  auto model = CoordinatorModel::Load(mo);
  ASSERT_TRUE(model.ok()) << model.status();
  const model::ModelConfig& c = (*model)->config();
  WorkerSet worker_set(addresses, c.Fingerprint(), static_cast<int>(c.num_layers));
  worker_set.Refresh(absl::Seconds(5));
  ASSERT_TRUE(worker_set.Coverage().ok()) << worker_set.Coverage();
  PipelineOptions po;
  po.limits.max_batch_tokens = kPrompt;
  GenerationPipeline pipeline(model->get(), &worker_set, po);

  for (int r = 0; r < 2; ++r) {
    GenerationRequest request;
    request.prompt_ids = prompts[r];
    request.sampling = sampling[r];
    request.request_id = absl::StrCat("streamed-", r);
    auto result = pipeline.Generate(request, GenerationSink{});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids, alone[r]) << "request " << r;
  }
  // A pass of more rows than one piece holds (so it went through ForwardBatchStream both ways).
  EXPECT_GT(rows.max_rows() * kHidden * 4, static_cast<int64_t>(rpc::kMaxTensorPieceBytes))
      << "largest pass " << rows.max_rows() << " rows";
}

}  // namespace
}  // namespace swarm::coordinator
