// HTTP API overhead benchmark: the same greedy request through swarm-coordinator's gRPC
// Generate (the C++ SDK, streamed) and through its OpenAI-compatible HTTP API (POST
// /v1/completions, streamed as server-sent events and not), on one in-process cluster (2 workers
// and a coordinator with the HTTP API, all on loopback in this process). Reports the time per
// generated token of each path and the HTTP paths' overhead against gRPC.
//
//   http_bench [--model DIR (default ../shared/models/stories260K)] [--tokens 128] [--reps 10]
//
// The order of the paths alternates every repetition; every number is a median over --reps.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/flags.h"
#include "common/lock_checks.h"
#include "coordinator/coordinator_server.h"
#include "coordinator/http_api.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "worker/worker_server.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "http_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  using namespace swarm;
  auto flags = Flags::Parse(argc, argv, {"model", "tokens", "reps"}, {});
  if (!flags.ok()) return Fail(std::string(flags.status().message()));
  const std::string model = flags->String("model", "../shared/models/stories260K");
  auto tokens_flag = flags->Int("tokens", 128);
  auto reps_flag = flags->Int("reps", 10);
  if (!tokens_flag.ok() || !reps_flag.ok()) return Fail("bad --tokens or --reps");
  const int64_t tokens = *tokens_flag;
  const int reps = static_cast<int>(*reps_flag);

  std::vector<std::unique_ptr<worker::WorkerServer>> workers;
  std::vector<std::string> addresses;
  for (std::vector<int> layers : {std::vector<int>{0, 1, 2}, std::vector<int>{3, 4}}) {
    worker::WorkerServerOptions wo;
    wo.model_dir = model;
    wo.layers = layers;
    auto w = worker::WorkerServer::Start(wo);
    if (!w.ok()) return Fail(std::string(w.status().message()));
    if (auto s = (*w)->Load(); !s.ok()) return Fail(std::string(s.message()));
    addresses.push_back((*w)->address());
    workers.push_back(*std::move(w));
  }
  coordinator::CoordinatorOptions co;
  co.model_dir = model;
  co.workers = addresses;
  auto coord = coordinator::CoordinatorServer::Start(co);
  if (!coord.ok()) return Fail(std::string(coord.status().message()));
  if (auto s = (*coord)->WaitUntilServing(absl::Seconds(30)); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  auto http = coordinator::HttpApi::Start(coord->get(), {});
  if (!http.ok()) return Fail(std::string(http.status().message()));
  auto client = Client::Connect((*coord)->address());
  if (!client.ok()) return Fail(std::string(client.status().message()));
  httplib::Client hc("127.0.0.1", (*http)->port());
  hc.set_read_timeout(600, 0);

  GenerateRequest greq;
  greq.prompt = "Once upon a time";
  greq.max_new_tokens = tokens;
  greq.stop_at_eos = false;
  nlohmann::json body = {{"prompt", "Once upon a time"},
                         {"max_tokens", tokens},
                         {"temperature", 0},
                         {"ignore_eos", true}};
  const std::string plain = body.dump();
  body["stream"] = true;
  const std::string streamed = body.dump();

  auto grpc_run = [&]() -> double {
    const auto t0 = Clock::now();
    auto r = (*client)->Generate(greq, [](const GenerateChunk&) { return true; });
    const auto t1 = Clock::now();
    if (!r.ok() || static_cast<int64_t>(r->ids.size()) != tokens) return -1;
    return std::chrono::duration<double>(t1 - t0).count();
  };
  auto http_run = [&](const std::string& b, bool stream) -> double {
    const auto t0 = Clock::now();
    std::string got;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.headers = {{"Content-Type", "application/json"}};
    req.body = b;
    // Read as it arrives, as a streaming client does.
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      got.append(data, n);
      return true;
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    const bool sent = hc.send(req, res, error);
    const auto t1 = Clock::now();
    if (!sent || res.status != 200) return -1;
    if (stream ? got.find("data: [DONE]") == std::string::npos
               : got.find("\"completion_tokens\":" + std::to_string(tokens)) == std::string::npos) {
      return -1;
    }
    return std::chrono::duration<double>(t1 - t0).count();
  };

  // Warm-up, then alternate the order.
  grpc_run();
  http_run(streamed, true);
  http_run(plain, false);
  std::vector<double> g, hs, hp;
  for (int i = 0; i < reps; ++i) {
    std::vector<int> order = {0, 1, 2};
    std::rotate(order.begin(), order.begin() + (i % 3), order.end());
    for (int which : order) {
      const double t =
          which == 0 ? grpc_run() : http_run(which == 1 ? streamed : plain, which == 1);
      if (t < 0) return Fail(absl::StrCat("a request of path ", which, " failed"));
      (which == 0 ? g : which == 1 ? hs : hp).push_back(t);
    }
  }
  const double mg = Median(g), ms = Median(hs), mp = Median(hp);
  const double per = 1e3 / static_cast<double>(tokens);
  std::printf("model %s, %ld generated tokens per request, median of %d\n", model.c_str(),
              static_cast<long>(tokens), reps);
  std::printf("| path | ms per request | ms per token | vs gRPC |\n|---|---|---|---|\n");
  std::printf("| gRPC Generate (SDK, streamed) | %.2f | %.3f | – |\n", mg * 1e3, mg * per);
  std::printf("| HTTP /v1/completions, stream | %.2f | %.3f | %+.1f %% |\n", ms * 1e3, ms * per,
              (ms / mg - 1) * 100);
  std::printf("| HTTP /v1/completions, no stream | %.2f | %.3f | %+.1f %% |\n", mp * 1e3, mp * per,
              (mp / mg - 1) * 100);
  (*http)->Stop();
  (*coord)->Shutdown();
  for (auto& w : workers) w->Shutdown();
  return 0;
}
