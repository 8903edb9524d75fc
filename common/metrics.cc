#include "common/metrics.h"

#include <algorithm>
#include <cctype>
#include <exception>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/layer_set.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace swarm::common {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;
using prometheus::Registry;

// Bucket layouts, in seconds. A forward step spans ~100 µs (a tiny model on CPU) to seconds (a
// 70B block on a slow card); requests span tens of ms to minutes.
const Histogram::BucketBoundaries& StepBuckets() {
  static const auto* b =
      new Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  return *b;
}
const Histogram::BucketBoundaries& FirstTokenBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                         1,     2.5,  5,     10,   30,  60};
  return *b;
}
const Histogram::BucketBoundaries& RequestBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                                         5,    10,    30,   60,  120,  300, 600};
  return *b;
}
// Sizes of one scheduler step: sequences or rows (tokens) in it, powers of two.
const Histogram::BucketBoundaries& BatchSizeBuckets() {
  static const auto* b =
      new Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  return *b;
}
const Histogram::BucketBoundaries& BlockLoadBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                         2.5,  5,     10,   30,  60,   120};
  return *b;
}

// Rows and steps per batch: powers of two, one row (a decode step alone) to 8192 (long prefill
// chunks of many sessions).
const Histogram::BucketBoundaries& BatchRowBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{1,   2,   4,   8,    16,   32,   64,
                                                         128, 256, 512, 1024, 2048, 4096, 8192};
  return *b;
}
const Histogram::BucketBoundaries& BatchSequenceBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *b;
}

// Registration and Add() validate names and may throw; our names are constants, but keep any
// exception at the call site as the house style asks.
template <typename F>
absl::Status Guard(absl::string_view what, F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("registering metric ", what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat("registering metric ", what, ": unknown exception"));
  }
}

// Lazily added series (rare paths: errors, unknown labels). Returns null if prometheus-cpp throws,
// which callers treat as "drop this sample".
template <typename T, typename... Args>
T* AddOrNull(Family<T>* family, const Labels& labels, Args&&... args) {
  try {
    return &family->Add(labels, std::forward<Args>(args)...);
  } catch (...) {
    return nullptr;
  }
}

double NonNegative(double v) { return v > 0 ? v : 0; }

// A label value that is an identifier ([A-Za-z0-9_]+, at most 40 characters) as given, else
// "other": keeps code-supplied names readable and anything odd bounded.
std::string IdentifierLabel(absl::string_view s) {
  if (s.empty() || s.size() > 40) return "other";
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return "other";
  }
  return std::string(s);
}

template <typename T>
std::vector<double> ToDoubles(absl::Span<const T> xs) {
  std::vector<double> out;
  out.reserve(xs.size());
  for (T x : xs) out.push_back(static_cast<double>(x));
  return out;
}

}  // namespace

double JainIndex(absl::Span<const double> loads) {
  double sum = 0, sum_sq = 0;
  for (double x : loads) {
    x = NonNegative(x);
    sum += x;
    sum_sq += x * x;
  }
  if (loads.empty() || sum_sq <= 0) return 1.0;
  return (sum * sum) / (static_cast<double>(loads.size()) * sum_sq);
}

double JainIndex(absl::Span<const int64_t> counts) {
  std::vector<double> d = ToDoubles(counts);
  return JainIndex(absl::Span<const double>(d));
}

double MaxMeanRatio(absl::Span<const double> loads) {
  double sum = 0, max = 0;
  for (double x : loads) {
    x = NonNegative(x);
    sum += x;
    max = std::max(max, x);
  }
  if (loads.empty() || sum <= 0) return 1.0;
  return max / (sum / static_cast<double>(loads.size()));
}

double MaxMeanRatio(absl::Span<const int64_t> counts) {
  std::vector<double> d = ToDoubles(counts);
  return MaxMeanRatio(absl::Span<const double>(d));
}

