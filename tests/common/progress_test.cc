#include "common/progress.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace swarm {
namespace {

// A Progress writing into a string, on a clock the test moves.
struct Harness {
  std::string out;
  absl::Time now = absl::FromUnixSeconds(1000);
  Progress::Options Options(bool terminal) {
    Progress::Options o;
    o.label = "loading layers";
    o.total = 10;
    o.unit = "layers";
    o.terminal = terminal;
    o.write = [this](absl::string_view s) { out.append(s.data(), s.size()); };
    o.clock = [this] { return now; };
    return o;
  }
};

TEST(ProgressTest, PlainLinesArePeriodicWithCountsRateAndEta) {
  Harness h;
  {
    Progress p(h.Options(/*terminal=*/false));
    EXPECT_EQ(h.out, "");  // Nothing before the first interval.
    h.now += absl::Seconds(2);
    p.Add(2);
    EXPECT_EQ(h.out, "");  // Within the 5 s interval: quiet.
    h.now += absl::Seconds(3);
    p.Add(3);  // 5/10 after 5 s: 1 layer/s, 5 s to go.
    EXPECT_EQ(h.out, "loading layers: 5/10 layers (50%), 1.0 layers/s, ETA 5s\n");
    h.now += absl::Seconds(1);
    p.Add(1);
    EXPECT_EQ(h.out, "loading layers: 5/10 layers (50%), 1.0 layers/s, ETA 5s\n");
    h.now += absl::Seconds(4);
    p.Set(10);
  }  // The destructor finishes.
  std::vector<std::string> lines = absl::StrSplit(h.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << h.out;
  EXPECT_EQ(lines[1], "loading layers: 10/10 layers (100%), 1.0 layers/s");
  EXPECT_EQ(lines[2], "loading layers: 10/10 layers in 10.0s (1.0 layers/s)");
  EXPECT_EQ(h.out.find('\r'), std::string::npos);  // No terminal control in a log.
}

TEST(ProgressTest, TerminalBarIsRedrawnInPlace) {
  Harness h;
  Progress p(h.Options(/*terminal=*/true));
  // The empty bar is drawn at once.
  EXPECT_EQ(h.out, "\rloading layers [........................] 0/10 layers\x1b[K");
  h.out.clear();
  h.now += absl::Seconds(2);
  p.Add(5);  // 2.5 layers/s, 2 s to go.
  EXPECT_EQ(h.out,
            "\rloading layers [############............] 5/10 layers  2.5 layers/s  ETA 2s\x1b[K");
  h.out.clear();
  h.now += absl::Milliseconds(10);
  p.Add(1);  // Within the redraw period: not drawn.
  EXPECT_EQ(h.out, "");
  h.now += absl::Seconds(2) - absl::Milliseconds(10);
  p.Add(4);
  h.out.clear();
  p.Finish();
  EXPECT_EQ(h.out,
            "\rloading layers [########################] 10/10 layers  2.5 layers/s\x1b[K\n"
            "loading layers: 10/10 layers in 4.0s (2.5 layers/s)\n");
  h.out.clear();
  p.Finish();  // Idempotent.
  EXPECT_EQ(h.out, "");
}

TEST(ProgressTest, UnknownTotalHasNoBarOrEta) {
  Progress::Options o;
  o.label = "sampling";
  o.unit = "prompts";
  EXPECT_EQ(Progress::BarLine(o, 30, absl::Seconds(10)), "sampling 30 prompts  3.0 prompts/s");
  EXPECT_EQ(Progress::PlainLine(o, 30, absl::Seconds(10)), "sampling: 30 prompts, 3.0 prompts/s");
  o.total = 120;
  EXPECT_EQ(Progress::PlainLine(o, 30, absl::Seconds(10)),
            "sampling: 30/120 prompts (25%), 3.0 prompts/s, ETA 30s");
  EXPECT_EQ(Progress::PlainLine(o, 1, absl::Seconds(100)),
            "sampling: 1/120 prompts (1%), 0.0 prompts/s, ETA 3h18m");
}

TEST(LazyProgressTest, StartsAtTheFirstReportWithItsTotalAndFinishesThere) {
  Harness h;
  LazyProgress lazy(h.Options(/*terminal=*/false));
  lazy.Finish();  // Before any report: nothing started, nothing written.
  EXPECT_EQ(h.out, "");
  lazy.Report(1, 4);
  h.now += absl::Seconds(2);
  lazy.Report(4, 4);  // Reaching the total finishes it...
  EXPECT_EQ(h.out, "loading layers: 4/4 layers in 2.0s (2.0 layers/s)\n");
  lazy.Finish();  // ...once.
  EXPECT_EQ(h.out, "loading layers: 4/4 layers in 2.0s (2.0 layers/s)\n");
}

}  // namespace
}  // namespace swarm
