// Lose no request: real swarm-worker and swarm-coordinator processes on loopback, workers killed
// (SIGKILL) and restarted on the same address, or stopped (SIGSTOP), while streams run. Every
// request must complete with exactly the ids of its no-fault run (the scheduler's fail-over with
// replay history, scheduler.h), and no session may be left on any worker. The chaos test runs
// for SWARM_CHAOS_SECONDS (default 12; `make chaos` runs 60 s with 16 streams) and prints the
// time from each SIGKILL to the next token of the streams it hit, over all kills and split into
// the kills whose range had a live replica (the other worker serving) and those that had none.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

// One swarm-worker, restartable on the address it first bound.
class WorkerProc {
 public:
  WorkerProc(std::string dir, std::string name, std::vector<std::string> layer_flags)
      : dir_(std::move(dir)), name_(std::move(name)), layer_flags_(std::move(layer_flags)) {}

  bool Start() {
    std::vector<std::string> argv = {kBin + "/swarm-worker", "--model", ModelDir("stories260K"),
                                     "--listen", address_.empty() ? "127.0.0.1:0" : address_};
    argv.insert(argv.end(), layer_flags_.begin(), layer_flags_.end());
    proc_ = std::make_unique<Process>(argv, absl::StrCat(dir_, "/", name_, ".log"));
    const std::string a = proc_->WaitForLine("listening on ", absl::Seconds(60));
    if (a.empty()) return false;
    address_ = a;
    return true;
  }
  // SIGKILL, then the same flags on the same address (a few tries while the port frees).
  bool Restart(absl::Duration pause = absl::ZeroDuration()) {
    proc_->Kill(SIGKILL);
    absl::SleepFor(pause);
    for (int i = 0; i < 20; ++i) {
      if (Start()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }
  Process& proc() { return *proc_; }
  const std::string& address() const { return address_; }
  std::string Log() const { return ReadFile(absl::StrCat(dir_, "/", name_, ".log")); }

 private:
  const std::string dir_, name_;
  const std::vector<std::string> layer_flags_;
  std::string address_;
  std::unique_ptr<Process> proc_;
};

struct Cluster {
  std::vector<std::unique_ptr<WorkerProc>> workers;
  std::unique_ptr<Process> coordinator;
  std::unique_ptr<Client> client;
  std::string coordinator_log;
};

// `ranges`: the --blocks i --num-blocks 2 of each worker. Extra coordinator flags appended.
void StartCluster(const std::string& dir, const std::vector<int>& ranges,
                  const std::vector<std::string>& coordinator_flags, Cluster* c) {
  std::vector<std::string> addresses;
  for (size_t i = 0; i < ranges.size(); ++i) {
    c->workers.push_back(std::make_unique<WorkerProc>(
        dir, absl::StrCat("w", i),
        std::vector<std::string>{"--blocks", absl::StrCat(ranges[i]), "--num-blocks", "2"}));
    ASSERT_TRUE(c->workers.back()->Start()) << c->workers.back()->Log();
    addresses.push_back(c->workers.back()->address());
  }
  std::vector<std::string> argv = {kBin + "/swarm-coordinator",
                                   "--model",
                                   ModelDir("stories260K"),
                                   "--workers",
                                   absl::StrJoin(addresses, ","),
                                   "--listen",
                                   "127.0.0.1:0"};
  argv.insert(argv.end(), coordinator_flags.begin(), coordinator_flags.end());
  c->coordinator_log = dir + "/coordinator.log";
  c->coordinator = std::make_unique<Process>(argv, c->coordinator_log);
  const std::string address = c->coordinator->WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << ReadFile(c->coordinator_log);
  auto client = Client::Connect(address);
  ASSERT_TRUE(client.ok()) << client.status();
  c->client = *std::move(client);
  ASSERT_TRUE(c->client->WaitUntilServing(absl::Seconds(60)).ok()) << ReadFile(c->coordinator_log);
}

// Stream i of a mix: exact and sparse (explicit plans, sequential and parallel), greedy and
// seeded.
GenerateRequest StreamRequest(int i, int64_t tokens) {
  static const char* kPrompts[] = {"Once upon a time", "Lily and Tom went", "The little dog",
                                   "One day, a bird"};
  GenerateRequest r;
  r.prompt = kPrompts[i % 4];
  r.max_new_tokens = tokens;
  r.stop_at_eos = false;
  r.request_id = absl::StrCat("stream-", i);
  r.timeout = absl::Minutes(5);
  if (i % 2 == 1) {
    r.temperature = 0.8f;
    r.seed = 1000 + i;
  }
  switch ((i / 2) % 3) {
    case 0:
      break;  // Exact.
    case 1:
      r.mode = "sparse";
      r.blocks = {0, 1};
      r.block_weights = {1.0f, 0.75f};
      r.num_blocks = 2;
      break;
    default:
      r.mode = "sparse";
      r.combine = "parallel";
      r.blocks = {0, 1};
      r.block_weights = {0.5f, 0.5f};
      r.num_blocks = 2;
      break;
  }
  return r;
}

struct StreamRun {
  absl::StatusOr<GenerateResult> result = absl::UnknownError("not run");
  std::vector<absl::Time> token_times;
};

// The longest time, in seconds, between two consecutive tokens of any of `runs`.
double LongestPause(const std::vector<StreamRun>& runs) {
  double worst = 0;
  for (const StreamRun& r : runs) {
    for (size_t k = 1; k < r.token_times.size(); ++k) {
      worst = std::max(worst, absl::ToDoubleSeconds(r.token_times[k] - r.token_times[k - 1]));
    }
  }
  return worst;
}

// Runs `requests` at once; each stream's result and token arrival times. `tokens` (may be null)
// counts the tokens received so far, for a fault to be injected while the streams run.
std::vector<StreamRun> RunStreams(Client& client, const std::vector<GenerateRequest>& requests,
                                  std::atomic<int>* tokens = nullptr) {
  std::vector<StreamRun> runs(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] {
      runs[i].result = client.Generate(requests[i], [&, i](const GenerateChunk& chunk) {
        for (size_t k = 0; k < chunk.ids.size(); ++k) runs[i].token_times.push_back(absl::Now());
        if (tokens != nullptr) tokens->fetch_add(static_cast<int>(chunk.ids.size()));
        return true;
      });
    });
  }
  for (std::thread& t : threads) t.join();
  return runs;
}

