// Command-line flags for every Swarm binary (the `swarm` CLI and the two servers): `--name value`,
// `--name=value` and boolean `--flag`, every flag declared up front, no positional arguments, and
// typed readers whose errors name the flag.
// A parsed Flags is an immutable value; parse once at start-up.
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

  bool Has(const std::string& name) const;
  bool Bool(const std::string& name) const;  // True when the boolean flag was given.
  // Every value of a flag given more than once, in order (empty when absent); the readers
  // below see the last one.
  std::vector<std::string> Strings(const std::string& name) const;
  // The value, or `fallback` when absent.
  std::string String(const std::string& name, const std::string& fallback = "") const;
  // The value, or InvalidArgument naming the missing flag.
  absl::StatusOr<std::string> Required(const std::string& name) const;
  // Parsed values, or `fallback` when absent; InvalidArgument naming the flag and the text when
  // malformed.
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> Double(const std::string& name, double fallback) const;
  // common/byte_size.h syntax.
  absl::StatusOr<int64_t> Bytes(const std::string& name, int64_t fallback) const;
  // absl duration syntax ("30s", "5m", "1h30m") or plain seconds.
  absl::StatusOr<absl::Duration> Duration(const std::string& name, absl::Duration fallback) const;
  // "1,2,3" → {1,2,3} (empty when absent); InvalidArgument when an element is not an integer.
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& name) const;

 private:
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_values_;
  std::set<std::string> bools_;
};

}  // namespace swarm

#endif  // SWARM_COMMON_FLAGS_H_