std::string StatusCodeLabel(absl::StatusCode code) {
  std::string name = absl::StatusCodeToString(code);
  if (name.empty()) return "unknown";
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

absl::string_view ModeLabel(absl::string_view mode) {
  if (mode == "exact") return "exact";
  if (mode == "sparse") return "sparse";
  return "other";
}

// ---------------------------------------------------------------------------------------------
// WorkerMetrics

struct WorkerMetrics::Impl {
  struct Range {
    int first = 0;
    int last = 0;
    std::string label;
    Counter* steps = nullptr;
    Counter* tokens = nullptr;
    Histogram* latency = nullptr;
  };

  std::shared_ptr<Registry> registry;
  Family<Counter>* steps_family = nullptr;
  Family<Counter>* tokens_family = nullptr;
  Family<Histogram>* latency_family = nullptr;
  Family<Counter>* errors = nullptr;
  Family<Counter>* session_evictions = nullptr;
  std::vector<Range> ranges;  // Fixed after Create().
  Gauge* draining = nullptr;
  Gauge* ready = nullptr;
  Gauge* sessions = nullptr;
  Gauge* kv_bytes = nullptr;
  Gauge* kv_reserved = nullptr;
  Gauge* kv_budget = nullptr;
  Gauge* stream_buffered = nullptr;
  Gauge* resident = nullptr;
  Gauge* resident_bytes = nullptr;
  Counter* hits = nullptr;
  Counter* loads = nullptr;
  Counter* evictions = nullptr;
  Histogram* load_seconds = nullptr;
  Histogram* batch_rows = nullptr;
  Histogram* batch_sequences = nullptr;
  Counter* busy_seconds = nullptr;

  // The hosted range holding `layer`, or null for "other".
  const Range* Find(int layer) const {
    for (const Range& r : ranges) {
      if (layer >= r.first && layer <= r.last) return &r;
    }
    return nullptr;
  }
};

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Create(const Options& options) {
  if (options.layers.empty()) {
    return absl::InvalidArgumentError("WorkerMetrics: no hosted layer given");
  }
  for (size_t i = 0; i < options.layers.size(); ++i) {
    if (options.layers[i] < 0 || (i > 0 && options.layers[i] <= options.layers[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("WorkerMetrics: hosted layers [",
                                                     absl::StrJoin(options.layers, ","),
                                                     "] are not sorted, unique and >= 0"));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->registry = options.registry ? options.registry : std::make_shared<Registry>();
  Registry& reg = *impl->registry;
  for (auto [begin, end] : LayerRuns(options.layers)) {
    Impl::Range r;
    r.first = begin;
    r.last = end - 1;
    r.label = absl::StrCat(r.first, "-", r.last);
    impl->ranges.push_back(std::move(r));
  }

  Impl* m = impl.get();
  absl::Status s = Guard("swarm_worker_*", [&] {
    m->steps_family = &prometheus::BuildCounter()
                           .Name("swarm_worker_forward_steps_total")
                           .Help("Forward steps completed, by hosted layer range.")
                           .Register(reg);
    m->tokens_family = &prometheus::BuildCounter()
                            .Name("swarm_worker_forward_tokens_total")
                            .Help(
                                "Token positions run through the layers by completed forward "
                                "steps (a prefill of T tokens counts T).")
                            .Register(reg);
    m->latency_family = &prometheus::BuildHistogram()
                             .Name("swarm_worker_forward_duration_seconds")
                             .Help("Time to run one completed forward step over the layer range.")
                             .Register(reg);
    for (Impl::Range& r : m->ranges) {
      r.steps = &m->steps_family->Add({{"layers", r.label}});
      r.tokens = &m->tokens_family->Add({{"layers", r.label}});
      r.latency = &m->latency_family->Add({{"layers", r.label}}, StepBuckets());
    }
    m->errors = &prometheus::BuildCounter()
                     .Name("swarm_worker_errors_total")
                     .Help("RPCs that failed, by method and gRPC status code.")
                     .Register(reg);
    // The failures operators alert on exist from the first scrape (rate() needs a zero sample),
    // so does the family: dashboards and tests see it before anything failed.
    for (const char* code : {"internal", "resource_exhausted", "unavailable"}) {
      m->errors->Add({{"method", "Forward"}, {"code", code}});
    }
    m->ready = &prometheus::BuildGauge()
                    .Name("swarm_worker_ready")
                    .Help("1 once the hosted layers are loaded and the worker reports SERVING.")
                    .Register(reg)
                    .Add({});
    m->draining = &prometheus::BuildGauge()
                       .Name("swarm_worker_draining")
                       .Help(
                           "1 while the worker drains (SIGTERM): it takes no new sessions and "
                           "exits once it holds none or the drain grace passes.")
                       .Register(reg)
                       .Add({});
    m->sessions = &prometheus::BuildGauge()
                       .Name("swarm_worker_active_sessions")
                       .Help("Open sessions (each holds a KV cache).")
                       .Register(reg)
                       .Add({});
    m->kv_bytes = &prometheus::BuildGauge()
                       .Name("swarm_worker_kv_cache_bytes")
                       .Help("Bytes held by the KV caches of open sessions.")
                       .Register(reg)
                       .Add({});
    m->kv_reserved = &prometheus::BuildGauge()
                          .Name("swarm_worker_kv_cache_reserved_bytes")
                          .Help(
                              "KV bytes reserved by open sessions (max_length x bytes per "
                              "position each): what the budget refuses new sessions on.")
                          .Register(reg)
                          .Add({});
    m->kv_budget = &prometheus::BuildGauge()
                        .Name("swarm_worker_kv_cache_budget_bytes")
                        .Help("KV cache memory budget in bytes (0 = unlimited).")
                        .Register(reg)
                        .Add({});
    m->stream_buffered = &prometheus::BuildGauge()
                              .Name("swarm_worker_stream_buffered_bytes")
                              .Help(
                                  "Bytes held by ForwardStream and ForwardBatchStream requests "
                                  "still arriving.")
                              .Register(reg)
                              .Add({});
    m->session_evictions = &prometheus::BuildCounter()
                                .Name("swarm_worker_session_evictions_total")
                                .Help("Sessions dropped by the worker, by reason.")
                                .Register(reg);
    // The worker's evictions: idle past the TTL, or a lease its coordinator stopped renewing.
    // (Over the KV budget it refuses sessions, it never drops one.)
    m->session_evictions->Add({{"reason", "idle_ttl"}});
    m->session_evictions->Add({{"reason", "lease"}});
    m->resident = &prometheus::BuildGauge()
                       .Name("swarm_worker_blocks_resident")
                       .Help("Blocks resident in device memory now.")
                       .Register(reg)
                       .Add({});
    m->resident_bytes = &prometheus::BuildGauge()
                             .Name("swarm_worker_resident_weight_bytes")
                             .Help("Weight bytes of the blocks resident now.")
                             .Register(reg)
                             .Add({});
    m->hits = &prometheus::BuildCounter()
                   .Name("swarm_worker_block_hits_total")
                   .Help("Block uses (steps and prefetches) that found the block resident.")
                   .Register(reg)
                   .Add({});
    m->loads = &prometheus::BuildCounter()
                    .Name("swarm_worker_block_loads_total")
                    .Help("Blocks loaded onto the device.")
                    .Register(reg)
                    .Add({});
    m->evictions = &prometheus::BuildCounter()
                        .Name("swarm_worker_block_evictions_total")
                        .Help("Blocks dropped from device memory.")
                        .Register(reg)
                        .Add({});
    m->load_seconds = &prometheus::BuildHistogram()
                           .Name("swarm_worker_block_load_duration_seconds")
                           .Help("Time to load one block onto the device.")
                           .Register(reg)
                           .Add({}, BlockLoadBuckets());
    m->batch_rows = &prometheus::BuildHistogram()
                         .Name("swarm_worker_batch_rows")
                         .Help(
                             "Rows (token positions) one pass through the layers computed, over "
                             "every session in the batch.")
                         .Register(reg)
                         .Add({}, BatchRowBuckets());
    m->batch_sequences = &prometheus::BuildHistogram()
                              .Name("swarm_worker_batch_sequences")
                              .Help("Sessions' steps one pass through the layers computed.")
                              .Register(reg)
                              .Add({}, BatchSequenceBuckets());
    m->busy_seconds = &prometheus::BuildCounter()
                           .Name("swarm_worker_busy_seconds_total")
                           .Help(
                               "Wall time during which the worker was computing (at least one "
                               "pass through the layers running); its rate is the busy fraction.")
                           .Register(reg)
                           .Add({});
    std::vector<std::string> labels;
    for (const Impl::Range& r : m->ranges) labels.push_back(r.label);
    prometheus::BuildGauge()
        .Name("swarm_worker_info")
        .Help("Always 1; labels describe the worker: model, device, dtype, hosted layer ranges.")
        .Register(reg)
        .Add({{"model", options.model},
              {"device", options.device},
              {"dtype", options.dtype},
              {"layers", absl::StrJoin(labels, ",")}})
        .Set(1);
  });
  if (!s.ok()) return s;
  return std::unique_ptr<WorkerMetrics>(new WorkerMetrics(std::move(impl)));
}

WorkerMetrics::WorkerMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerMetrics::~WorkerMetrics() = default;

std::shared_ptr<prometheus::Registry> WorkerMetrics::registry() const { return impl_->registry; }

void WorkerMetrics::OnForward(int first_layer, double seconds, absl::StatusCode code,
                              int64_t tokens) {
  if (code != absl::StatusCode::kOk) {
    OnError("Forward", code);
    return;
  }
  const Impl::Range* r = impl_->Find(first_layer);
  Counter* steps = r ? r->steps : AddOrNull(impl_->steps_family, {{"layers", "other"}});
  Counter* toks = r ? r->tokens : AddOrNull(impl_->tokens_family, {{"layers", "other"}});
  Histogram* lat =
      r ? r->latency : AddOrNull(impl_->latency_family, {{"layers", "other"}}, StepBuckets());
  if (steps) steps->Increment();
  if (toks && tokens > 0) toks->Increment(static_cast<double>(tokens));
  if (lat) lat->Observe(NonNegative(seconds));
}

void WorkerMetrics::OnError(absl::string_view method, absl::StatusCode code) {
  Counter* c = AddOrNull(impl_->errors,
                         {{"method", IdentifierLabel(method)}, {"code", StatusCodeLabel(code)}});
  if (c) c->Increment();
}

void WorkerMetrics::SetReady(bool ready) { impl_->ready->Set(ready ? 1 : 0); }
void WorkerMetrics::SetDraining(bool draining) { impl_->draining->Set(draining ? 1 : 0); }
void WorkerMetrics::SetActiveSessions(int64_t sessions) {
  impl_->sessions->Set(static_cast<double>(sessions));
}
void WorkerMetrics::SetKvCacheBytes(int64_t bytes) {
  impl_->kv_bytes->Set(static_cast<double>(bytes));
}
void WorkerMetrics::SetKvCacheReservedBytes(int64_t bytes) {
  impl_->kv_reserved->Set(static_cast<double>(bytes));
}
void WorkerMetrics::SetKvCacheBudgetBytes(int64_t bytes) {
  impl_->kv_budget->Set(static_cast<double>(bytes));
}
void WorkerMetrics::OnSessionEvicted(absl::string_view reason) {
  Counter* c = AddOrNull(impl_->session_evictions, {{"reason", IdentifierLabel(reason)}});
  if (c) c->Increment();
}
void WorkerMetrics::SetBlocksResident(int64_t blocks, int64_t bytes) {
  impl_->resident->Set(static_cast<double>(blocks));
  impl_->resident_bytes->Set(static_cast<double>(bytes));
}
void WorkerMetrics::OnBlockHit() { impl_->hits->Increment(); }
void WorkerMetrics::OnBlockLoad(double seconds) {
  impl_->loads->Increment();
  impl_->load_seconds->Observe(NonNegative(seconds));
}
void WorkerMetrics::OnBlockEviction() { impl_->evictions->Increment(); }
void WorkerMetrics::OnBatch(int64_t sequences, int64_t rows) {
  impl_->batch_rows->Observe(static_cast<double>(rows > 0 ? rows : 0));
  impl_->batch_sequences->Observe(static_cast<double>(sequences > 0 ? sequences : 0));
}
void WorkerMetrics::AddStreamBufferedBytes(int64_t delta) {
  impl_->stream_buffered->Increment(static_cast<double>(delta));
}
void WorkerMetrics::AddBusySeconds(double seconds) {
  impl_->busy_seconds->Increment(NonNegative(seconds));
}

// ---------------------------------------------------------------------------------------------
// CoordinatorMetrics

struct CoordinatorMetrics::Impl {
  struct ModeSeries {
    Counter* prompt_tokens = nullptr;
    Counter* generated_tokens = nullptr;
    Histogram* duration = nullptr;
    Histogram* first_token = nullptr;
    Histogram* inter_token = nullptr;
  };
  struct WorkerSeries {
    Counter* steps = nullptr;
    Histogram* latency = nullptr;
    Gauge* up = nullptr;
    Counter* busy = nullptr;
  };

  std::shared_ptr<Registry> registry;
  Family<Counter>* requests = nullptr;
  Family<Counter>* prompt_tokens = nullptr;
  Family<Counter>* generated_tokens = nullptr;
  Family<Histogram>* duration = nullptr;
  Family<Histogram>* first_token = nullptr;
  Family<Histogram>* inter_token = nullptr;
  Family<Counter>* worker_steps = nullptr;
  Family<Histogram>* worker_latency = nullptr;
  Family<Gauge>* worker_up = nullptr;
  Family<Counter>* worker_errors = nullptr;
  Family<Counter>* worker_busy = nullptr;
  Histogram* batch_sequences = nullptr;
  Histogram* batch_tokens = nullptr;
  Histogram* queue_time = nullptr;
  Family<Counter>* failovers = nullptr;
  Counter* replayed_positions = nullptr;
  Counter* replayed_bytes = nullptr;
  Histogram* replay_time = nullptr;
  Gauge* replay_history = nullptr;
  Gauge* running = nullptr;
  Gauge* waiting = nullptr;
  Gauge* active = nullptr;
  Gauge* ready = nullptr;
  Gauge* jain = nullptr;
  Gauge* max_mean = nullptr;
  Gauge* gap = nullptr;
  Gauge* gap_toll_free = nullptr;
  Gauge* worker_jain = nullptr;
  Gauge* worker_max_mean = nullptr;
  Counter* windows_one = nullptr;
  Counter* windows_many = nullptr;
  ModeSeries exact, sparse;  // Fixed after Create(); "other" is added on demand.
  std::vector<Counter*> selections, steps;
  std::vector<Gauge*> share, tolls, replicas;
  absl::flat_hash_map<std::string, WorkerSeries> workers;  // Fixed after Create().

  ModeSeries Mode(absl::string_view mode) {
    absl::string_view label = ModeLabel(mode);
    if (label == "exact") return exact;
    if (label == "sparse") return sparse;
    return MakeMode(label);
  }
  ModeSeries MakeMode(absl::string_view label) {
    Labels l{{"mode", std::string(label)}};
    ModeSeries m;
    m.prompt_tokens = AddOrNull(prompt_tokens, l);
    m.generated_tokens = AddOrNull(generated_tokens, l);
    m.duration = AddOrNull(duration, l, RequestBuckets());
    m.first_token = AddOrNull(first_token, l, FirstTokenBuckets());
    m.inter_token = AddOrNull(inter_token, l, StepBuckets());
    return m;
  }
  WorkerSeries Worker(absl::string_view worker) {
    auto it = workers.find(worker);
    if (it != workers.end()) return it->second;
    Labels l{{"worker", "other"}};
    WorkerSeries w;
    w.steps = AddOrNull(worker_steps, l);
    w.latency = AddOrNull(worker_latency, l, StepBuckets());
    w.up = AddOrNull(worker_up, l);
    w.busy = AddOrNull(worker_busy, l);
    return w;
  }
  bool ValidBlock(int b) const { return b >= 0 && b < static_cast<int>(selections.size()); }
};

absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> CoordinatorMetrics::Create(
    const Options& options) {
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CoordinatorMetrics: num_blocks must be > 0, got ", options.num_blocks));
  }
  absl::flat_hash_set<std::string> seen;
  for (const std::string& w : options.workers) {
    if (w.empty()) return absl::InvalidArgumentError("CoordinatorMetrics: empty worker address");
    if (!seen.insert(w).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("CoordinatorMetrics: worker '", w, "' given twice"));
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->registry = options.registry ? options.registry : std::make_shared<Registry>();
  Registry& reg = *impl->registry;
  Impl* m = impl.get();
  absl::Status s = Guard("swarm_coordinator_*", [&] {
    m->requests = &prometheus::BuildCounter()
                       .Name("swarm_coordinator_requests_total")
                       .Help("Generate requests finished, by mode and outcome (gRPC code).")
                       .Register(reg);
    m->prompt_tokens = &prometheus::BuildCounter()
                            .Name("swarm_coordinator_prompt_tokens_total")
                            .Help("Prompt tokens of finished requests.")
                            .Register(reg);
    m->generated_tokens = &prometheus::BuildCounter()
                               .Name("swarm_coordinator_generated_tokens_total")
                               .Help("Tokens generated and streamed by finished requests.")
                               .Register(reg);
    m->duration = &prometheus::BuildHistogram()
                       .Name("swarm_coordinator_request_duration_seconds")
                       .Help("Generate request latency, accept to last token.")
                       .Register(reg);
    m->first_token = &prometheus::BuildHistogram()
                          .Name("swarm_coordinator_time_to_first_token_seconds")
                          .Help("Time from accepting a request to streaming its first token.")
                          .Register(reg);
    m->inter_token = &prometheus::BuildHistogram()
                          .Name("swarm_coordinator_inter_token_latency_seconds")
                          .Help("Time between two consecutive tokens of one request.")
                          .Register(reg);
    m->exact = m->MakeMode("exact");
    m->sparse = m->MakeMode("sparse");
    for (const char* mode : {"exact", "sparse"}) {
      m->requests->Add({{"mode", mode}, {"outcome", "ok"}});  // Series exist from the start.
    }
    m->active = &prometheus::BuildGauge()
                     .Name("swarm_coordinator_active_requests")
                     .Help("Generate requests in flight.")
                     .Register(reg)
                     .Add({});
    m->ready = &prometheus::BuildGauge()
                    .Name("swarm_coordinator_ready")
                    .Help("1 while the workers together cover every layer (serving).")
                    .Register(reg)
                    .Add({});

    auto& selections = prometheus::BuildCounter()
                           .Name("swarm_coordinator_block_selections_total")
                           .Help("Requests for which the router selected the block.")
                           .Register(reg);
    auto& steps = prometheus::BuildCounter()
                      .Name("swarm_coordinator_block_steps_total")
                      .Help("Forward steps run on the block (its load).")
                      .Register(reg);
    auto& share = prometheus::BuildGauge()
                      .Name("swarm_coordinator_block_load_share_ratio")
                      .Help("The block's share of the router's current load estimate (sums to 1).")
                      .Register(reg);
    auto& tolls = prometheus::BuildGauge()
                      .Name("swarm_coordinator_router_toll")
                      .Help("The router's load toll on the block (router score units).")
                      .Register(reg);
    auto& replicas = prometheus::BuildGauge()
                         .Name("swarm_coordinator_block_replicas")
                         .Help("Ready workers hosting the block (0 = uncovered).")
                         .Register(reg);
    for (int b = 0; b < options.num_blocks; ++b) {
      Labels l{{"block", absl::StrCat(b)}};
      m->selections.push_back(&selections.Add(l));
      m->steps.push_back(&steps.Add(l));
      m->share.push_back(&share.Add(l));
      m->tolls.push_back(&tolls.Add(l));
      m->replicas.push_back(&replicas.Add(l));
    }
    m->jain = &prometheus::BuildGauge()
                   .Name("swarm_coordinator_block_load_jain_ratio")
                   .Help(
                       "Jain's fairness index of the block loads: 1 balanced, 1/N one block "
                       "carries all.")
                   .Register(reg)
                   .Add({});
    m->max_mean = &prometheus::BuildGauge()
                       .Name("swarm_coordinator_block_load_max_mean_ratio")
                       .Help("Largest block load over the mean block load: 1 balanced, N worst.")
                       .Register(reg)
                       .Add({});
    m->gap = &prometheus::BuildGauge()
                  .Name("swarm_coordinator_router_equilibrium_gap")
                  .Help(
                      "Equilibrium gap of the previous balancing window's choices at the last "
                      "window's prices (damage-scale units): 0 once routing and load settle.")
                  .Register(reg)
                  .Add({});
    m->gap_toll_free =
        &prometheus::BuildGauge()
             .Name("swarm_coordinator_router_toll_free_gap")
             .Help(
                 "Equilibrium gap of the last balancing window's toll-free choices (damage-scale "
                 "units): how far routing each request alone was from the load equilibrium.")
             .Register(reg)
             .Add({});
    m->worker_jain = &prometheus::BuildGauge()
                          .Name("swarm_coordinator_worker_busy_jain_ratio")
                          .Help(
                              "Jain's index of the usable workers' busy fractions at the last "
                              "balancing window: 1 balanced.")
                          .Register(reg)
                          .Add({});
    m->worker_max_mean = &prometheus::BuildGauge()
                              .Name("swarm_coordinator_worker_busy_max_mean_ratio")
                              .Help(
                                  "Busiest worker's busy fraction over the mean at the last "
                                  "balancing window: 1 balanced.")
                              .Register(reg)
                              .Add({});
    auto& windows = prometheus::BuildCounter()
                        .Name("swarm_coordinator_router_balance_windows_total")
                        .Help(
                            "Balancing windows routed (--balance), by size: requests=\"one\" "
                            "or \"many\".")
                        .Register(reg);
    m->windows_one = &windows.Add({{"requests", "one"}});
    m->windows_many = &windows.Add({{"requests", "many"}});
    m->jain->Set(1);
    m->max_mean->Set(1);
    m->worker_jain->Set(1);
    m->worker_max_mean->Set(1);

    m->worker_steps = &prometheus::BuildCounter()
                           .Name("swarm_coordinator_worker_steps_total")
                           .Help("Forward steps dispatched to the worker and completed.")
                           .Register(reg);
    m->worker_latency = &prometheus::BuildHistogram()
                             .Name("swarm_coordinator_worker_step_duration_seconds")
                             .Help("Round trip of one forward step to the worker.")
                             .Register(reg);
    m->worker_up = &prometheus::BuildGauge()
                        .Name("swarm_coordinator_worker_up")
                        .Help("1 when the coordinator sees the worker as healthy (SERVING).")
                        .Register(reg);
    m->worker_errors = &prometheus::BuildCounter()
                            .Name("swarm_coordinator_worker_errors_total")
                            .Help("Steps dispatched to the worker that failed, by gRPC code.")
                            .Register(reg);
    m->worker_busy = &prometheus::BuildCounter()
                          .Name("swarm_coordinator_worker_busy_seconds_total")
                          .Help(
                              "Wall time the worker spent computing the scheduler's batch hops "
                              "(rate() = its busy fraction).")
                          .Register(reg);
    m->batch_sequences = &prometheus::BuildHistogram()
                              .Name("swarm_coordinator_batch_sequences")
                              .Help("Sequences in one scheduler step.")
                              .Register(reg)
                              .Add({}, BatchSizeBuckets());
    m->batch_tokens = &prometheus::BuildHistogram()
                           .Name("swarm_coordinator_batch_tokens")
                           .Help(
                               "Rows (tokens: decode rows and prefill chunks) in one scheduler "
                               "step.")
                           .Register(reg)
                           .Add({}, BatchSizeBuckets());
    m->queue_time = &prometheus::BuildHistogram()
                         .Name("swarm_coordinator_queue_time_seconds")
                         .Help("Time a request waited in the scheduler's queue before admission.")
                         .Register(reg)
                         .Add({}, FirstTokenBuckets());
    m->failovers = &prometheus::BuildCounter()
                        .Name("swarm_coordinator_failovers_total")
                        .Help(
                            "Request sessions moved off a worker by a fail-over, by reason "
                            "(error, deadline, drain, down).")
                        .Register(reg);
    m->replayed_positions = &prometheus::BuildCounter()
                                 .Name("swarm_coordinator_replayed_positions_total")
                                 .Help("Positions (rows x hops) replayed into moved sessions.")
                                 .Register(reg)
                                 .Add({});
    m->replayed_bytes = &prometheus::BuildCounter()
                             .Name("swarm_coordinator_replayed_bytes_total")
                             .Help("Hidden-state bytes replayed into moved sessions.")
                             .Register(reg)
                             .Add({});
    m->replay_time = &prometheus::BuildHistogram()
                          .Name("swarm_coordinator_replay_duration_seconds")
                          .Help("Time of one fail-over: finding a worker, opening, replaying.")
                          .Register(reg)
                          .Add({}, FirstTokenBuckets());
    m->replay_history = &prometheus::BuildGauge()
                             .Name("swarm_coordinator_replay_history_bytes")
                             .Help("Replay history held for fail-over (--replay-budget bounds it).")
                             .Register(reg)
                             .Add({});
    m->running = &prometheus::BuildGauge()
                      .Name("swarm_coordinator_scheduler_running_requests")
                      .Help("Requests in the scheduler's running batch.")
                      .Register(reg)
                      .Add({});
    m->waiting = &prometheus::BuildGauge()
                      .Name("swarm_coordinator_scheduler_waiting_requests")
                      .Help("Requests waiting in the scheduler's queue.")
                      .Register(reg)
                      .Add({});
    for (const std::string& w : options.workers) {
      Labels l{{"worker", w}};
      Impl::WorkerSeries ws;
      ws.steps = &m->worker_steps->Add(l);
      ws.latency = &m->worker_latency->Add(l, StepBuckets());
      ws.up = &m->worker_up->Add(l);
      ws.busy = &m->worker_busy->Add(l);
      // As for the worker's errors: the codes of a worker that is down or too slow.
      for (const char* code : {"unavailable", "deadline_exceeded"}) {
        m->worker_errors->Add({{"worker", w}, {"code", code}});
      }
      for (const char* reason : {"error", "deadline", "drain", "down"}) {
        m->failovers->Add({{"worker", w}, {"reason", reason}});
      }
      m->workers.emplace(w, ws);
    }
    prometheus::BuildGauge()
        .Name("swarm_coordinator_info")
        .Help("Always 1; labels describe the coordinator: model and block count.")
        .Register(reg)
        .Add({{"model", options.model}, {"blocks", absl::StrCat(options.num_blocks)}})
        .Set(1);
  });
  if (!s.ok()) return s;
  return std::unique_ptr<CoordinatorMetrics>(new CoordinatorMetrics(std::move(impl)));
}

CoordinatorMetrics::CoordinatorMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoordinatorMetrics::~CoordinatorMetrics() = default;

std::shared_ptr<prometheus::Registry> CoordinatorMetrics::registry() const {
  return impl_->registry;
}

void CoordinatorMetrics::OnRequestStart(absl::string_view /*mode*/) { impl_->active->Increment(); }

void CoordinatorMetrics::OnRequestDone(absl::string_view mode, absl::StatusCode outcome,
                                       int64_t prompt_tokens, int64_t generated_tokens,
                                       double seconds, double time_to_first_token_seconds) {
  impl_->active->Decrement();
  Counter* c = AddOrNull(impl_->requests, {{"mode", std::string(ModeLabel(mode))},
                                           {"outcome", StatusCodeLabel(outcome)}});
  if (c) c->Increment();
  Impl::ModeSeries m = impl_->Mode(mode);
  if (m.prompt_tokens && prompt_tokens > 0) {
    m.prompt_tokens->Increment(static_cast<double>(prompt_tokens));
  }
  if (m.generated_tokens && generated_tokens > 0) {
    m.generated_tokens->Increment(static_cast<double>(generated_tokens));
  }
  if (m.duration) m.duration->Observe(NonNegative(seconds));
  if (m.first_token && time_to_first_token_seconds >= 0) {
    m.first_token->Observe(time_to_first_token_seconds);
  }
}

void CoordinatorMetrics::OnRequestRefused(absl::string_view mode, absl::StatusCode outcome) {
  Counter* c = AddOrNull(impl_->requests, {{"mode", std::string(ModeLabel(mode))},
                                           {"outcome", StatusCodeLabel(outcome)}});
  if (c) c->Increment();
}

void CoordinatorMetrics::OnInterToken(absl::string_view mode, double seconds) {
  Impl::ModeSeries m = impl_->Mode(mode);
  if (m.inter_token) m.inter_token->Observe(NonNegative(seconds));
}

void CoordinatorMetrics::OnBlocksSelected(absl::Span<const int> blocks) {
  for (int b : blocks) {
    if (impl_->ValidBlock(b)) impl_->selections[b]->Increment();
  }
}

void CoordinatorMetrics::OnBlockSteps(absl::Span<const int> blocks, int64_t steps) {
  if (steps <= 0) return;
  for (int b : blocks) {
    if (impl_->ValidBlock(b)) impl_->steps[b]->Increment(static_cast<double>(steps));
  }
}

void CoordinatorMetrics::SetBlockLoads(absl::Span<const double> loads) {
  const size_t n = std::min(loads.size(), impl_->share.size());
  absl::Span<const double> used = loads.subspan(0, n);
  double sum = 0;
  for (double x : used) sum += NonNegative(x);
  for (size_t b = 0; b < n; ++b) {
    impl_->share[b]->Set(sum > 0 ? NonNegative(used[b]) / sum : 0.0);
  }
  impl_->jain->Set(JainIndex(used));
  impl_->max_mean->Set(MaxMeanRatio(used));
}

void CoordinatorMetrics::SetBalance(double jain, double max_mean, double equilibrium_gap) {
  impl_->jain->Set(jain);
  impl_->max_mean->Set(max_mean);
  impl_->gap->Set(equilibrium_gap);
}

void CoordinatorMetrics::OnBalanceWindow(int requests, double gap, double gap_toll_free,
                                         double worker_jain, double worker_max_mean) {
  (requests > 1 ? impl_->windows_many : impl_->windows_one)->Increment();
  impl_->gap->Set(requests > 1 ? NonNegative(gap) : 0.0);
  impl_->gap_toll_free->Set(NonNegative(gap_toll_free));
  impl_->worker_jain->Set(worker_jain);
  impl_->worker_max_mean->Set(worker_max_mean);
}

void CoordinatorMetrics::SetTolls(absl::Span<const double> tolls) {
  const size_t n = std::min(tolls.size(), impl_->tolls.size());
  for (size_t b = 0; b < n; ++b) impl_->tolls[b]->Set(tolls[b]);
}

void CoordinatorMetrics::SetBlockReplicas(int block, int replicas) {
  if (impl_->ValidBlock(block)) impl_->replicas[block]->Set(replicas);
}

void CoordinatorMetrics::OnWorkerStep(absl::string_view worker, double seconds,
                                      absl::StatusCode code) {
  if (code != absl::StatusCode::kOk) {
    absl::string_view label = impl_->workers.contains(worker) ? worker : "other";
    Counter* c = AddOrNull(impl_->worker_errors,
                           {{"worker", std::string(label)}, {"code", StatusCodeLabel(code)}});
    if (c) c->Increment();
    return;
  }
  Impl::WorkerSeries w = impl_->Worker(worker);
  if (w.steps) w.steps->Increment();
  if (w.latency) w.latency->Observe(NonNegative(seconds));
}

void CoordinatorMetrics::SetWorkerUp(absl::string_view worker, bool up) {
  Impl::WorkerSeries w = impl_->Worker(worker);
  if (w.up) w.up->Set(up ? 1 : 0);
}

void CoordinatorMetrics::SetReady(bool ready) { impl_->ready->Set(ready ? 1 : 0); }

void CoordinatorMetrics::OnBatchStep(int sequences, int64_t tokens) {
  impl_->batch_sequences->Observe(NonNegative(sequences));
  impl_->batch_tokens->Observe(NonNegative(static_cast<double>(tokens)));
}

void CoordinatorMetrics::OnQueued(double seconds) {
  impl_->queue_time->Observe(NonNegative(seconds));
}

void CoordinatorMetrics::OnFailover(absl::string_view reason, absl::string_view worker) {
  const bool known =
      reason == "error" || reason == "deadline" || reason == "drain" || reason == "down";
  impl_->failovers
      ->Add({{"worker",
              std::string(impl_->workers.count(worker) > 0 ? worker : absl::string_view("other"))},
             {"reason", std::string(known ? reason : "error")}})
      .Increment();
}

void CoordinatorMetrics::OnReplay(int64_t positions, int64_t bytes, double seconds) {
  impl_->replayed_positions->Increment(NonNegative(static_cast<double>(positions)));
  impl_->replayed_bytes->Increment(NonNegative(static_cast<double>(bytes)));
  impl_->replay_time->Observe(NonNegative(seconds));
}

void CoordinatorMetrics::SetReplayHistoryBytes(int64_t bytes) {
  impl_->replay_history->Set(NonNegative(static_cast<double>(bytes)));
}

void CoordinatorMetrics::SetSchedulerState(int running, int waiting) {
  impl_->running->Set(NonNegative(running));
  impl_->waiting->Set(NonNegative(waiting));
}

void CoordinatorMetrics::OnWorkerBusy(absl::string_view worker, double seconds) {
  Impl::WorkerSeries w = impl_->Worker(worker);
  if (w.busy && seconds > 0) w.busy->Increment(seconds);
}

}  // namespace swarm::common
