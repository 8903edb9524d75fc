#include "common/flags.h"

#include <cmath>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/byte_size.h"

namespace swarm {

absl::StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args,
                                   const std::set<std::string>& value_flags,
                                   const std::set<std::string>& bool_flags) {
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
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
    if (!value_flags.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
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

absl::StatusOr<Flags> Flags::Parse(int argc, char** argv, const std::set<std::string>& value_flags,
                                   const std::set<std::string>& bool_flags) {
  return Parse(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc), value_flags,
               bool_flags);
}

bool Flags::Has(const std::string& name) const {
  return values_.count(name) > 0 || bools_.count(name) > 0;
}

bool Flags::Bool(const std::string& name) const { return bools_.count(name) > 0; }

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

absl::StatusOr<int64_t> Flags::Int(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", it->second, "' is not an integer"));
  }
  return v;
}

absl::StatusOr<double> Flags::Double(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  double v;
  if (!absl::SimpleAtod(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", it->second, "' is not a number"));
  }
  return v;
}

absl::StatusOr<int64_t> Flags::Bytes(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  auto v = ParseByteSize(it->second);
  if (!v.ok())
    return absl::InvalidArgumentError(absl::StrCat("flag --", name, ": ", v.status().message()));
  return *v;
}

absl::StatusOr<absl::Duration> Flags::Duration(const std::string& name,
                                               absl::Duration fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  absl::Duration d;
  double seconds;
  if (absl::SimpleAtod(it->second, &seconds)) return absl::Seconds(seconds);
  if (!absl::ParseDuration(it->second, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", it->second, "' is not a duration (e.g. 30s, 5m)"));
  }
  return d;
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

}  // namespace swarm
