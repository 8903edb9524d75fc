#include "common/flags.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/byte_size.h"

namespace swarm {

namespace {

// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

absl::Status UnknownFlag(const std::string& name, const std::set<std::string>& value_flags,
                         const std::set<std::string>& bool_flags, bool accept_help) {
  std::vector<std::string> names(value_flags.begin(), value_flags.end());
  names.insert(names.end(), bool_flags.begin(), bool_flags.end());
  if (accept_help) names.push_back("help");
  const std::string nearest = NearestFlag(name, names);
  return absl::InvalidArgumentError(
      nearest.empty() ? absl::StrCat("unknown flag --", name)
                      : absl::StrCat("unknown flag --", name, "; did you mean --", nearest, "?"));
}

}  // namespace

std::string NearestFlag(const std::string& unknown, const std::vector<std::string>& names) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const std::string& name : names) {
    const size_t d = EditDistance(unknown, name);
    if (d < best_distance) {
      best_distance = d;
      best = name;
    }
  }
  if (!best.empty() && best_distance <= 2 && 2 * best_distance < unknown.size()) return best;
  // "--max-new" for "--max-new-tokens": a prefix of exactly one declared name.
  std::string prefixed;
  if (unknown.size() >= 3) {
    for (const std::string& name : names) {
      if (!absl::StartsWith(name, unknown)) continue;
      if (!prefixed.empty()) return "";
      prefixed = name;
    }
  }
  return prefixed;
}

absl::StatusOr<Flags> Flags::ParseDeclared(const std::vector<std::string>& args,
                                           const std::set<std::string>& value_flags,
                                           const std::set<std::string>& bool_flags,
                                           bool accept_help) {
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (accept_help && (arg == "--help" || arg == "-h")) {
      flags.help_ = true;
      continue;
    }
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name(arg);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool_flags.count(name)) {
      if (value.has_value() && *value != "true" && *value != "1") {
        if (*value == "false" || *value == "0") continue;
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " takes no value (got '", *value, "')"));
      }
      flags.bools_.insert(name);
      continue;
    }
    if (!value_flags.count(name)) return UnknownFlag(name, value_flags, bool_flags, accept_help);
    if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
      value = args[++i];
    }
    flags.values_[name] = *value;
    flags.all_values_[name].push_back(*value);
  }
  return flags;
}

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args,
                                   const std::set<std::string>& value_flags,
                                   const std::set<std::string>& bool_flags) {
  return ParseDeclared(args, value_flags, bool_flags, /*accept_help=*/false);
}

absl::StatusOr<Flags> Flags::Parse(int argc, char** argv, const std::set<std::string>& value_flags,
                                   const std::set<std::string>& bool_flags) {
  return Parse(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc), value_flags,
               bool_flags);
}

const std::string* Flags::Find(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return &it->second;
  if (auto it = defaults_.find(name); it != defaults_.end()) return &it->second;
  return nullptr;
}

bool Flags::Has(const std::string& name) const {
  return values_.count(name) > 0 || bools_.count(name) > 0;
}

bool Flags::Bool(const std::string& name) const { return bools_.count(name) > 0; }

std::string Flags::String(const std::string& name) const {
  const std::string* v = Find(name);
  return v == nullptr ? "" : *v;
}

std::vector<std::string> Flags::Strings(const std::string& name) const {
  auto it = all_values_.find(name);
  return it == all_values_.end() ? std::vector<std::string>() : it->second;
}

std::string Flags::String(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<std::string> Flags::Required(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("missing required flag --", name));
  }
  return it->second;
}

