// Distributed serving benchmark: decode tokens/s of the in-process engine vs the same model
// through a coordinator and 2 workers (separate processes, `swarm up`, loopback), and the
// overhead of one hop (a Forward RPC to a worker process vs the same layer run in-process).
//
//   distributed_bench [--model DIR | --synth-mb MB | --synth-layers L] [--decode-tokens 64]
//                     [--prompt-tokens 16] [--reps 3] [--hop-steps 400] [--sparse-k K]
//
// --synth-mb writes a synthetic Llama of about MB megabytes (f32) into a temporary directory
// (tools/synth.h) and removes it afterwards; --synth-layers L writes one of L layers of hidden 512
// instead (router_bench's model). Prints one table; every number is a median or mean over the
// repetitions, measured in this run on this machine.
//
// --sparse-k K (sparse mode) runs only this: 2 worker processes (the first and second half of the
// layers) and two coordinators over them, one fusing consecutive blocks on a worker into one hop
// (the default) and one with --no-fuse-hops; decode tokens/s of exact mode against sparse mode
// with the explicit plan of the first K−1 blocks and the last (N = layers blocks), the three
// alternated in each repetition after a warm-up round. The speed-up is the median over the
// repetitions of each repetition's sparse / exact ratio (coordinator clock).
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
#include "common/lock_checks.h"
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

// Decode tokens/s of one request as the coordinator timed it (prefill excluded).
double ServerRate(const swarm::GenerateResult& r, int64_t decode_tokens) {
  return (decode_tokens - 1) / (r.total_seconds - r.time_to_first_token_seconds);
}

