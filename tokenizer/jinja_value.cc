// jinja::Value: construction, Python semantics (truthiness, ==, str(), repr()) and the JSON
// bridges (nlohmann JSON in; Python json.dumps out, as transformers' tojson filter writes it).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "tokenizer/jinja.h"
#include "tokenizer/jinja_internal.h"
#include "tokenizer/tokenizer_internal.h"
#include "utf8proc.h"

namespace swarm::tokenizer::jinja {

namespace {

const std::string& EmptyString() {
  static const auto* empty = new std::string();
  return *empty;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Text helpers.

bool IsPySpace(char32_t cp) {
  return (cp >= 0x1C && cp <= 0x1F) || internal::IsUnicodeWhitespace(cp);
}

std::vector<char32_t> CodePoints(absl::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) out.push_back(internal::NextCodePoint(s, &pos));
  return out;
}

std::string FromCodePoints(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end && i < cps.size(); ++i) internal::AppendUtf8(cps[i], &out);
  return out;
}

size_t CodePointCount(absl::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

namespace {

// Python's str.isprintable() for one code point (categories Cc Cf Cs Co Cn Zl Zp Zs are not
// printable, except the ASCII space).
bool IsPyPrintable(char32_t cp) {
  if (cp == ' ') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

}  // namespace

std::string PyStrRepr(absl::string_view s) {
  const bool has_single = s.find('\'') != absl::string_view::npos;
  const bool has_double = s.find('"') != absl::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  size_t pos = 0;
  while (pos < s.size()) {
    const char c = s[pos];
    if (c >= 0x20 && c < 0x7F && c != quote && c != '\\') {  // The common case.
      out += c;
      ++pos;
      continue;
    }
    const char32_t cp = internal::NextCodePoint(s, &pos);
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || cp == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned>(cp));
    } else if (cp < 0x7F || IsPyPrintable(cp)) {
      internal::AppendUtf8(cp, &out);
    } else if (cp <= 0xFF) {
      absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned>(cp));
    } else if (cp <= 0xFFFF) {
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned>(cp));
    } else {
      absl::StrAppendFormat(&out, "\\U%08x", static_cast<unsigned>(cp));
    }
  }
  out += quote;
  return out;
}

