// The coordinator's scheduler (coordinator/scheduler.h) through GenerationPipeline, with in-process
// workers: 16 concurrent requests with their own prompts, lengths, sampling parameters and seeds
// give exactly the ids each gives alone in-process, through 1, 2 and 3 workers and through 2
// workers without ForwardBatch (the per-session fallback), in exact and sparse modes (sequential
// and parallel, each request with its own blocks); cancelling half of them leaves the others' ids
// unchanged and no session behind; a row a worker fails fails that request alone (with and
// without ForwardBatch); a full queue is RESOURCE_EXHAUSTED naming the limit; prefills in chunks
// under a tiny token budget keep the ids; with 2 workers both compute at once (the pipeline
// overlaps).
#include "coordinator/scheduler.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/block_layout.h"
#include "coordinator/coordinator_model.h"
#include "coordinator/pipeline.h"
#include "coordinator/worker_set.h"
#include "router/sparse.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/router/router_test_util.h"

namespace swarm::coordinator {
namespace {

using ::swarm::testing::GoldenIds;
using ::swarm::testing::ModelDir;

constexpr int kRequests = 16;

const model::Engine& Engine() { return router::testing::Stories(); }

enum class Kind { kExact, kSequential, kParallel };

// Request `i` of a set: its own prompt, length, sampling and (sparse) blocks.
GenerationRequest MakeRequest(int i, Kind kind) {
  const std::vector<int64_t> golden = GoldenIds("stories260K", "prompt.input_ids");
  GenerationRequest r;
  const size_t len = 1 + static_cast<size_t>(i) % golden.size();
  r.prompt_ids.assign(golden.begin(), golden.begin() + len);
  for (size_t k = 1; k < r.prompt_ids.size(); ++k) {
    if ((k + i) % 3 == 0) r.prompt_ids[k] = (r.prompt_ids[k] * 7 + i) % 512;
  }
  r.sampling.max_new_tokens = 3 + (i * 5) % 17;
  r.sampling.stop_at_eos = i % 4 == 3;
  if (i % 3 != 0) {  // Seeded sampling; every third request greedy.
    r.sampling.temperature = 0.7f + 0.1f * static_cast<float>(i % 4);
    r.sampling.top_k = i % 2 == 0 ? 20 : 0;
    r.sampling.top_p = i % 2 == 0 ? 1.0f : 0.9f;
    r.sampling.seed = 1000 + i;
  }
  r.request_id = "r" + std::to_string(i);
  if (kind != Kind::kExact) {
    static const std::vector<std::vector<int>> kBlocks = {{0, 2, 4}, {1, 3},    {0, 1, 2, 3},
                                                          {4},       {1, 2, 4}, {0, 3}};
    r.mode = GenerationMode::kSparse;
    r.combine = kind == Kind::kParallel ? CombineMode::kParallel : CombineMode::kSequential;
    r.num_blocks = 5;
    r.blocks = kBlocks[i % kBlocks.size()];
    for (size_t k = 0; k < r.blocks.size(); ++k) {
      r.block_weights.push_back(0.4f + 0.15f * static_cast<float>((k + i) % 4));
    }
  }
  return r;
}

// What the request gives alone, in-process: Engine::Generate, or the SparseExecutor over its plan.
std::vector<int64_t> Alone(const GenerationRequest& r) {
  if (r.mode == GenerationMode::kExact) {
    auto out = Engine().Generate(r.prompt_ids, r.sampling);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->ids : std::vector<int64_t>{};
  }
  auto layout = BlockLayout::Create(5, r.num_blocks);
  router::SparsePlan plan;
  plan.blocks = r.blocks;
  plan.weights = r.block_weights;
  plan.combine = r.combine == CombineMode::kParallel ? router::Combine::kParallel
                                                     : router::Combine::kSequential;
  auto exec = router::SparseExecutor::Create(&Engine().layers(), *layout, plan);
  EXPECT_TRUE(exec.ok()) << exec.status();
  if (!exec.ok()) return {};
  auto out = model::RunGenerationLoop(Engine().ends(), **exec, Engine().tokenizer(), r.prompt_ids,
                                      r.sampling);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->ids : std::vector<int64_t>{};
}

// Records the scheduler's hooks. Thread-safe.
class SchedulerObserver : public CoordinatorObserver {
 public:
  void OnBatchStep(int sequences, int64_t /*tokens*/) override {
    absl::MutexLock lock(&mu_);
    max_sequences_ = std::max(max_sequences_, sequences);
  }
  void OnAdmitted(absl::Duration /*queued*/) override {
    absl::MutexLock lock(&mu_);
    ++admitted_;
  }
  void OnSchedulerState(int running, int waiting) override {
    absl::MutexLock lock(&mu_);
    last_state_ = {running, waiting};
  }
  // Records busy spans to tell whether two workers computed at once.
  void OnWorkerBusy(int worker, absl::Duration busy) override {
    absl::MutexLock lock(&mu_);
    const absl::Time end = absl::Now();
    spans_[worker].emplace_back(end - busy, end);
  }