// Every worker holds no session (old ones are closed asynchronously: a few seconds at most).
void ExpectNoSessions(Client& client) {
  int left = -1;
  for (int i = 0; i < 50 && left != 0; ++i) {
    auto s = client.Status();
    ASSERT_TRUE(s.ok()) << s.status();
    left = 0;
    for (const WorkerStatus& w : s->workers) left += w.sessions;
    if (left != 0) absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(left, 0) << "sessions left on the workers";
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

TEST(FailoverProcessTest, ChaosKillsLoseNoRequest) {
  const int seconds = EnvInt("SWARM_CHAOS_SECONDS", 12);
  const int streams = EnvInt("SWARM_CHAOS_STREAMS", 8);
  const int tokens = EnvInt("SWARM_CHAOS_TOKENS", 200);
  ScratchDir scratch("chaos");
  Cluster c;
  // Two layer ranges × two replicas.
  StartCluster(scratch.path(), {0, 0, 1, 1}, {}, &c);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < streams; ++i) requests.push_back(StreamRequest(i, tokens));
  const std::vector<StreamRun> reference = RunStreams(*c.client, requests);
  for (const StreamRun& r : reference) {
    ASSERT_TRUE(r.result.ok()) << r.result.status() << ReadFile(c.coordinator_log);
    ASSERT_EQ(r.result->ids.size(), static_cast<size_t>(tokens));
  }

  absl::Mutex mu;
  // Each SIGKILL, whether the other replica of the victim's range (workers 2r and 2r+1 host
  // range r) was live just before it (its health SERVING: loaded, not draining), and whether the
  // coordinator had it as usable then (it may not have polled it since its own restart).
  struct Kill {
    absl::Time at;
    bool replica = false;
    bool seen = false;
  };
  std::vector<Kill> kills;
  std::atomic<bool> stop{false};
  std::thread chaos([&] {
    std::mt19937 rng(7);
    while (!stop.load()) {
      absl::SleepFor(absl::Milliseconds(1500 + static_cast<int>(rng() % 1000)));
      if (stop.load()) break;
      const size_t victim = rng() % c.workers.size();
      WorkerProc& w = *c.workers[victim];
      const std::string other = c.workers[victim ^ 1]->address();
      const bool replica = Health(other, "") == grpc::health::v1::HealthCheckResponse::SERVING;
      bool seen = false;
      auto status = c.client->Status();
      if (status.ok()) {
        for (const WorkerStatus& s : status->workers) {
          if (s.address == other) seen = s.reachable && s.compatible && s.ready;
        }
      }
      {
        absl::MutexLock lock(&mu);
        kills.push_back({absl::Now(), replica, seen});
      }
      EXPECT_TRUE(w.Restart()) << w.Log();
    }
  });
  const absl::Time end = absl::Now() + absl::Seconds(seconds);
  int rounds = 0, failed = 0, differ = 0;
  std::vector<std::vector<StreamRun>> all;
  while (absl::Now() < end) {
    std::vector<StreamRun> runs = RunStreams(*c.client, requests);
    ++rounds;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (!runs[i].result.ok()) {
        ++failed;
        ADD_FAILURE() << "stream " << i << ": " << runs[i].result.status();
      } else if (runs[i].result->ids != reference[i].result->ids) {
        ++differ;
        ADD_FAILURE() << "stream " << i << " differs from its no-fault run";
      }
    }
    all.push_back(std::move(runs));
  }
  stop.store(true);
  chaos.join();
  // Time from each SIGKILL to the next token of the stream that waited longest for it.
  std::vector<double> recovery, with_replica, without_replica;
  int seen = 0;  // Kills with a live replica that the coordinator had as usable.
  for (const Kill& kill : kills) {
    const absl::Time k = kill.at;
    double worst = -1;
    for (const auto& runs : all) {
      for (const StreamRun& r : runs) {
        if (r.token_times.empty() || r.token_times.front() > k || r.token_times.back() < k)
          continue;
        auto next = std::upper_bound(r.token_times.begin(), r.token_times.end(), k);
        if (next != r.token_times.end()) worst = std::max(worst, absl::ToDoubleSeconds(*next - k));
      }
    }
    if (worst >= 0) {
      recovery.push_back(worst);
      (kill.replica ? with_replica : without_replica).push_back(worst);
      if (kill.replica && kill.seen) ++seen;
    }
  }
  const std::string log = ReadFile(c.coordinator_log);
  // The coordinator's fail-over lines: "...; replayed N positions (B bytes, ...) in T".
  size_t failovers = 0;
  int64_t positions = 0, bytes = 0;
  absl::Duration replay_time;
  for (size_t at = log.find("fail-over ("); at != std::string::npos;
       at = log.find("fail-over (", at + 1)) {
    ++failovers;
    const size_t r = log.find("; replayed ", at);
    const size_t eol = log.find('\n', at);
    if (r == std::string::npos || r > eol) continue;
    int64_t n = 0, b = 0;
    if (std::sscanf(log.c_str() + r, "; replayed %ld positions (%ld bytes", &n, &b) != 2) continue;
    // "... ) in R after W finding a worker and opening": R is the replay alone.
    const size_t in = log.find(") in ", r);
    const size_t after = in == std::string::npos ? in : log.find(" after ", in);
    absl::Duration d;
    if (in == std::string::npos || after == std::string::npos || after > eol ||
        !absl::ParseDuration(log.substr(in + 5, after - in - 5), &d)) {
      continue;
    }
    positions += n;
    bytes += b;
    replay_time += d;
  }
  std::printf(
      "replay: %ld positions, %ld bytes in %.3f s over %zu fail-overs: %.1f ms per 1000 "
      "positions, %.0f bytes per position\n",
      static_cast<long>(positions), static_cast<long>(bytes), absl::ToDoubleSeconds(replay_time),
      failovers,
      positions > 0 ? 1e6 * absl::ToDoubleSeconds(replay_time) / static_cast<double>(positions)
                    : 0.0,
      positions > 0 ? static_cast<double>(bytes) / static_cast<double>(positions) : 0.0);
  std::printf(
      "chaos: %d s, %d streams x %d tokens, %d rounds, %zu kills, %zu fail-overs, %d failed, %d "
      "differ; SIGKILL -> next token (worst stream per kill, %zu kills mid-stream): p50 %.3f s, "
      "p99 %.3f s, max %.3f s\n",
      seconds, streams, tokens, rounds, kills.size(), failovers, failed, differ, recovery.size(),
      Percentile(recovery, 0.5), Percentile(recovery, 0.99), Percentile(recovery, 1.0));
  for (const auto& [name, v] :
       {std::pair<const char*, const std::vector<double>*>{"with a live replica", &with_replica},
        {"without one (the other replica not serving)", &without_replica}}) {
    std::printf("chaos: SIGKILL -> next token, %s: %zu kills, p50 %.3f s, p99 %.3f s, max %.3f s\n",
                name, v->size(), Percentile(*v, 0.5), Percentile(*v, 0.99), Percentile(*v, 1.0));
  }
  std::printf(
      "chaos: of the %zu kills with a live replica, the coordinator had it as usable in %d\n",
      with_replica.size(), seen);
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(differ, 0);
  EXPECT_GT(failovers, 0u) << "no kill hit a stream: the test proved nothing";
  EXPECT_NE(log.find("from the history"), std::string::npos) << log;
  ExpectNoSessions(*c.client);
}