std::string PyFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // The shortest digits that read back as `d` (Python's repr), then Python's layout: fixed for
  // decimal exponents -4 <= e < 16, scientific otherwise.
  char buf[64];
  for (int precision = 0; precision < 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*e", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string sci(buf);
  const size_t e_pos = sci.find('e');
  const int exponent = std::atoi(sci.c_str() + e_pos + 1);
  std::string mantissa = sci.substr(0, e_pos);
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = negative ? "-" : "";
  if (exponent >= -5 + 1 && exponent < 16) {
    if (exponent < 0) {
      out += "0.";
      out.append(static_cast<size_t>(-exponent - 1), '0');
      out += digits;
    } else {
      const size_t int_digits = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= int_digits) {
        out += digits;
        out.append(int_digits - digits.size(), '0');
        out += ".0";
      } else {
        out += digits.substr(0, int_digits);
        out += '.';
        out += digits.substr(int_digits);
      }
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    absl::StrAppendFormat(&out, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Construction and access.

Value::Value(std::string s)
    : kind_(Kind::kString), str_(std::make_shared<const std::string>(std::move(s))) {}

Value Value::Undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.str_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::List(std::vector<Value> items, bool tuple) {
  Value v;
  v.kind_ = Kind::kList;
  int depth = 0;
  bool has_ns = false;
  for (const Value& item : items) {
    depth = std::max(depth, item.depth_);
    has_ns = has_ns || item.has_ns_;
  }
  v.depth_ = depth + 1;
  v.has_ns_ = has_ns;
  auto data = std::make_shared<ListData>();
  data->items = std::move(items);
  data->tuple = tuple;
  v.list_ = std::move(data);
  return v;
}

Value Value::Dict(std::vector<std::pair<Value, Value>> items) {
  Value v;
  v.kind_ = Kind::kDict;
  auto data = std::make_shared<DictData>();
  int depth = 0;
  bool has_ns = false;
  data->items.reserve(items.size());
  for (auto& [key, value] : items) {
    depth = std::max({depth, key.depth_, value.depth_});
    has_ns = has_ns || key.has_ns_ || value.has_ns_;
    size_t existing = data->items.size();
    if (key.is_string()) {
      auto [it, inserted] = data->string_index.emplace(key.str(), data->items.size());
      existing = inserted ? data->items.size() : it->second;
    } else {
      for (size_t i = 0; i < data->items.size(); ++i) {
        if (data->items[i].first.Equals(key)) {
          existing = i;
          break;
        }
      }
    }
    if (existing < data->items.size()) {
      data->items[existing].second = std::move(value);
    } else {
      data->items.emplace_back(std::move(key), std::move(value));
    }
  }
  v.depth_ = depth + 1;
  v.has_ns_ = has_ns;
  v.dict_ = std::move(data);
  return v;
}

Value Value::Namespace(std::vector<std::pair<std::string, Value>> attrs) {
  Value v;
  v.kind_ = Kind::kNamespace;
  v.has_ns_ = true;
  v.depth_ = 1;
  auto data = std::make_shared<NamespaceData>();
  for (auto& [name, value] : attrs) data->Set(name, std::move(value));
  v.ns_ = std::move(data);
  return v;
}

namespace {

class NativeCallable : public Callable {
 public:
  NativeCallable(std::string name, NativeFunction fn)
      : name_(std::move(name)), fn_(std::move(fn)) {}
  absl::StatusOr<Value> Call(Evaluator& /*ev*/, const std::vector<Value>& args,
                             const Kwargs& kwargs) const override {
    return fn_(args, kwargs);
  }
  std::string Name() const override { return name_; }

 private:
  std::string name_;
  NativeFunction fn_;
};

}  // namespace

Value Value::Function(std::string name, NativeFunction fn) {
  return FromCallable(std::make_shared<NativeCallable>(std::move(name), std::move(fn)));
}

Value Value::FromCallable(std::shared_ptr<const Callable> fn) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.fn_ = std::move(fn);
  return v;
}

const std::string& Value::str() const {
  return kind_ == Kind::kString && str_ ? *str_ : EmptyString();
}

const std::string& Value::undefined_hint() const {
  return kind_ == Kind::kUndefined && str_ ? *str_ : EmptyString();
}

const std::vector<Value>& Value::items() const {
  static const auto* empty = new std::vector<Value>();
  return list_ ? list_->items : *empty;
}

bool Value::is_tuple() const { return list_ && list_->tuple; }

const std::vector<std::pair<Value, Value>>& Value::dict_items() const {
  static const auto* empty = new std::vector<std::pair<Value, Value>>();
  return dict_ ? dict_->items : *empty;
}

const Value* Value::Find(absl::string_view key) const {
  if (!dict_) return nullptr;
  auto it = dict_->string_index.find(key);
  return it == dict_->string_index.end() ? nullptr : &dict_->items[it->second].second;
}

const Value* Value::Find(const Value& key) const {
  if (!dict_) return nullptr;
  if (key.is_string()) return Find(absl::string_view(key.str()));
  for (const auto& [k, v] : dict_->items) {
    if (k.Equals(key)) return &v;
  }
  return nullptr;
}

const void* Value::identity() const {
  if (list_) return list_.get();
  if (dict_) return dict_.get();
  if (ns_) return ns_.get();
  if (fn_) return fn_.get();
  return nullptr;
}

const Value* NamespaceData::Find(absl::string_view name) const {
  for (const auto& [n, v] : attrs) {
    if (n == name) return &v;
  }
  return nullptr;
}

void NamespaceData::Set(const std::string& name, Value value) {
  for (auto& [n, v] : attrs) {
    if (n == name) {
      v = std::move(value);
      return;
    }
  }
  attrs.emplace_back(name, std::move(value));
}

// ---------------------------------------------------------------------------------------------
// Python semantics.

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0;
    case Kind::kString:
      return !str().empty();
    case Kind::kList:
      return !items().empty();
    case Kind::kDict:
      return !dict_items().empty();
    case Kind::kNamespace:
    case Kind::kCallable:
      return true;
  }
  return false;
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (is_float() || other.is_float()) return AsDouble() == other.AsDouble();
    return int_ == other.int_;
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return str() == other.str();
    case Kind::kList: {
      const auto& a = items();
      const auto& b = other.items();
      if (a.size() != b.size() || is_tuple() != other.is_tuple()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].Equals(b[i])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (dict_items().size() != other.dict_items().size()) return false;
      for (const auto& [k, v] : dict_items()) {
        const Value* o = other.Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    default:
      return identity() == other.identity();
  }
}

std::string Value::Str() const {
  std::string out;
  AppendStr(*this, SIZE_MAX, &out);
  return out;
}

std::string Value::Repr() const {
  std::string out;
  AppendRepr(*this, SIZE_MAX, &out);
  return out;
}

bool AppendStr(const Value& v, size_t max_bytes, std::string* out) {
  if (v.is_undefined()) return true;
  if (v.is_string()) {
    if (out->size() + v.str().size() > max_bytes) return false;
    *out += v.str();
    return true;
  }
  return AppendRepr(v, max_bytes, out);
}

bool AppendRepr(const Value& v, size_t max_bytes, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      break;
    case Value::Kind::kNone:
      *out += "None";
      break;
    case Value::Kind::kBool:
      *out += v.bool_value() ? "True" : "False";
      break;
    case Value::Kind::kInt:
      absl::StrAppend(out, v.int_value());
      break;
    case Value::Kind::kFloat:
      *out += PyFloatRepr(v.float_value());
      break;
    case Value::Kind::kString:
      if (out->size() + v.str().size() > max_bytes) return false;
      *out += PyStrRepr(v.str());
      break;
    case Value::Kind::kList: {
      *out += v.is_tuple() ? "(" : "[";
      const auto& list = v.items();
      for (size_t i = 0; i < list.size(); ++i) {
        if (i > 0) *out += ", ";
        if (!AppendRepr(list[i], max_bytes, out)) return false;
      }
      if (v.is_tuple() && list.size() == 1) *out += ",";
      *out += v.is_tuple() ? ")" : "]";
      break;
    }
    case Value::Kind::kDict: {
      *out += "{";
      bool first = true;
      for (const auto& [k, val] : v.dict_items()) {
        if (!first) *out += ", ";
        first = false;
        if (!AppendRepr(k, max_bytes, out)) return false;
        *out += ": ";
        if (!AppendRepr(val, max_bytes, out)) return false;
      }
      *out += "}";
      break;
    }
    case Value::Kind::kNamespace: {
      *out += "<Namespace {";
      bool first = true;
      for (const auto& [k, val] : v.ns()->attrs) {
        if (!first) *out += ", ";
        first = false;
        absl::StrAppend(out, PyStrRepr(k), ": ");
        if (!AppendRepr(val, max_bytes, out)) return false;
      }
      *out += "}>";
      break;
    }
    case Value::Kind::kCallable:
      absl::StrAppend(out, "<function ", v.callable()->Name(), ">");
      break;
  }
  return out->size() <= max_bytes;
}