  int max_sequences() const {
    absl::MutexLock lock(&mu_);
    return max_sequences_;
  }
  int admitted() const {
    absl::MutexLock lock(&mu_);
    return admitted_;
  }
  std::pair<int, int> last_state() const {
    absl::MutexLock lock(&mu_);
    return last_state_;
  }
  // Whether some span of worker `a` overlaps some span of worker `b`.
  bool Overlapped(int a, int b) const {
    absl::MutexLock lock(&mu_);
    auto ia = spans_.find(a);
    auto ib = spans_.find(b);
    if (ia == spans_.end() || ib == spans_.end()) return false;
    for (const auto& [s1, e1] : ia->second) {
      for (const auto& [s2, e2] : ib->second) {
        if (s1 < e2 && s2 < e1) return true;
      }
    }
    return false;
  }

 private:
  mutable absl::Mutex mu_;
  int max_sequences_ ABSL_GUARDED_BY(mu_) = 0;
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;
  std::pair<int, int> last_state_ ABSL_GUARDED_BY(mu_) = {-1, -1};
  std::map<int, std::vector<std::pair<absl::Time, absl::Time>>> spans_ ABSL_GUARDED_BY(mu_);
};

// A WorkerService in front of a real worker that passes every call on, except that it closes the
// session of request `victim` ("" = none) on the worker behind the coordinator's back before that
// session's third step reaches the worker (the worker then fails that row: NOT_FOUND), and that
// as an `old` worker it answers ForwardBatch UNIMPLEMENTED (a worker from before batching).
class Proxy final : public v1::WorkerService::Service {
 public:
  Proxy(const std::string& target, std::string victim, bool old)
      : stub_(v1::WorkerService::NewStub(
            grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))),
        victim_(std::move(victim)),
        old_(old) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~Proxy() override { server_->Shutdown(); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int killed() const { return killed_.load(); }

  grpc::Status Info(grpc::ServerContext* /*ctx*/, const v1::InfoRequest* req,
                    v1::InfoResponse* resp) override {
    grpc::ClientContext c;
    return stub_->Info(&c, *req, resp);
  }
  grpc::Status OpenSession(grpc::ServerContext* /*ctx*/, const v1::OpenSessionRequest* req,
                           v1::OpenSessionResponse* resp) override {
    grpc::ClientContext c;
    grpc::Status s = stub_->OpenSession(&c, *req, resp);
    if (s.ok() && req->request_id() == victim_) {
      absl::MutexLock lock(&mu_);
      victim_session_ = resp->session_id();
    }
    return s;
  }
  grpc::Status CloseSession(grpc::ServerContext* /*ctx*/, const v1::CloseSessionRequest* req,
                            v1::CloseSessionResponse* resp) override {
    grpc::ClientContext c;
    return stub_->CloseSession(&c, *req, resp);
  }
  grpc::Status Forward(grpc::ServerContext* /*ctx*/, const v1::ForwardRequest* req,
                       v1::ForwardResponse* resp) override {
    MaybeKill(req->session_id());
    grpc::ClientContext c;
    return stub_->Forward(&c, *req, resp);
  }
  grpc::Status ForwardBatch(grpc::ServerContext* /*ctx*/, const v1::ForwardBatchRequest* req,
                            v1::ForwardBatchResponse* resp) override {
    if (old_) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no ForwardBatch here");
    for (const v1::BatchStep& step : req->steps()) MaybeKill(step.session_id());
    grpc::ClientContext c;
    return stub_->ForwardBatch(&c, *req, resp);
  }
  grpc::Status Prefetch(grpc::ServerContext* /*ctx*/, const v1::PrefetchRequest* req,
                        v1::PrefetchResponse* resp) override {
    grpc::ClientContext c;
    return stub_->Prefetch(&c, *req, resp);
  }

 private:
  void MaybeKill(const std::string& session) {
    {
      absl::MutexLock lock(&mu_);
      if (victim_session_.empty() || session != victim_session_ || ++victim_steps_ != 3) return;
    }
    grpc::ClientContext c;
    v1::CloseSessionRequest req;
    req.set_session_id(session);
    v1::CloseSessionResponse resp;
    if (stub_->CloseSession(&c, req, &resp).ok()) killed_.fetch_add(1);
  }

  std::unique_ptr<v1::WorkerService::Stub> stub_;
  const std::string victim_;
  const bool old_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::string victim_session_ ABSL_GUARDED_BY(mu_);
  int victim_steps_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int> killed_{0};
};

class SchedulerTest : public ::testing::Test {
 protected:
  void TearDown() override { Stop(); }

