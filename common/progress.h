// Progress of one long operation (loading a worker's layers, calibrate, eval, synth), reported on
// stderr: on a terminal a bar redrawn in place,
//   loading layers [##########..........] 12/24 layers  3.1 layers/s  ETA 4s
// and otherwise (a log file, a pipe, a container's log) one plain line at most every `interval`,
//   loading layers: 12/24 layers (50%), 3.1 layers/s, ETA 4s
// then a last line when it finishes ("loading layers: 24/24 layers in 7.7s (3.1 layers/s)").
// Torch-free. Thread-safe: Add/Set may be called from several threads.
#ifndef SWARM_COMMON_PROGRESS_H_
#define SWARM_COMMON_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace swarm {

class Progress {
 public:
  struct Options {
    std::string label;  // "loading layers"
    int64_t total = 0;  // Units of work; 0 = unknown (no bar, no ETA).
    std::string unit;   // "layers", "prompts"; after the counts.
    // Where the text goes; default: stderr (flushed at every write).
    std::function<void(absl::string_view)> write;
    // Whether to draw the terminal form; default: isatty(stderr) and TERM is not "dumb".
    std::optional<bool> terminal;
    absl::Duration interval = absl::Seconds(5);       // Between plain lines.
    absl::Duration redraw = absl::Milliseconds(100);  // Between redraws of the bar.
    std::function<absl::Time()> clock;                // Default: absl::Now (tests fix it).
  };

  explicit Progress(Options options);
  // The defaults with a label, a total and a unit.
  Progress(std::string label, int64_t total, std::string unit);
  ~Progress();  // Finish() if not yet called.
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `n` more units done; `done` units done in all.
  void Add(int64_t n = 1);
  void Set(int64_t done);
  // Writes the last line (idempotent).
  void Finish();

  // The text of one report at `done` after `elapsed` (exposed for tests): the bar line without
  // "\r" or the plain line without "\n".
  static std::string BarLine(const Options& options, int64_t done, absl::Duration elapsed);
  static std::string PlainLine(const Options& options, int64_t done, absl::Duration elapsed);

 private:
  void Report(bool final) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time Now() const;

  Options options_;
  bool terminal_ = false;
  absl::Mutex mu_;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time start_;
  absl::Time last_report_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// A Progress started at the first report, for callbacks that learn the total as they go
// (`options.progress = [&](int done, int total) { lazy.Report(done, total); }`); finishes when
// done reaches the total, or at Finish()/destruction. Thread-safe as Progress is once started;
// the first Report must not race another.
class LazyProgress {
 public:
  // `options` as for Progress; its total is the first Report's.
  explicit LazyProgress(Progress::Options options);
  LazyProgress(std::string label, std::string unit);
  void Report(int64_t done, int64_t total);
  void Finish();

 private:
  Progress::Options options_;
  std::unique_ptr<Progress> progress_;
};

}  // namespace swarm

#endif  // SWARM_COMMON_PROGRESS_H_