namespace {

// json.dumps's string encoding with ensure_ascii=False.
void AppendJsonString(absl::string_view s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return PyFloatRepr(d);
}

struct JsonWriter {
  size_t max_bytes;
  int indent;
  std::string item_sep;
  std::string key_sep;
  bool sort_keys;

  void Newline(int level, std::string* out) const {
    out->push_back('\n');
    out->append(static_cast<size_t>(indent) * level, ' ');
  }

  absl::Status Write(const Value& v, int level, std::string* out) const {
    if (out->size() > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("tojson: the JSON text would be longer than ", max_bytes, " bytes"));
    }
    switch (v.kind()) {
      case Value::Kind::kNone:
        *out += "null";
        return absl::OkStatus();
      case Value::Kind::kBool:
        *out += v.bool_value() ? "true" : "false";
        return absl::OkStatus();
      case Value::Kind::kInt:
        absl::StrAppend(out, v.int_value());
        return absl::OkStatus();
      case Value::Kind::kFloat:
        *out += JsonFloat(v.float_value());
        return absl::OkStatus();
      case Value::Kind::kString:
        AppendJsonString(v.str(), out);
        return absl::OkStatus();
      case Value::Kind::kList: {
        const auto& items = v.items();
        if (items.empty()) {
          *out += "[]";
          return absl::OkStatus();
        }
        out->push_back('[');
        for (size_t i = 0; i < items.size(); ++i) {
          if (i > 0) *out += item_sep;
          if (indent >= 0) Newline(level + 1, out);
          if (absl::Status s = Write(items[i], level + 1, out); !s.ok()) return s;
        }
        if (indent >= 0) Newline(level, out);
        out->push_back(']');
        return absl::OkStatus();
      }
      case Value::Kind::kDict: {
        std::vector<const std::pair<Value, Value>*> entries;
        for (const auto& entry : v.dict_items()) entries.push_back(&entry);
        if (entries.empty()) {
          *out += "{}";
          return absl::OkStatus();
        }
        std::vector<std::string> keys;
        for (const auto* entry : entries) {
          const Value& k = entry->first;
          if (k.is_string()) {
            keys.push_back(k.str());
          } else if (k.is_bool()) {
            keys.push_back(k.bool_value() ? "true" : "false");
          } else if (k.is_int()) {
            keys.push_back(absl::StrCat(k.int_value()));
          } else if (k.is_float()) {
            keys.push_back(JsonFloat(k.float_value()));
          } else if (k.is_none()) {
            keys.push_back("null");
          } else {
            return absl::InvalidArgumentError(
                absl::StrCat("tojson: keys must be str, int, float, bool or None, not ", k.Repr()));
          }
        }
        std::vector<size_t> order(entries.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        if (sort_keys) {
          std::stable_sort(order.begin(), order.end(),
                           [&](size_t a, size_t b) { return keys[a] < keys[b]; });
        }
        out->push_back('{');
        for (size_t i = 0; i < order.size(); ++i) {
          if (i > 0) *out += item_sep;
          if (indent >= 0) Newline(level + 1, out);
          AppendJsonString(keys[order[i]], out);
          *out += key_sep;
          if (absl::Status s = Write(entries[order[i]]->second, level + 1, out); !s.ok()) {
            return s;
          }
        }
        if (indent >= 0) Newline(level, out);
        out->push_back('}');
        return absl::OkStatus();
      }
      case Value::Kind::kUndefined:
        return absl::InvalidArgumentError(
            v.undefined_hint().empty()
                ? "tojson: an undefined value is not JSON serializable"
                : absl::StrCat("tojson: ", v.undefined_hint(), " (not JSON serializable)"));
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("tojson: ", v.Repr(), " is not JSON serializable"));
    }
  }
};