  // Workers hosting `splits` of stories260K and a pipeline over them; `front` (may be null) maps
  // a worker's address to the one the coordinator uses.
  void Build(const std::vector<std::vector<int>>& splits, PipelineOptions po = {},
             const std::function<std::string(const std::string&)>& front = nullptr) {
    Stop();
    std::vector<std::string> addresses;
    for (const auto& layers : splits) {
      workers_.push_back(testing::StartWorker(ModelDir("stories260K"), layers));
      ASSERT_NE(workers_.back(), nullptr);
      addresses.push_back(front ? front(workers_.back()->address()) : workers_.back()->address());
    }
    CoordinatorModelOptions mo;
    mo.model_dir = ModelDir("stories260K");
    auto model = CoordinatorModel::Load(mo);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const model::ModelConfig& c = model_->config();
    worker_set_ =
        std::make_unique<WorkerSet>(addresses, c.Fingerprint(), static_cast<int>(c.num_layers));
    worker_set_->Refresh(absl::Seconds(5));
    ASSERT_TRUE(worker_set_->Coverage().ok()) << worker_set_->Coverage();
    po.observer = &observer_;
    pipeline_ = std::make_unique<GenerationPipeline>(model_.get(), worker_set_.get(), po);
  }

  void Stop() {
    pipeline_.reset();
    worker_set_.reset();
    workers_.clear();
  }

  // Sessions the workers hold now, summed.
  int Sessions() {
    int n = 0;
    for (const auto& w : workers_) n += w->worker()->Stats().sessions;
    return n;
  }