// No replica: the killed worker comes back on its address within 1 s; the stream waits for it.
TEST(FailoverProcessTest, WorkerRestartedOnItsAddressWithoutReplica) {
  ScratchDir scratch("restart");
  Cluster c;
  StartCluster(scratch.path(), {0, 1}, {}, &c);
  std::vector<GenerateRequest> requests = {StreamRequest(0, 200), StreamRequest(1, 200)};
  const std::vector<StreamRun> reference = RunStreams(*c.client, requests);
  for (const StreamRun& r : reference) ASSERT_TRUE(r.result.ok()) << r.result.status();
  for (int victim : {1, 0}) {
    // Killed once both streams are under way (not after a fixed delay a quiet machine's streams
    // can outlast).
    std::atomic<int> tokens{0};
    absl::Duration restart;  // SIGKILL → the worker listening again (500 ms of it down).
    std::thread killer([&] {
      const absl::Time until = absl::Now() + absl::Seconds(30);
      while (tokens.load() < static_cast<int>(requests.size()) * 8 && absl::Now() < until) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      const absl::Time killed = absl::Now();
      EXPECT_TRUE(c.workers[victim]->Restart(absl::Milliseconds(500)));
      restart = absl::Now() - killed;
    });
    const std::vector<StreamRun> runs = RunStreams(*c.client, requests, &tokens);
    killer.join();
    for (size_t i = 0; i < runs.size(); ++i) {
      ASSERT_TRUE(runs[i].result.ok()) << runs[i].result.status() << ReadFile(c.coordinator_log);
      EXPECT_EQ(runs[i].result->ids, reference[i].result->ids) << "stream " << i;
    }
    // The figure without a replica: the pause should stay within the restart time + 1 s.
    const double worst_gap = LongestPause(runs);
    std::printf(
        "no replica, worker %d: restarted (SIGKILL -> listening) in %.3f s, longest pause "
        "between two tokens %.3f s\n",
        victim, absl::ToDoubleSeconds(restart), worst_gap);
  }
  EXPECT_NE(ReadFile(c.coordinator_log).find("fail-over ("), std::string::npos);
  ExpectNoSessions(*c.client);
}

