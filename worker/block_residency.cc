#include "worker/block_residency.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/byte_size.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "common/tensor_rows.h"

namespace swarm::worker {

absl::StatusOr<std::unique_ptr<ResidentLayerHost>> ResidentLayerHost::Create(
    std::shared_ptr<const model::Checkpoint> checkpoint, std::vector<int> layers,
    const model::LoadOptions& options, int block_layers, int64_t budget_bytes,
    ResidencyListener listener) {
  if (budget_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--memory-budget: ", budget_bytes, " bytes is not positive"));
  }
  if (block_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--block-layers: ", block_layers, " is not positive"));
  }
  if (layers.empty()) return absl::InvalidArgumentError("no layers to host");
  auto host = std::unique_ptr<ResidentLayerHost>(new ResidentLayerHost());
  host->checkpoint_ = checkpoint;
  host->options_ = options;
  host->layers_ = layers;
  host->budget_ = budget_bytes;
  host->listener_ = std::move(listener);
  host->layer_unit_.assign(checkpoint->config().num_layers, -1);
  for (size_t i = 0; i < layers.size(); ++i) {
    const int l = layers[i];
    if (l < 0 || l >= checkpoint->config().num_layers || (i > 0 && l <= layers[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("layers [", absl::StrJoin(layers, ","),
                                                     "]: must be sorted, unique and below ",
                                                     checkpoint->config().num_layers));
    }
    auto& units = host->unit_layers_;
    if (units.empty() || layers[i - 1] != l - 1 ||
        static_cast<int>(units.back().size()) >= block_layers) {
      units.emplace_back();
    }
    units.back().push_back(l);
    host->layer_unit_[l] = static_cast<int>(units.size()) - 1;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<model::LayerHost> maker,
                   model::LayerHost::Create(checkpoint, {}, options));
  host->cache_maker_ = std::move(maker);

  // Load every unit once to learn its size on the device; keep those that fit, in order.
  absl::MutexLock lock(&host->mu_);
  host->table_.resize(host->unit_layers_.size());
  for (size_t u = 0; u < host->unit_layers_.size(); ++u) {
    Unit& unit = host->table_[u];
    unit.layers = host->unit_layers_[u];
    ASSIGN_OR_RETURN(std::unique_ptr<model::LayerHost> loaded,
                     model::LayerHost::Create(checkpoint, unit.layers, options));
    unit.bytes = loaded->WeightBytes();
    host->kv_bytes_per_token_ += loaded->KvBytesPerToken();
    host->total_bytes_ += unit.bytes;
    if (unit.bytes > budget_bytes) {
      // Users size units with --block-layers, so the message calls a unit a block.
      return absl::InvalidArgumentError(
          absl::StrCat("--memory-budget ", budget_bytes, " bytes (", FormatBytes(budget_bytes),
                       ") is smaller than block ", u, " (layers ", absl::StrJoin(unit.layers, ","),
                       ") of ", unit.bytes, " bytes (", FormatBytes(unit.bytes),
                       "); raise the budget or lower --block-layers"));
    }
    if (host->resident_ + unit.bytes <= budget_bytes) {
      host->resident_ += unit.bytes;
      unit.host = std::move(loaded);
      unit.last_use = ++host->clock_;
      ++host->stats_.units_resident;
    }
  }
  host->stats_.units = static_cast<int>(host->table_.size());
  host->stats_.budget_bytes = budget_bytes;
  host->stats_.max_resident_bytes = host->resident_;
  return host;
}

ResidentLayerHost::~ResidentLayerHost() = default;

bool ResidentLayerHost::Hosts(int layer) const {
  return layer >= 0 && layer < static_cast<int>(layer_unit_.size()) && layer_unit_[layer] >= 0;
}

int ResidentLayerHost::UnitOf(int layer) const { return Hosts(layer) ? layer_unit_[layer] : -1; }

std::unique_ptr<model::KvCache> ResidentLayerHost::NewCache(int64_t capacity) const {
  return cache_maker_->NewCache(capacity);
}

absl::StatusOr<std::shared_ptr<const model::LayerHost>> ResidentLayerHost::Acquire(
    int u, bool pin, bool* loaded_here) const {
  if (loaded_here != nullptr) *loaded_here = false;
  std::vector<std::shared_ptr<const model::LayerHost>> evicted;  // Destroyed outside the lock.
  int evictions = 0;
  mu_.Lock();
  for (;;) {
    Unit& unit = table_[u];
    if (unit.loading) {
      changed_.Wait(&mu_);
      continue;
    }
    if (unit.host != nullptr) {
      ++stats_.hits_total;
      unit.last_use = ++clock_;
      if (pin) ++unit.pins;
      std::shared_ptr<const model::LayerHost> host = unit.host;
      mu_.Unlock();
      if (listener_.on_hit) listener_.on_hit();
      return host;
    }
    // Make room: evict least recently used unpinned units; wait while every candidate is pinned
    // or loading (a pin is held for one unit's compute only, so the wait ends).
    bool waited = false;
    while (resident_ + unit.bytes > budget_) {
      int lru = -1;
      for (size_t i = 0; i < table_.size(); ++i) {
        const Unit& c = table_[i];
        if (c.host == nullptr || c.pins > 0 || c.loading) continue;
        if (lru < 0 || c.last_use < table_[lru].last_use) lru = static_cast<int>(i);
      }
      if (lru < 0) {
        changed_.Wait(&mu_);
        waited = true;
        break;
      }
      resident_ -= table_[lru].bytes;
      evicted.push_back(std::move(table_[lru].host));
      ++stats_.evictions_total;
      --stats_.units_resident;
      ++evictions;
    }
    if (waited) continue;  // The table changed: look at unit `u` again.
    break;
  }
  Unit& unit = table_[u];
  unit.loading = true;
  resident_ += unit.bytes;
  stats_.max_resident_bytes = std::max(stats_.max_resident_bytes, resident_);
  ++stats_.units_resident;
  ++stats_.loads_total;
  const std::vector<int> layers = unit.layers;
  mu_.Unlock();

  evicted.clear();
  for (int i = 0; i < evictions; ++i) {
    if (listener_.on_evict) listener_.on_evict();
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<model::LayerHost>> loaded =
      model::LayerHost::Create(checkpoint_, layers, options_);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  std::shared_ptr<const model::LayerHost> host;
  int resident_units = 0;
  int64_t resident_bytes = 0;
  {
    absl::MutexLock lock(&mu_);
    Unit& done = table_[u];
    done.loading = false;
    if (loaded.ok()) {
      done.host = *std::move(loaded);
      done.last_use = ++clock_;
      if (pin) ++done.pins;
      host = done.host;
    } else {
      resident_ -= done.bytes;
      --stats_.units_resident;
    }
    resident_units = stats_.units_resident;
    resident_bytes = resident_;
    changed_.SignalAll();
  }
  if (!loaded.ok()) {
    return Annotate(loaded.status(),
                    absl::StrCat("loading layers ", absl::StrJoin(layers, ","), " on demand"));
  }
  if (loaded_here != nullptr) *loaded_here = true;
  if (listener_.on_load) listener_.on_load(seconds);
  if (listener_.on_resident) listener_.on_resident(resident_units, resident_bytes);
  return host;
}

void ResidentLayerHost::Unpin(int u) const {
  absl::MutexLock lock(&mu_);
  --table_[u].pins;
  changed_.SignalAll();
}

absl::StatusOr<HostTensor> ResidentLayerHost::Forward(const HostTensor& h, int64_t start_pos,
                                                      absl::Span<const int> layers,
                                                      model::KvCache* cache) const {
  for (int l : layers) {
    if (!Hosts(l)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " is not hosted here"));
    }
  }
  HostTensor cur;
  const HostTensor* in = &h;
  size_t i = 0;
  while (i < layers.size()) {
    const int u = UnitOf(layers[i]);
    size_t j = i;
    while (j < layers.size() && UnitOf(layers[j]) == u) ++j;
    ASSIGN_OR_RETURN(std::shared_ptr<const model::LayerHost> host, Acquire(u, /*pin=*/true));
    absl::StatusOr<HostTensor> out = host->Forward(*in, start_pos, layers.subspan(i, j - i), cache);
    Unpin(u);
    if (!out.ok()) return out.status();
    cur = *std::move(out);
    in = &cur;
    i = j;
  }
  return cur;
}

absl::StatusOr<model::BatchOutput> ResidentLayerHost::ForwardBatch(
    const HostTensor& h, absl::Span<const model::BatchSequence> sequences,
    absl::Span<const int> layers) const {
  for (int l : layers) {
    if (!Hosts(l)) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " is not hosted here"));
    }
  }
  if (layers.empty()) return absl::InvalidArgumentError("a batch with no layers to run");
  // The first unit's host checks the rest of the call (h, rows, caches); it must see it.
  if (sequences.empty()) return absl::InvalidArgumentError("a batch with no sequences");
  model::BatchOutput result;
  result.status.assign(sequences.size(), absl::OkStatus());
  // `cur` holds the rows of the sequences still running (`live`, in order) after each unit.
  std::vector<size_t> live(sequences.size());
  for (size_t k = 0; k < live.size(); ++k) live[k] = k;
  std::vector<int64_t> first_row(sequences.size());
  int64_t rows = 0;
  for (size_t k = 0; k < sequences.size(); ++k) {
    first_row[k] = rows;
    rows += sequences[k].rows;
  }
  HostTensor cur;
  const HostTensor* in = &h;
  size_t i = 0;
  while (i < layers.size() && !live.empty()) {
    const int u = UnitOf(layers[i]);
    size_t j = i;
    while (j < layers.size() && UnitOf(layers[j]) == u) ++j;
    std::vector<model::BatchSequence> running;
    running.reserve(live.size());
    for (size_t k : live) running.push_back(sequences[k]);
    ASSIGN_OR_RETURN(std::shared_ptr<const model::LayerHost> host, Acquire(u, /*pin=*/true));
    absl::StatusOr<model::BatchOutput> out =
        host->ForwardBatch(*in, running, layers.subspan(i, j - i));
    Unpin(u);
    // The whole call's checks passed in the first unit (the same rows and caches go to every
    // unit), so an error of the call here is an error of every sequence still running.
    if (!out.ok() || out->status.size() != live.size()) {
      const absl::Status s =
          out.ok() ? absl::InternalError("a unit answered the wrong number of statuses")
                   : out.status();
      if (i == 0) return s;
      for (size_t k : live) result.status[k] = s;
      live.clear();
      break;
    }
    std::vector<size_t> still;
    std::vector<size_t> failed_at;  // Indices into `live` of sequences failed in this unit.
    for (size_t m = 0; m < live.size(); ++m) {
      if (out->status[m].ok()) {
        still.push_back(live[m]);
      } else {
        result.status[live[m]] = out->status[m];
        failed_at.push_back(m);
      }
    }
    if (failed_at.empty()) {
      cur = std::move(out->hidden);
    } else {
      // Keep only the rows of the sequences still running.
      int64_t keep = 0;
      for (size_t k : still) keep += sequences[k].rows;
      HostTensor next = ZeroRows(h.dtype, keep, config().hidden_size);
      int64_t from = 0, to = 0;
      for (size_t m = 0, f = 0; m < live.size(); ++m) {
        const int64_t r = sequences[live[m]].rows;
        if (f < failed_at.size() && failed_at[f] == m) {
          ++f;
        } else {
          RETURN_IF_ERROR(CopyRows(out->hidden, from, r, &next, to));
          to += r;
        }
        from += r;
      }
      cur = std::move(next);
    }
    live = std::move(still);
    in = &cur;
    i = j;
  }
  if (live.size() == sequences.size()) {
    result.hidden = std::move(cur);
    return result;
  }
  result.hidden = ZeroRows(h.dtype, rows, config().hidden_size);
  int64_t from = 0;
  for (size_t k : live) {
    RETURN_IF_ERROR(CopyRows(cur, from, sequences[k].rows, &result.hidden, first_row[k]));
    from += sequences[k].rows;
  }
  return result;
}

absl::StatusOr<int> ResidentLayerHost::Prefetch(absl::Span<const int> layers) const {
  std::vector<int> units;
  for (int l : layers) {
    if (!Hosts(l)) {
      return absl::InvalidArgumentError(absl::StrCat("prefetch: layer ", l, " is not hosted here"));
    }
    const int u = UnitOf(l);
    if (std::find(units.begin(), units.end(), u) == units.end()) units.push_back(u);
  }
  int64_t bytes = 0;
  int loaded = 0;
  for (int u : units) {
    {
      absl::MutexLock lock(&mu_);
      bytes += table_[u].bytes;
    }
    if (bytes > budget_) break;  // Would evict a unit this prefetch just loaded.
    bool loaded_here = false;
    RETURN_IF_ERROR(Acquire(u, /*pin=*/false, &loaded_here).status());
    if (loaded_here) ++loaded;
  }
  return loaded;
}

ResidencyStats ResidentLayerHost::Stats() const {
  absl::MutexLock lock(&mu_);
  ResidencyStats s = stats_;
  s.resident_bytes = resident_;
  return s;
}

}  // namespace swarm::worker