  // Runs every request at once, one thread each; `sink_for(i)` gives request i's sink and
  // `cancel` (may be null) its handles.
  std::vector<absl::StatusOr<GenerationResult>> RunAll(
      const std::vector<GenerationRequest>& requests,
      const std::function<GenerationSink(int)>& sink_for = nullptr,
      std::vector<CancellationHandle>* cancel = nullptr) {
    std::vector<absl::StatusOr<GenerationResult>> results(requests.size(),
                                                          absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < requests.size(); ++i) {
      threads.emplace_back([&, i] {
        const GenerationSink sink = sink_for ? sink_for(static_cast<int>(i)) : GenerationSink{};
        results[i] = pipeline_->Generate(requests[i], sink, cancel ? &(*cancel)[i] : nullptr);
      });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  SchedulerObserver observer_;
  std::vector<std::unique_ptr<worker::WorkerServer>> workers_;
  std::unique_ptr<CoordinatorModel> model_;
  std::unique_ptr<WorkerSet> worker_set_;
  std::unique_ptr<GenerationPipeline> pipeline_;
};

TEST_F(SchedulerTest, SixteenConcurrentRequestsGiveTheIdsEachGivesAlone) {
  const std::vector<std::pair<std::string, std::vector<std::vector<int>>>> clusters = {
      {"1 worker", {{0, 1, 2, 3, 4}}},
      {"2 workers", {{0, 1, 2}, {3, 4}}},
      {"3 workers", {{0, 1}, {2, 3}, {4}}},
  };
  std::vector<std::unique_ptr<Proxy>> proxies;
  const std::function<std::string(const std::string&)> old_worker =
      [&](const std::string& address) {
        proxies.push_back(std::make_unique<Proxy>(address, "", /*old=*/true));
        return proxies.back()->address();
      };
  for (Kind kind : {Kind::kExact, Kind::kSequential, Kind::kParallel}) {
    const std::string mode = kind == Kind::kExact        ? "exact"
                             : kind == Kind::kSequential ? "sparse sequential"
                                                         : "sparse parallel";
    std::vector<GenerationRequest> requests;
    std::vector<std::vector<int64_t>> want;
    for (int i = 0; i < kRequests; ++i) {
      requests.push_back(MakeRequest(i, kind));
      want.push_back(Alone(requests.back()));
    }
    for (int c = 0; c <= static_cast<int>(clusters.size()); ++c) {
      // The last one: 2 workers from before batching (one Forward per session).
      const bool old = c == static_cast<int>(clusters.size());
      const std::string name = old ? "2 workers without ForwardBatch" : clusters[c].first;
      Build(old ? clusters[1].second : clusters[c].second, {},
            old ? old_worker : std::function<std::string(const std::string&)>());
      const auto results = RunAll(requests);
      for (int i = 0; i < kRequests; ++i) {
        ASSERT_TRUE(results[i].ok())
            << mode << ", " << name << ", request " << i << ": " << results[i].status();
        EXPECT_EQ(results[i]->ids, want[i]) << mode << ", " << name << ", request " << i;
      }
      EXPECT_EQ(Sessions(), 0) << mode << ", " << name;
      EXPECT_EQ(observer_.last_state(), std::make_pair(0, 0)) << mode << ", " << name;
    }
  }
  EXPECT_GT(observer_.max_sequences(), 1);  // Requests did share steps.
  EXPECT_EQ(observer_.admitted(), 3 * 4 * kRequests);
  Stop();  // Before the proxies go.
}

TEST_F(SchedulerTest, CancellingHalfLeavesTheOthersUnchangedAndNoSessionBehind) {
  Build({{0, 1, 2}, {3, 4}});
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back(MakeRequest(i, i % 4 < 2 ? Kind::kExact : Kind::kParallel));
    requests.back().sampling.max_new_tokens = 20 + i;
    requests.back().sampling.stop_at_eos = false;
  }
  std::vector<CancellationHandle> cancel(kRequests);
  // Odd requests stop after two tokens: half through their sink, half through their handle.
  auto sink_for = [&](int i) {
    GenerationSink sink;
    auto tokens = std::make_shared<int>(0);
    sink.on_token = [&cancel, i, tokens](const model::GeneratedToken& t) {
      if (i % 2 == 0 || t.id < 0 || ++*tokens < 2) return true;
      if (i % 4 == 1) return false;
      cancel[i].Cancel();
      return true;
    };
    return sink;
  };
  const auto results = RunAll(requests, sink_for, &cancel);
  for (int i = 0; i < kRequests; ++i) {
    if (i % 2 == 1) {
      EXPECT_EQ(results[i].status().code(), absl::StatusCode::kCancelled)
          << "request " << i << ": " << results[i].status();
      continue;
    }
    ASSERT_TRUE(results[i].ok()) << "request " << i << ": " << results[i].status();
    EXPECT_EQ(results[i]->ids, Alone(requests[i])) << "request " << i;
  }
  EXPECT_EQ(Sessions(), 0);
  EXPECT_EQ(pipeline_->running_requests(), 0);
  EXPECT_EQ(pipeline_->waiting_requests(), 0);
}

// The worker loses one request's session mid-stream (NOT_FOUND for its row): that request fails
// over (a new session on the same worker, its steps replayed) and ends with the ids it gets alone;
// the others never notice.
TEST_F(SchedulerTest, ASessionAWorkerLosesIsFailedOverAndReplayed) {
  for (bool old : {false, true}) {
    const std::string name = old ? "without ForwardBatch" : "ForwardBatch";
    std::unique_ptr<Proxy> proxy;
    Build({{0, 1, 2}, {3, 4}}, {}, [&](const std::string& address) {
      if (proxy != nullptr) return address;
      proxy = std::make_unique<Proxy>(address, "r5", old);
      return proxy->address();
    });
    std::vector<GenerationRequest> requests;
    for (int i = 0; i < 8; ++i) {
      requests.push_back(MakeRequest(i, Kind::kExact));
      requests.back().sampling.max_new_tokens = 12;
      requests.back().sampling.stop_at_eos = false;
    }
    const auto results = RunAll(requests);
    EXPECT_EQ(proxy->killed(), 1) << name;
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(results[i].ok()) << name << ", request " << i << ": " << results[i].status();
      EXPECT_EQ(results[i]->ids, Alone(requests[i])) << name << ", request " << i;
    }
    EXPECT_EQ(Sessions(), 0) << name;
    Stop();  // Before the proxy goes.
  }
}

TEST_F(SchedulerTest, AFullQueueIsResourceExhaustedNamingTheLimit) {
  PipelineOptions po;
  po.limits.max_batch_sequences = 1;  // One request in the batch at a time.
  po.max_waiting_requests = 1;
  Build({{0, 1, 2}, {3, 4}}, po);
  absl::Notification first_token;
  absl::Notification release;
  GenerationSink holding;
  holding.on_token = [&](const model::GeneratedToken&) {
    if (!first_token.HasBeenNotified()) first_token.Notify();
    release.WaitForNotification();
    return true;
  };
  const GenerationRequest a = MakeRequest(0, Kind::kExact);
  const GenerationRequest b = MakeRequest(1, Kind::kExact);
  absl::StatusOr<GenerationResult> ra = absl::UnknownError("not run");
  absl::StatusOr<GenerationResult> rb = absl::UnknownError("not run");
  std::thread ta([&] { ra = pipeline_->Generate(a, holding); });
  first_token.WaitForNotification();  // `a` holds the batch's one place.
  std::thread tb([&] { rb = pipeline_->Generate(b, {}); });
  while (pipeline_->waiting_requests() < 1) absl::SleepFor(absl::Milliseconds(1));
  absl::StatusOr<GenerationResult> rc = pipeline_->Generate(MakeRequest(2, Kind::kExact), {});
  EXPECT_EQ(rc.status().code(), absl::StatusCode::kResourceExhausted) << rc.status();
  EXPECT_TRUE(absl::StrContains(rc.status().message(), "--max-waiting-requests 1")) << rc.status();
  release.Notify();
  ta.join();
  tb.join();
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_EQ(ra->ids, Alone(a));
  EXPECT_EQ(rb->ids, Alone(b));
  EXPECT_EQ(Sessions(), 0);
}

TEST_F(SchedulerTest, ATinyTokenBudgetChunksPrefillsAndKeepsTheIds) {
  PipelineOptions po;
  po.limits.max_batch_tokens = 3;  // Prompts of up to 8 tokens go in chunks, decodes first.
  Build({{0, 1, 2}, {3, 4}}, po);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 8; ++i) requests.push_back(MakeRequest(i + 4, Kind::kSequential));
  const auto results = RunAll(requests);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(results[i].ok()) << "request " << i << ": " << results[i].status();
    EXPECT_EQ(results[i]->ids, Alone(requests[i])) << "request " << i;
  }
  EXPECT_LE(observer_.max_sequences(), 3);
  EXPECT_EQ(Sessions(), 0);
}