// A hung worker (SIGSTOP): its streams move to the replica within the step deadline, not after
// keepalive's ~35 s.
TEST(FailoverProcessTest, StoppedWorkerFailsOverWithinTheStepDeadline) {
  ScratchDir scratch("sigstop");
  Cluster c;
  StartCluster(scratch.path(), {0, 1, 1}, {"--step-deadline-min", "1s"}, &c);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(StreamRequest(i * 2, 200));
  const std::vector<StreamRun> reference = RunStreams(*c.client, requests);
  for (const StreamRun& r : reference) ASSERT_TRUE(r.result.ok()) << r.result.status();
  // Stopped once every stream is under way (a fixed delay can outlast the streams on a fast
  // machine), long before any of them ends.
  std::atomic<int> tokens{0};
  std::thread stopper([&] {
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (tokens.load() < static_cast<int>(requests.size()) * 8 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    c.workers[1]->proc().Signal(SIGSTOP);
  });
  const std::vector<StreamRun> runs = RunStreams(*c.client, requests, &tokens);
  stopper.join();
  c.workers[1]->proc().Signal(SIGCONT);
  for (size_t i = 0; i < runs.size(); ++i) {
    ASSERT_TRUE(runs[i].result.ok()) << runs[i].result.status() << ReadFile(c.coordinator_log);
    EXPECT_EQ(runs[i].result->ids, reference[i].result->ids) << "stream " << i;
  }
  const double worst_gap = LongestPause(runs);
  std::printf("sigstop: longest pause between two tokens %.3f s\n", worst_gap);
  const std::string log = ReadFile(c.coordinator_log);
  EXPECT_NE(log.find("fail-over (deadline)"), std::string::npos) << log;
  // Well under keepalive's ~35 s (the deadline is max(10 x p99, 1 s); a loaded machine adds).
  EXPECT_LT(worst_gap, 15.0);
  ExpectNoSessions(*c.client);
}

// A worker that gets SIGTERM drains: the coordinator moves its running streams to the replica by
// replay (or they end there), new ones go elsewhere, and it exits once it holds no session. No
// request fails and every output is its no-fault run's.
TEST(FailoverProcessTest, DrainingWorkerLosesNoRequest) {
  ScratchDir scratch("drain");
  Cluster c;
  StartCluster(scratch.path(), {0, 1, 1}, {}, &c);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(StreamRequest(i, 300));
  const std::vector<StreamRun> reference = RunStreams(*c.client, requests);
  for (const StreamRun& r : reference) ASSERT_TRUE(r.result.ok()) << r.result.status();
  std::thread drainer([&] {
    absl::SleepFor(absl::Milliseconds(300));
    c.workers[1]->proc().Signal(SIGTERM);
  });
  // Rounds until the drained worker has exited (it may outlive the first round).
  int exit_status = -1;
  for (int round = 0; round < 6 && exit_status == -1; ++round) {
    const std::vector<StreamRun> runs = RunStreams(*c.client, requests);
    for (size_t i = 0; i < runs.size(); ++i) {
      ASSERT_TRUE(runs[i].result.ok()) << runs[i].result.status() << ReadFile(c.coordinator_log);
      EXPECT_EQ(runs[i].result->ids, reference[i].result->ids) << "stream " << i;
    }
    if (round == 0) drainer.join();
    exit_status = c.workers[1]->proc().Wait(absl::Seconds(1));
  }
  if (drainer.joinable()) drainer.join();
  if (exit_status == -1) exit_status = c.workers[1]->proc().Wait(absl::Seconds(40));
  EXPECT_TRUE(exit_status != -1 && WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << c.workers[1]->Log();
  ExpectNoSessions(*c.client);
}

// Rolling restart (a Kubernetes rolling update): each worker of 2 ranges x 2 replicas in turn
// gets SIGTERM under load, drains (the coordinator moves its streams to the replica), exits 0 and
// is started again on its address; the next one is drained only once the coordinator sees every
// worker ready again. No request fails and every output is its no-fault run's.
TEST(FailoverProcessTest, RollingRestartLosesNoRequest) {
  ScratchDir scratch("rolling");
  Cluster c;
  StartCluster(scratch.path(), {0, 0, 1, 1}, {}, &c);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(StreamRequest(i, 200));
  const std::vector<StreamRun> reference = RunStreams(*c.client, requests);
  for (const StreamRun& r : reference) ASSERT_TRUE(r.result.ok()) << r.result.status();

  auto all_ready = [&] {
    auto s = c.client->Status();
    if (!s.ok()) return false;
    int ready = 0;
    for (const WorkerStatus& w : s->workers) ready += w.ready ? 1 : 0;
    return ready == static_cast<int>(c.workers.size());
  };
  std::atomic<bool> done{false};
  std::thread roller([&] {
    for (auto& w : c.workers) {
      absl::SleepFor(absl::Milliseconds(300));
      w->proc().Signal(SIGTERM);
      const int status = w->proc().Wait(absl::Seconds(45));
      EXPECT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << w->Log();
      EXPECT_TRUE(w->Restart()) << w->Log();  // The process is gone: starts it again.
      const absl::Time until = absl::Now() + absl::Seconds(30);
      while (!all_ready() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(100));
      EXPECT_TRUE(all_ready()) << "a restarted worker was not seen ready again";
    }
    done.store(true);
  });
  int rounds = 0, failed = 0;
  while (!done.load()) {
    const std::vector<StreamRun> runs = RunStreams(*c.client, requests);
    ++rounds;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (!runs[i].result.ok()) {
        ++failed;
        ADD_FAILURE() << "stream " << i << ": " << runs[i].result.status();
      } else {
        EXPECT_EQ(runs[i].result->ids, reference[i].result->ids) << "stream " << i;
      }
    }
  }
  roller.join();  // Not before: an ASSERT here would leave the thread running.
  EXPECT_EQ(failed, 0) << ReadFile(c.coordinator_log);
  EXPECT_GE(rounds, static_cast<int>(c.workers.size())) << "the load did not span the restarts";
  ExpectNoSessions(*c.client);
}

// The replay history (default budget) and its recompute path (a budget too small to keep any):
// both give the no-fault ids.
class ReplayPathTest : public ::testing::TestWithParam<bool> {};

TEST_P(ReplayPathTest, KilledReplicaIsReplayedIdentically) {
  const bool recompute = GetParam();
  ScratchDir scratch(recompute ? "recompute" : "history");
  Cluster c;
  std::vector<std::string> flags;
  if (recompute) flags = {"--replay-budget", "1"};
  // One worker for block 0, two replicas of block 1: the second hop's input must be replayed.
  StartCluster(scratch.path(), {0, 1, 1}, flags, &c);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(StreamRequest(i, 150));
  const std::vector<StreamRun> reference = RunStreams(*c.client, requests);
  for (const StreamRun& r : reference) ASSERT_TRUE(r.result.ok()) << r.result.status();
  // Killed once every stream is under way, long before any ends (a fixed 400 ms outlasted the
  // streams on a quiet machine: 150 tokens in 360 ms, no fail-over to check).
  std::atomic<int> tokens{0};
  std::thread killer([&] {
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (tokens.load() < static_cast<int>(requests.size()) * 8 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_TRUE(c.workers[1]->Restart());
  });
  const std::vector<StreamRun> runs = RunStreams(*c.client, requests, &tokens);
  killer.join();
  for (size_t i = 0; i < runs.size(); ++i) {
    ASSERT_TRUE(runs[i].result.ok()) << runs[i].result.status() << ReadFile(c.coordinator_log);
    EXPECT_EQ(runs[i].result->ids, reference[i].result->ids) << "stream " << i;
  }
  const std::string log = ReadFile(c.coordinator_log);
  EXPECT_NE(log.find(recompute ? "recomputed from the ids" : "from the history"), std::string::npos)
      << log;
  if (recompute) {
    EXPECT_NE(log.find("the replay budget is spent"), std::string::npos);
  }
  ExpectNoSessions(*c.client);
}

INSTANTIATE_TEST_SUITE_P(Paths, ReplayPathTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Recompute" : "History"; });

}  // namespace
}  // namespace swarm::testing