// --sparse-k: exact vs sparse (fused and unfused hops) through 2 worker processes.
int SparseMode(const std::string& model_dir, const swarm::model::ModelConfig& config,
               const std::vector<int64_t>& prompt, int64_t decode_tokens, int64_t reps, int k) {
  const int n = static_cast<int>(config.num_layers);
  if (k < 2 || k > n) {
    std::fprintf(stderr, "distributed_bench: --sparse-k %d is not in 2..%d\n", k, n);
    return 2;
  }
  const int half = n / 2;
  Child w0, w1, fused_coord, unfused_coord;
  const std::string a0 =
      SpawnAndWait(&w0,
                   {SelfDir() + "/swarm-worker", "--model", model_dir, "--layers",
                    absl::StrCat("0-", half - 1), "--listen", "127.0.0.1:0"},
                   "listening on ");
  const std::string a1 =
      SpawnAndWait(&w1,
                   {SelfDir() + "/swarm-worker", "--model", model_dir, "--layers",
                    absl::StrCat(half, "-", n - 1), "--listen", "127.0.0.1:0"},
                   "listening on ");
  if (a0.empty() || a1.empty()) {
    std::fprintf(stderr, "distributed_bench: the workers did not start\n");
    return 1;
  }
  const std::string workers = absl::StrCat(a0, ",", a1);
  const std::string fused_address =
      SpawnAndWait(&fused_coord,
                   {SelfDir() + "/swarm-coordinator", "--model", model_dir, "--workers", workers,
                    "--listen", "127.0.0.1:0"},
                   "listening on ");
  const std::string unfused_address =
      SpawnAndWait(&unfused_coord,
                   {SelfDir() + "/swarm-coordinator", "--model", model_dir, "--workers", workers,
                    "--listen", "127.0.0.1:0", "--no-fuse-hops"},
                   "listening on ");
  if (fused_address.empty() || unfused_address.empty()) {
    std::fprintf(stderr, "distributed_bench: the coordinators did not start\n");
    return 1;
  }
  auto fused = swarm::Client::Connect(fused_address);
  auto unfused = swarm::Client::Connect(unfused_address);
  if (!fused.ok() || !unfused.ok()) {
    std::fprintf(stderr, "distributed_bench: cannot connect to the coordinators\n");
    return 1;
  }
  std::vector<int> blocks;
  for (int b = 0; b < k - 1; ++b) blocks.push_back(b);
  blocks.push_back(n - 1);
  auto request = [&](bool sparse) {
    swarm::GenerateRequest req;
    req.prompt_ids = prompt;
    req.max_new_tokens = decode_tokens;
    req.stop_at_eos = false;
    if (sparse) {
      req.mode = "sparse";
      req.blocks = blocks;
      req.num_blocks = n;
    }
    return req;
  };
  // Each call until it succeeds (the coordinators serve once they have seen the workers).
  auto run = [&](swarm::Client& client, bool sparse, int tries) -> absl::StatusOr<double> {
    absl::Status last;
    for (int i = 0; i < tries; ++i) {
      auto r = client.Generate(request(sparse));
      if (r.ok()) return ServerRate(*r, decode_tokens);
      last = r.status();
      usleep(200000);
    }
    return last;
  };
  std::vector<double> exact, sparse_fused, sparse_unfused, ratio_fused, ratio_unfused;
  for (int64_t r = 0; r <= reps; ++r) {  // Round 0 warms up (and waits for serving).
    const int tries = r == 0 ? 300 : 1;
    auto e = run(**fused, false, tries);
    auto f = run(**fused, true, tries);
    auto u = run(**unfused, true, tries);
    for (const auto* x : {&e, &f, &u}) {
      if (!x->ok()) {
        std::fprintf(stderr, "distributed_bench: %s\n", x->status().ToString().c_str());
        return 1;
      }
    }
    if (r == 0) continue;
    exact.push_back(*e);
    sparse_fused.push_back(*f);
    sparse_unfused.push_back(*u);
    ratio_fused.push_back(*f / *e);
    ratio_unfused.push_back(*u / *e);
  }
  std::string plan;
  for (int b : blocks) plan += (plan.empty() ? "" : ",") + std::to_string(b);
  std::printf("model: %s (%d layers, hidden %lld); workers [0-%d] and [%d-%d]\n", model_dir.c_str(),
              n, static_cast<long long>(config.hidden_size), half - 1, half, n - 1);
  std::printf(
      "prompt %zu tokens, %lld decoded tokens x %lld runs each, alternating (after one warm-up "
      "round); sparse blocks [%s] of %d\n",
      prompt.size(), static_cast<long long>(decode_tokens), static_cast<long long>(reps),
      plan.c_str(), n);
  std::printf("| mode | hops per token | decode tok/s (median) | speed-up (median of runs) |\n");
  std::printf("|---|---:|---:|---:|\n");
  int fused_hops = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const bool first_half = blocks[i] < half;
    if (i == 0 || first_half != (blocks[i - 1] < half)) ++fused_hops;
  }
  std::printf("| exact | 2 | %.1f | 1.00x |\n", Percentile(exact, 0.5));
  std::printf("| sparse k=%d, fused hops | %d | %.1f | %.2fx |\n", k, fused_hops,
              Percentile(sparse_fused, 0.5), Percentile(ratio_fused, 0.5));
  std::printf("| sparse k=%d, one hop per block (--no-fuse-hops) | %d | %.1f | %.2fx |\n", k,
              static_cast<int>(blocks.size()), Percentile(sparse_unfused, 0.5),
              Percentile(ratio_unfused, 0.5));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  swarm::DisableLockOrderChecks();  // common/lock_checks.h: absl's release default.
  std::string model_dir;
  int64_t synth_mb = 0, synth_layers = 0, decode_tokens = 64, prompt_tokens = 16, reps = 3,
          hop_steps = 400, sparse_k = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") {
      model_dir = value;
    } else if ((flag == "--synth-mb" && absl::SimpleAtoi(value, &synth_mb)) ||
               (flag == "--decode-tokens" && absl::SimpleAtoi(value, &decode_tokens)) ||
               (flag == "--prompt-tokens" && absl::SimpleAtoi(value, &prompt_tokens)) ||
               (flag == "--reps" && absl::SimpleAtoi(value, &reps)) ||
               (flag == "--hop-steps" && absl::SimpleAtoi(value, &hop_steps)) ||
               (flag == "--synth-layers" && absl::SimpleAtoi(value, &synth_layers)) ||
               (flag == "--sparse-k" && absl::SimpleAtoi(value, &sparse_k))) {
    } else {
      std::fprintf(stderr, "distributed_bench: bad flag %s %s\n", flag.c_str(), value.c_str());
      return 2;
    }
  }
  std::string synth_dir;
  if (synth_layers > 0 || synth_mb > 0) {
    swarm::tools::SynthOptions o;
    if (synth_layers > 0) {
      // router_bench's synthetic Llama: hidden 512, f32.
      o.layers = synth_layers;
      o.hidden = 512;
      o.intermediate = 1408;
      o.heads = 8;
      o.kv_heads = 4;
      o.vocab = 4096;
      o.max_position = 512;
    } else {
      // Llama blocks of hidden 1024 (≈ 50 MB f32 each with intermediate 2816) plus 8k-vocab ends.
      o.hidden = 1024;
      o.intermediate = 2816;
      o.heads = 16;
      o.kv_heads = 8;
      o.vocab = 8192;
      o.max_position = 1024;
      o.layers =
          std::max<int64_t>(2, (synth_mb * 1000000 - 2 * o.vocab * o.hidden * 4) /
                                   (4 * (3 * o.hidden * o.hidden + 3 * o.hidden * o.intermediate)));
    }
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
  if (sparse_k > 0) {
    const int rc =
        SparseMode(model_dir, config, prompt, decode_tokens, reps, static_cast<int>(sparse_k));
    cleanup();
    return rc;
  }

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
