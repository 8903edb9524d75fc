// Distributed serving benchmark: decode tokens/s of the in-process engine vs the same model
// through a coordinator and 2 workers (separate processes, `swarm up`, loopback), and the
// overhead of one hop (a Forward RPC to a worker process vs the same layer run in-process).
//
//   distributed_bench [--model DIR | --synth-mb MB] [--decode-tokens 64] [--prompt-tokens 16]
//                     [--reps 3] [--hop-steps 400]
//
// --synth-mb writes a synthetic Llama of about MB megabytes (f32) into a temporary directory
// (tools/synth.h) and removes it afterwards. Prints one table; every number is a median or mean
// over the repetitions, measured in this run on this machine.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "client/client.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/layer_host.h"
#include "rpc/server.h"
#include "rpc/tensor_codec.h"
#include "swarm/v1/worker.grpc.pb.h"
#include "tools/synth.h"

namespace {

using Clock = std::chrono::steady_clock;
using swarm::bench::Child;
using swarm::bench::Percentile;
using swarm::bench::SelfDir;
using swarm::bench::SpawnAndWait;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct DecodeStats {
  double tokens_per_s = 0;  // Median over the runs.
};

// Decode-only rate from the arrival times of the tokens (the first token includes prefill).
DecodeStats FromTimes(const std::vector<std::vector<Clock::time_point>>& runs) {
  std::vector<double> rates;
  for (const auto& times : runs) {
    if (times.size() > 2) {
      rates.push_back((times.size() - 2) / (Us(times.back() - times[1]) / 1e6));
    }
  }
  return DecodeStats{Percentile(rates, 0.5)};
}

std::vector<int64_t> PromptIds(int n, int64_t vocab) {
  std::vector<int64_t> ids = {1};
  std::mt19937 rng(7);
  while (static_cast<int>(ids.size()) < n) ids.push_back(3 + rng() % (vocab - 3));
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  int64_t synth_mb = 0, decode_tokens = 64, prompt_tokens = 16, reps = 3, hop_steps = 400;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") {
      model_dir = value;
    } else if ((flag == "--synth-mb" && absl::SimpleAtoi(value, &synth_mb)) ||
               (flag == "--decode-tokens" && absl::SimpleAtoi(value, &decode_tokens)) ||
               (flag == "--prompt-tokens" && absl::SimpleAtoi(value, &prompt_tokens)) ||
               (flag == "--reps" && absl::SimpleAtoi(value, &reps)) ||
               (flag == "--hop-steps" && absl::SimpleAtoi(value, &hop_steps))) {
    } else {
      std::fprintf(stderr, "distributed_bench: bad flag %s %s\n", flag.c_str(), value.c_str());
      return 2;
    }
  }
  std::string synth_dir;
  if (synth_mb > 0) {
    // Llama blocks of hidden 1024 (≈ 50 MB f32 each with intermediate 2816) plus 8k-vocab ends.
    swarm::tools::SynthOptions o;
    o.hidden = 1024;
    o.intermediate = 2816;
    o.heads = 16;
    o.kv_heads = 8;
    o.vocab = 8192;
    o.max_position = 1024;
    o.layers =
        std::max<int64_t>(2, (synth_mb * 1000000 - 2 * o.vocab * o.hidden * 4) /
                                 (4 * (3 * o.hidden * o.hidden + 3 * o.hidden * o.intermediate)));
    synth_dir = absl::StrCat("/tmp/swarm-distributed-bench-", getpid());
    o.out_dir = synth_dir;
    auto r = swarm::tools::WriteSynthModel(o);
    if (!r.ok()) {
      std::fprintf(stderr, "distributed_bench: %s\n", r.status().ToString().c_str());
      return 1;
    }
    model_dir = synth_dir;
    std::printf("synthetic model: %lld layers, %.0f MB of weights in %s\n",
                static_cast<long long>(o.layers), r->weight_bytes / 1e6, synth_dir.c_str());
  }
  if (model_dir.empty()) model_dir = "../shared/models/stories260K";
  auto cleanup = [&] {
    if (!synth_dir.empty()) std::system(("rm -rf '" + synth_dir + "'").c_str());
  };

  auto engine = swarm::model::Engine::Create(model_dir);
  if (!engine.ok()) {
    std::fprintf(stderr, "distributed_bench: %s\n", engine.status().ToString().c_str());
    cleanup();
    return 1;
  }
  const swarm::model::ModelConfig& config = (*engine)->config();
  const std::vector<int64_t> prompt = PromptIds(prompt_tokens, config.vocab_size);
  swarm::model::SamplingParams params;
  params.max_new_tokens = decode_tokens;
  params.stop_at_eos = false;

  // 1 and 2: the in-process engine and the same model through `swarm up` (a coordinator and 2
  // worker processes), run alternately so that both see the same machine load.
  DecodeStats local, dist;
  std::vector<double> server_rates;  // As the coordinator measured them (Usage).
  {
    Child up;
    const std::string address = SpawnAndWait(
        &up, {SelfDir() + "/swarm", "up", "--model", model_dir, "--workers", "2"}, "serving on ");
    if (address.empty()) {
      std::fprintf(stderr, "distributed_bench: swarm up did not start\n");
      cleanup();
      return 1;
    }
    auto client = swarm::Client::Connect(address);
    std::vector<std::vector<Clock::time_point>> local_runs, dist_runs;
    for (int r = 0; r <= reps; ++r) {  // Round 0 warms up.
      std::vector<Clock::time_point> times = {Clock::now()};
      auto out = (*engine)->Generate(prompt, params, [&](const swarm::model::GeneratedToken& t) {
        if (t.id >= 0) times.push_back(Clock::now());
        return true;
      });
      if (!out.ok()) {
        std::fprintf(stderr, "distributed_bench: %s\n", out.status().ToString().c_str());
        cleanup();
        return 1;
      }
      if (r > 0) local_runs.push_back(times);

      swarm::GenerateRequest req;
      req.prompt_ids = prompt;
      req.max_new_tokens = decode_tokens;
      req.stop_at_eos = false;
      times = {Clock::now()};
      auto remote = (*client)->Generate(req, [&](const swarm::GenerateChunk& c) {
        for (size_t i = 0; i < c.ids.size(); ++i) times.push_back(Clock::now());
        return true;
      });
      if (!remote.ok()) {
        std::fprintf(stderr, "distributed_bench: %s\n", remote.status().ToString().c_str());
        cleanup();
        return 1;
      }
      if (r > 0) {
        dist_runs.push_back(times);
        server_rates.push_back((decode_tokens - 1) /
                               (remote->total_seconds - remote->time_to_first_token_seconds));
      }
    }
    local = FromTimes(local_runs);
    dist = FromTimes(dist_runs);
  }

  // 3. One hop: Forward of layer 0 in a worker process vs the same layer in-process.
  double rpc_p50 = 0, local_p50 = 0, local2_p50 = 0, info_p50 = 0, idle_info_p50 = 0;
  {
    Child worker;
    const std::string address = SpawnAndWait(&worker,
                                             {SelfDir() + "/swarm-worker", "--model", model_dir,
                                              "--layers", "0", "--listen", "127.0.0.1:0"},
                                             "listening on ");
    auto stub = swarm::v1::WorkerService::NewStub(grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), swarm::rpc::InternalChannelArguments()));
    auto host = swarm::model::LayerHost::Create((*engine)->checkpoint(), {0, 1}, {});
    if (address.empty() || !host.ok()) {
      std::fprintf(stderr, "distributed_bench: hop setup failed\n");
      cleanup();
      return 1;
    }
    const int64_t steps = std::min<int64_t>(hop_steps, config.max_position_embeddings - 1);
    std::vector<float> values(config.hidden_size, 0.1f);
    const auto one = swarm::HostTensor::FromFloats({1, config.hidden_size}, values);
    // Wait for the worker to load and open a session.
    std::string session;
    for (int i = 0; i < 600 && session.empty(); ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      swarm::v1::OpenSessionRequest req;
      req.set_max_length(steps);
      swarm::v1::OpenSessionResponse resp;
      if (stub->OpenSession(&ctx, req, &resp).ok()) {
        session = resp.session_id();
      } else {
        usleep(100000);
      }
    }
    std::vector<double> rpc, loc, loc2;
    auto cache = (*host)->NewCache();
    auto cache2 = (*host)->NewCache();
    const int layer0[1] = {0};
    const int layers01[2] = {0, 1};
    for (int64_t pos = 0; pos < steps; ++pos) {
      swarm::v1::ForwardRequest req;
      req.set_session_id(session);
      req.set_step_id(pos + 1);
      req.set_start_position(pos);
      req.add_layers(0);
      swarm::rpc::CopyTensorToProto(one, req.mutable_hidden());
      swarm::v1::ForwardResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      auto t0 = Clock::now();
      grpc::Status s = stub->Forward(&ctx, req, &resp);
      auto t1 = Clock::now();
      auto out = (*host)->Forward(one, pos, layer0, cache.get());
      auto t2 = Clock::now();
      auto out2 = (*host)->Forward(one, pos, layers01, cache2.get());
      auto t3 = Clock::now();
      if (!s.ok() || !out.ok() || !out2.ok()) {
        std::fprintf(stderr, "distributed_bench: hop step failed: %s\n", s.error_message().c_str());
        cleanup();
        return 1;
      }
      if (pos >= 10) {  // Skip warm-up.
        rpc.push_back(Us(t1 - t0));
        loc.push_back(Us(t2 - t1));
        loc2.push_back(Us(t3 - t2));
      }
    }
    rpc_p50 = Percentile(rpc, 0.5);
    local_p50 = Percentile(loc, 0.5);
    local2_p50 = Percentile(loc2, 0.5);
    // The floor: an RPC that does no work (Info is answered on gRPC's own thread).
    std::vector<double> info;
    for (int i = 0; i < 200; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      swarm::v1::InfoResponse resp;
      auto t0 = Clock::now();
      stub->Info(&ctx, swarm::v1::InfoRequest(), &resp);
      if (i >= 10) info.push_back(Us(Clock::now() - t0));
    }
    info_p50 = Percentile(info, 0.5);
    {
      std::vector<double> slp;
      for (int i = 0; i < 200; ++i) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        swarm::v1::InfoResponse resp;
        usleep(150);
        auto t0 = Clock::now();
        stub->Info(&ctx, swarm::v1::InfoRequest(), &resp);
        if (i >= 10) slp.push_back(Us(Clock::now() - t0));
      }
      idle_info_p50 = Percentile(slp, 0.5);
    }
  }
  cleanup();

  const double hops_per_token = 2;  // coordinator → worker 1 → coordinator → worker 2.
  std::printf("model: %s (%s, %lld layers, hidden %lld)\n", model_dir.c_str(),
              config.architecture.c_str(), static_cast<long long>(config.num_layers),
              static_cast<long long>(config.hidden_size));
  std::printf(
      "prompt %lld tokens, %lld decoded tokens x %lld runs each, alternating (after one "
      "warm-up round); OPENBLAS_THREAD_TIMEOUT=%s\n",
      static_cast<long long>(prompt_tokens), static_cast<long long>(decode_tokens),
      static_cast<long long>(reps),
      std::getenv("OPENBLAS_THREAD_TIMEOUT") ? std::getenv("OPENBLAS_THREAD_TIMEOUT") : "unset");
  const double coord_rate = Percentile(server_rates, 0.5);
  std::printf("%-46s %12s\n", "", "decode tok/s");
  std::printf("%-46s %12.1f\n", "in-process engine", local.tokens_per_s);
  std::printf("%-46s %12.1f\n", "coordinator + 2 workers (processes, loopback)", dist.tokens_per_s);
  std::printf("%-46s %12.1f\n", "  the same, timed by the coordinator", coord_rate);
  std::printf("distributed / in-process: %.3f (client clock), %.3f (coordinator clock)\n",
              dist.tokens_per_s / local.tokens_per_s, coord_rate / local.tokens_per_s);
  std::printf("per-hop overhead, end to end ((1/distributed - 1/in-process) / %g hops): %.1f us\n",
              hops_per_token, (1e6 / coord_rate - 1e6 / local.tokens_per_s) / hops_per_token);
  std::printf(
      "one hop, layer 0: Forward RPC p50 %.1f us, in-process p50 %.1f us, overhead %.1f us\n",
      rpc_p50, local_p50, rpc_p50 - local_p50);
  std::printf(
      "fixed cost of one LayerHost::Forward call (2 x 1 layer - 2 layers, in-process): "
      "%.1f us\n",
      2 * local_p50 - local2_p50);
  std::printf("an RPC doing no work (Info), p50: %.1f us back to back, %.1f us after 150 us idle\n",
              info_p50, idle_info_p50);
  return 0;
}