TEST_F(SchedulerTest, WithTwoWorkersBothComputeAtOnce) {
  // Both workers are on this machine, where the default depth is 1 (DefaultMicroBatches): ask for
  // the two-stage pipeline, as for workers pinned to cores of their own.
  PipelineOptions po;
  po.max_micro_batches = 2;
  Build({{0, 1, 2}, {3, 4}}, po);
  EXPECT_EQ(pipeline_->waiting_requests(), 0);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(MakeRequest(i, Kind::kExact));
    requests.back().sampling.max_new_tokens = 60;
    requests.back().sampling.stop_at_eos = false;
  }
  const auto results = RunAll(requests);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(results[i]->ids, Alone(requests[i])) << "request " << i;
  }
  EXPECT_TRUE(observer_.Overlapped(0, 1)) << "stage 1 and stage 2 never computed at once";
  EXPECT_EQ(Sessions(), 0);
}

// The default pipeline depth counts machines, not workers: co-located workers share cores.
TEST(DefaultMicroBatchesTest, OnePerDistinctWorkerHost) {
  auto depth = [](const std::vector<std::string>& addresses) {
    WorkerSet set(addresses, "fingerprint", 4);
    return DefaultMicroBatches(set);
  };
  EXPECT_EQ(depth({"127.0.0.1:7001", "127.0.0.1:7002"}), 1);
  EXPECT_EQ(depth({"10.0.0.1:7001", "10.0.0.2:7001"}), 2);
  EXPECT_EQ(depth({"10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.1:7002", "[::1]:7003"}), 3);
  EXPECT_EQ(depth({"worker-0.swarm:7001", "worker-1.swarm:7001", "worker-2.swarm:7001"}), 3);
  // A target that is not host:port is a machine of its own.
  EXPECT_EQ(depth({"dns:///workers", "127.0.0.1:7001"}), 2);
  EXPECT_EQ(depth({}), 1);
}

}  // namespace
}  // namespace swarm::coordinator