namespace {

absl::StatusOr<int64_t> ParseInt(const std::string& name, const std::string& text) {
  int64_t v;
  if (!absl::SimpleAtoi(text, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", text, "' is not an integer"));
  }
  return v;
}

absl::StatusOr<double> ParseDouble(const std::string& name, const std::string& text) {
  double v;
  if (!absl::SimpleAtod(text, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", text, "' is not a number"));
  }
  return v;
}

absl::StatusOr<int64_t> ParseBytes(const std::string& name, const std::string& text) {
  auto v = ParseByteSize(text);
  if (!v.ok())
    return absl::InvalidArgumentError(absl::StrCat("flag --", name, ": ", v.status().message()));
  return *v;
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& name, const std::string& text) {
  absl::Duration d;
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) return absl::Seconds(seconds);
  if (!absl::ParseDuration(text, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", text, "' is not a duration (e.g. 30s, 5m)"));
  }
  return d;
}

absl::Status Missing(const std::string& name) {
  return absl::InvalidArgumentError(absl::StrCat("missing required flag --", name));
}

}  // namespace

absl::StatusOr<int64_t> Flags::Int(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  return ParseInt(name, it->second);
}

absl::StatusOr<int64_t> Flags::Int(const std::string& name) const {
  const std::string* v = Find(name);
  if (v == nullptr) return Missing(name);
  return ParseInt(name, *v);
}

absl::StatusOr<double> Flags::Double(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  return ParseDouble(name, it->second);
}

absl::StatusOr<double> Flags::Double(const std::string& name) const {
  const std::string* v = Find(name);
  if (v == nullptr) return Missing(name);
  return ParseDouble(name, *v);
}

absl::StatusOr<int64_t> Flags::Bytes(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  return ParseBytes(name, it->second);
}

absl::StatusOr<int64_t> Flags::Bytes(const std::string& name) const {
  const std::string* v = Find(name);
  if (v == nullptr) return Missing(name);
  return ParseBytes(name, *v);
}

absl::StatusOr<absl::Duration> Flags::Duration(const std::string& name,
                                               absl::Duration fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  return ParseDurationFlag(name, it->second);
}

absl::StatusOr<absl::Duration> Flags::Duration(const std::string& name) const {
  const std::string* v = Find(name);
  if (v == nullptr) return Missing(name);
  return ParseDurationFlag(name, *v);
}

absl::StatusOr<std::vector<int64_t>> Flags::IntList(const std::string& name) const {
  std::vector<int64_t> out;
  auto it = values_.find(name);
  if (it == values_.end()) return out;
  for (absl::string_view part : absl::StrSplit(it->second, ',', absl::SkipWhitespace())) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, ": '", part, "' is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

FlagSet::FlagSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

FlagSet& FlagSet::Add(FlagSpec spec) {
  for (FlagSpec& f : flags_) {
    if (f.name == spec.name) {  // A later declaration replaces an earlier one (shared groups).
      f = std::move(spec);
      return *this;
    }
  }
  flags_.push_back(std::move(spec));
  return *this;
}

FlagSet& FlagSet::Value(const std::string& name, const std::string& value_name,
                        const std::string& default_value, const std::string& help) {
  return Add(FlagSpec{name, value_name.empty() ? "VALUE" : value_name, default_value, help, false});
}

FlagSet& FlagSet::Required(const std::string& name, const std::string& value_name,
                           const std::string& help) {
  return Add(FlagSpec{name, value_name.empty() ? "VALUE" : value_name, "", help, true});
}

FlagSet& FlagSet::Bool(const std::string& name, const std::string& help) {
  return Add(FlagSpec{name, "", "", help, false});
}

FlagSet& FlagSet::Note(const std::string& text) {
  notes_.push_back(text);
  return *this;
}

absl::StatusOr<Flags> FlagSet::Parse(const std::vector<std::string>& args) const {
  std::set<std::string> values, bools;
  for (const FlagSpec& f : flags_) (f.value_name.empty() ? bools : values).insert(f.name);
  absl::StatusOr<Flags> flags = Flags::ParseDeclared(args, values, bools, /*accept_help=*/true);
  if (!flags.ok()) {
    // `--help` anywhere wins over a mistake elsewhere on the line.
    for (const std::string& a : args) {
      if (a == "--help" || a == "-h") {
        Flags help;
        help.help_ = true;
        return help;
      }
    }
    return flags;
  }
  for (const FlagSpec& f : flags_) {
    if (!f.value_name.empty() && !f.default_value.empty()) {
      flags->defaults_[f.name] = f.default_value;
    }
  }
  return flags;
}

absl::StatusOr<Flags> FlagSet::Parse(int argc, char** argv) const {
  return Parse(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc));
}

std::string FlagSet::Help() const {
  std::string usage = absl::StrCat("usage: ", program_);
  for (const FlagSpec& f : flags_) {
    if (f.required) absl::StrAppend(&usage, " --", f.name, " ", f.value_name);
  }
  absl::StrAppend(&usage, " [flags]\n");
  if (!summary_.empty()) absl::StrAppend(&usage, "\n", summary_, "\n");
  absl::StrAppend(&usage, "\nflags:\n");
  std::vector<std::pair<std::string, std::string>> rows;
  size_t width = 0;
  for (const FlagSpec& f : flags_) {
    std::string left = absl::StrCat("--", f.name);
    if (!f.value_name.empty()) absl::StrAppend(&left, " ", f.value_name);
    std::string right = f.help;
    if (f.required) {
      absl::StrAppend(&right, " (required)");
    } else if (!f.default_value.empty()) {
      absl::StrAppend(&right, " (default: ", f.default_value, ")");
    }
    width = std::max(width, left.size());
    rows.emplace_back(std::move(left), std::move(right));
  }
  rows.emplace_back("--help", "print this help");
  width = std::min<size_t>(std::max<size_t>(width, 6), 28);
  for (const auto& [left, right] : rows) {
    if (left.size() > width) {
      absl::StrAppend(&usage, "  ", left, "\n  ", std::string(width, ' '), "  ", right, "\n");
    } else {
      absl::StrAppend(&usage, "  ", left, std::string(width - left.size(), ' '), "  ", right, "\n");
    }
  }
  if (!notes_.empty()) {
    absl::StrAppend(&usage, "\n");
    for (const std::string& n : notes_) absl::StrAppend(&usage, n, "\n");
  }
  return usage;
}

}  // namespace swarm
