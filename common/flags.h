// Command-line flags for every Swarm binary (the `swarm` CLI and the two servers): `--name value`,
// `--name=value` and boolean `--flag`, every flag declared up front, no positional arguments, and
// typed readers whose errors name the flag.
//
// A command declares its flags once in a FlagSet — name, value placeholder, default and one line
// of meaning — and that one declaration drives parsing, the defaults the readers return and the
// `--help` text:
//
//   FlagSet f("swarm predict", "ask the router which blocks it would run for a prompt");
//   f.Required("server", "HOST:PORT", "the coordinator")
//       .Value("top-k-blocks", "K", "3", "blocks to choose")
//       .Bool("json", "print one JSON object");
//   ASSIGN_OR_RETURN(Flags flags, f.Parse(args));
//   if (flags.help()) { fputs(f.Help().c_str(), stdout); return 0; }
//   ASSIGN_OR_RETURN(int64_t k, flags.Int("top-k-blocks"));   // 3 when absent
//
// An unknown flag is refused with the nearest declared one ("unknown flag --modle; did you mean
// --model?"). The older Flags::Parse(args, value_flags, bool_flags) still works (no help text).
// A FlagSet is built once and then only read; a parsed Flags is an immutable value; parse once at
// start-up.
#ifndef SWARM_COMMON_FLAGS_H_
#define SWARM_COMMON_FLAGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace swarm {

class FlagSet;

class Flags {
 public:
  // `args` excludes the program (and subcommand) names. Every flag must be in `value_flags` or
  // `bool_flags`; anything else is InvalidArgument ("unknown flag --x"), and so is a positional
  // argument or a value flag without a value.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags);
  // The same over main()'s arguments (argv[0] skipped).
  static absl::StatusOr<Flags> Parse(int argc, char** argv,
                                     const std::set<std::string>& value_flags,
                                     const std::set<std::string>& bool_flags);

  // True when `--help` (or `-h`) was given to FlagSet::Parse: print FlagSet::Help() and exit 0.
  bool help() const { return help_; }

  // True when the flag was given on the command line (a declared default does not count).
  bool Has(const std::string& name) const;
  bool Bool(const std::string& name) const;  // True when the boolean flag was given.
  // The value, or `fallback` when absent. Without a fallback: the declared default (FlagSet), or
  // "" when there is none.
  std::string String(const std::string& name) const;
  std::string String(const std::string& name, const std::string& fallback) const;
  // Every value of a flag given more than once, in order (empty when absent); the readers
  // above and below see the last one.
  std::vector<std::string> Strings(const std::string& name) const;
  // The value, or InvalidArgument naming the missing flag.
  absl::StatusOr<std::string> Required(const std::string& name) const;
  // Parsed values, or `fallback` when absent; InvalidArgument naming the flag and the text when
  // malformed.
  // The overloads without a fallback parse the declared default when the flag is absent, and are
  // InvalidArgument ("missing required flag --x") when it has none.
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback) const;
  absl::StatusOr<int64_t> Int(const std::string& name) const;
  absl::StatusOr<double> Double(const std::string& name, double fallback) const;
  absl::StatusOr<double> Double(const std::string& name) const;
  // common/byte_size.h syntax.
  absl::StatusOr<int64_t> Bytes(const std::string& name, int64_t fallback) const;
  absl::StatusOr<int64_t> Bytes(const std::string& name) const;
  // absl duration syntax ("30s", "5m", "1h30m") or plain seconds.
  absl::StatusOr<absl::Duration> Duration(const std::string& name, absl::Duration fallback) const;
  absl::StatusOr<absl::Duration> Duration(const std::string& name) const;
  // "1,2,3" → {1,2,3} (empty when absent); InvalidArgument when an element is not an integer.
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& name) const;

 private:
  friend class FlagSet;
  // The one parser; `accept_help` makes --help/-h set help_ instead of being an unknown flag.
  static absl::StatusOr<Flags> ParseDeclared(const std::vector<std::string>& args,
                                             const std::set<std::string>& value_flags,
                                             const std::set<std::string>& bool_flags,
                                             bool accept_help);
  // The given value, else the declared default; nullptr when neither exists.
  const std::string* Find(const std::string& name) const;

  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_values_;
  std::set<std::string> bools_;
  std::map<std::string, std::string> defaults_;  // Declared defaults (FlagSet) of value flags.
  bool help_ = false;
};

// One declared flag.
struct FlagSpec {
  std::string name;           // Without the leading "--".
  std::string value_name;     // Placeholder in the help ("DIR", "N"); empty for a boolean flag.
  std::string default_value;  // What readers return when absent; empty: none.
  std::string help;           // One line of meaning.
  bool required = false;
};

// The declared flags of one command or server: parsing, defaults and the --help text.
class FlagSet {
 public:
  // `program` as the user types it ("swarm generate", "swarm-worker"); `summary`: one line on what
  // it does.
  FlagSet(std::string program, std::string summary);

  // A value flag with `default_value` ("" = no default; readers then need a fallback or Has()).
  FlagSet& Value(const std::string& name, const std::string& value_name,
                 const std::string& default_value, const std::string& help);
  // A value flag the command cannot run without (shown in the usage line; readers without a
  // fallback say "missing required flag --name").
  FlagSet& Required(const std::string& name, const std::string& value_name,
                    const std::string& help);
  // A boolean flag (off unless given; `--name=false` also accepted).
  FlagSet& Bool(const std::string& name, const std::string& help);
  // A line printed after the flags in --help (constraints between flags, an example).
  FlagSet& Note(const std::string& text);

  // Parses `args` (no program or subcommand name). Accepts `--help`/`-h` (Flags::help()). An
  // unknown flag, a positional argument, a value flag without a value, or a boolean flag with one
  // is InvalidArgument; an unknown flag's message names the nearest declared flag if one is close.
  absl::StatusOr<Flags> Parse(const std::vector<std::string>& args) const;
  absl::StatusOr<Flags> Parse(int argc, char** argv) const;  // argv[0] skipped.

  // "usage: PROGRAM --req VALUE ... [flags]", the summary, then one line per flag with its
  // placeholder, meaning and default, and the notes.
  std::string Help() const;

  const std::string& program() const { return program_; }
  const std::string& summary() const { return summary_; }
  const std::vector<FlagSpec>& flags() const { return flags_; }

 private:
  FlagSet& Add(FlagSpec spec);

  std::string program_;
  std::string summary_;
  std::vector<FlagSpec> flags_;
  std::vector<std::string> notes_;
};

// The declared name nearest to `unknown` (edit distance with transpositions, at most 2 and less
// than half its length, or the only name `unknown` is a prefix of), or "" when none is close.
std::string NearestFlag(const std::string& unknown, const std::vector<std::string>& names);

}  // namespace swarm

#endif  // SWARM_COMMON_FLAGS_H_
