#include "common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace swarm {

namespace {

constexpr int kBarWidth = 24;

bool StderrIsTerminal() {
  const char* term = std::getenv("TERM");
  return isatty(STDERR_FILENO) == 1 && (term == nullptr || std::strcmp(term, "dumb") != 0);
}

// "4s", "2m05s", "1h02m".
std::string ShortDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string Rate(double per_second, const std::string& unit) {
  const std::string u = unit.empty() ? "" : absl::StrCat(" ", unit);
  return per_second >= 10 ? absl::StrFormat("%.0f%s/s", per_second, u)
                          : absl::StrFormat("%.1f%s/s", per_second, u);
}

std::string Counts(int64_t done, int64_t total, const std::string& unit) {
  std::string out = total > 0 ? absl::StrCat(done, "/", total) : absl::StrCat(done);
  if (!unit.empty()) absl::StrAppend(&out, " ", unit);
  return out;
}

}  // namespace

Progress::Progress(Options options) : options_(std::move(options)) {
  terminal_ = options_.terminal.has_value() ? *options_.terminal : StderrIsTerminal();
  if (!options_.write) {
    options_.write = [](absl::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stderr);
      std::fflush(stderr);
    };
  }
  start_ = Now();
  absl::MutexLock lock(&mu_);
  last_report_ = start_;
  if (terminal_) Report(false);  // The empty bar at once, so the user sees something start.
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : Progress([&] {
        Options o;
        o.label = std::move(label);
        o.total = total;
        o.unit = std::move(unit);
        return o;
      }()) {}

Progress::~Progress() { Finish(); }

absl::Time Progress::Now() const { return options_.clock ? options_.clock() : absl::Now(); }

void Progress::Add(int64_t n) {
  absl::MutexLock lock(&mu_);
  done_ += n;
  Report(false);
}

void Progress::Set(int64_t done) {
  absl::MutexLock lock(&mu_);
  done_ = done;
  Report(false);
}

void Progress::Finish() {
  absl::MutexLock lock(&mu_);
  if (finished_) return;
  Report(true);
  finished_ = true;
}

std::string Progress::BarLine(const Options& o, int64_t done, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  std::string line = o.label;
  if (o.total > 0) {
    const int64_t clamped = std::clamp<int64_t>(done, 0, o.total);
    const int filled = static_cast<int>(clamped * kBarWidth / o.total);
    absl::StrAppend(&line, " [", std::string(filled, '#'), std::string(kBarWidth - filled, '.'),
                    "]");
  }
  absl::StrAppend(&line, " ", Counts(done, o.total, o.unit));
  if (seconds > 0 && done > 0) {
    const double rate = done / seconds;
    absl::StrAppend(&line, "  ", Rate(rate, o.unit));
    if (o.total > 0 && done < o.total) {
      absl::StrAppend(&line, "  ETA ", ShortDuration((o.total - done) / rate));
    }
  }
  return line;
}

std::string Progress::PlainLine(const Options& o, int64_t done, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  std::string line = absl::StrCat(o.label, ": ", Counts(done, o.total, o.unit));
  if (o.total > 0) {
    absl::StrAppend(&line, absl::StrFormat(" (%.0f%%)", 100.0 * done / o.total));
  }
  if (seconds > 0 && done > 0) {
    const double rate = done / seconds;
    absl::StrAppend(&line, ", ", Rate(rate, o.unit));
    if (o.total > 0 && done < o.total) {
      absl::StrAppend(&line, ", ETA ", ShortDuration((o.total - done) / rate));
    }
  }
  return line;
}

void Progress::Report(bool final) {
  if (finished_) return;
  const absl::Time now = Now();
  const absl::Duration elapsed = now - start_;
  if (final) {
    const double seconds = absl::ToDoubleSeconds(elapsed);
    std::string line =
        absl::StrCat(options_.label, ": ", Counts(done_, options_.total, options_.unit), " in ",
                     absl::StrFormat("%.1fs", seconds));
    if (seconds > 0 && done_ > 0)
      absl::StrAppend(&line, " (", Rate(done_ / seconds, options_.unit), ")");
    // On a terminal the finished bar stays; the summary goes on its own line.
    if (terminal_) {
      options_.write(absl::StrCat("\r", BarLine(options_, done_, elapsed), "\x1b[K\n"));
    }
    options_.write(absl::StrCat(line, "\n"));
    return;
  }
  if (terminal_) {
    if (now - last_report_ < options_.redraw && done_ != 0) return;
    last_report_ = now;
    options_.write(absl::StrCat("\r", BarLine(options_, done_, elapsed), "\x1b[K"));
    return;
  }
  if (now - last_report_ < options_.interval) return;
  last_report_ = now;
  options_.write(absl::StrCat(PlainLine(options_, done_, elapsed), "\n"));
}

LazyProgress::LazyProgress(Progress::Options options) : options_(std::move(options)) {}

LazyProgress::LazyProgress(std::string label, std::string unit) {
  options_.label = std::move(label);
  options_.unit = std::move(unit);
}

void LazyProgress::Report(int64_t done, int64_t total) {
  if (progress_ == nullptr) {
    Progress::Options o = options_;
    o.total = total;
    progress_ = std::make_unique<Progress>(std::move(o));
  }
  progress_->Set(done);
  if (total > 0 && done >= total) progress_->Finish();
}

void LazyProgress::Finish() {
  if (progress_ != nullptr) progress_->Finish();
}

}  // namespace swarm