template <class Json>
absl::StatusOr<Value> ConvertJson(const Json& j, int depth) {
  if (depth > kMaxValueDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nested deeper than ", kMaxValueDepth, " levels"));
  }
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) {
        absl::StatusOr<Value> v = ConvertJson(e, depth + 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return Value::List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      std::vector<std::pair<Value, Value>> items;
      items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        absl::StatusOr<Value> v = ConvertJson(it.value(), depth + 1);
        if (!v.ok()) return v.status();
        items.emplace_back(Value(it.key()), *std::move(v));
      }
      return Value::Dict(std::move(items));
    }
    default:
      return absl::InvalidArgumentError("unsupported JSON value (binary)");
  }
}

}  // namespace

absl::StatusOr<std::string> Value::ToJson(int indent, std::string item_sep, std::string key_sep,
                                          bool sort_keys, size_t max_bytes) const {
  JsonWriter writer{max_bytes, indent, std::move(item_sep), std::move(key_sep), sort_keys};
  if (writer.item_sep.empty()) writer.item_sep = indent >= 0 ? "," : ", ";
  if (writer.key_sep.empty()) writer.key_sep = ": ";
  std::string out;
  if (absl::Status s = writer.Write(*this, 0, &out); !s.ok()) return s;
  return out;
}

absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& json) {
  return ConvertJson(json, 0);
}

absl::StatusOr<Value> Value::FromJson(const nlohmann::json& json) { return ConvertJson(json, 0); }

}  // namespace swarm::tokenizer::jinja
