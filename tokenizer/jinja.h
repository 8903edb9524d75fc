// A Jinja subset for Hugging Face chat templates, written for byte-identical output with Python
// Jinja2 as transformers sets it up (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
// one trailing newline dropped, loop controls, transformers' `tojson`).
//
// Supported: text, {{ }}, {% %} and {# #} with -/+ whitespace control; {% raw %}; if/elif/else,
// for (tuple targets, `if` filter, else, loop.*, break/continue), set (names, tuples, ns.attr,
// block set), macro (positional/keyword arguments, defaults), filter blocks, with, generation;
// Python literals, arithmetic, comparison chains, `in`, `is` tests, filters, conditional
// expressions, slices, string/dict methods; the globals namespace(), range(), dict(),
// raise_exception(). Python semantics for truthiness, equality, str() and repr(). Not supported
// (an error at parse time): extends/block/include/import, call blocks, recursive loops.
//
// Values are immutable (as in the sandbox) except namespaces. Value is cheap to copy (strings and
// containers are shared). A Template is immutable after Parse and may be rendered from many
// threads at once; everything a render mutates lives in that render (do not pass a namespace in
// as a global to concurrent renders).
//
// Hostile templates and data are bounded: parse nesting depth, render call depth, value nesting
// depth, loop iterations and the size of any string built (the output included) are capped
// (Limits); going past a cap is RESOURCE_EXHAUSTED, never a crash.
#ifndef SWARM_TOKENIZER_JINJA_H_
#define SWARM_TOKENIZER_JINJA_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace swarm::tokenizer::jinja {

class Value;
struct ListData;
struct DictData;
struct NamespaceData;
class Callable;

using Kwargs = std::vector<std::pair<std::string, Value>>;
// A function exposed to templates. Errors it returns are reported with the call's position.
using NativeFunction =
    std::function<absl::StatusOr<Value>(const std::vector<Value>& args, const Kwargs& kwargs)>;

// The most nested a value may be (lists/dicts inside each other), JSON input included.
inline constexpr int kMaxValueDepth = 256;

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  Value() = default;                                     // Undefined.
  Value(bool b) : kind_(Kind::kBool), int_(b) {}         // NOLINT
  Value(int i) : kind_(Kind::kInt), int_(i) {}           // NOLINT
  Value(int64_t i) : kind_(Kind::kInt), int_(i) {}       // NOLINT
  Value(double d) : kind_(Kind::kFloat), float_(d) {}    // NOLINT
  Value(std::string s);                                  // NOLINT
  Value(const char* s) : Value(std::string(s)) {}        // NOLINT
  Value(absl::string_view s) : Value(std::string(s)) {}  // NOLINT

  // Undefined, with a hint for error messages ("'tools' is undefined").
  static Value Undefined(std::string hint = "");
  static Value None();
  // A list (tuple: Python tuple, which only prints differently). Depth grows by one.
  static Value List(std::vector<Value> items, bool tuple = false);
  // A dict with insertion order kept; a repeated key keeps its first position and last value.
  static Value Dict(std::vector<std::pair<Value, Value>> items);
  static Value Namespace(std::vector<std::pair<std::string, Value>> attrs = {});
  static Value Function(std::string name, NativeFunction fn);
  static Value FromCallable(std::shared_ptr<const Callable> fn);

  // nlohmann JSON → Value (null → None, objects → dicts in the JSON object's order: use
  // nlohmann::ordered_json to keep the document's key order, as Python's json.load does).
  // InvalidArgument when nested deeper than kMaxValueDepth.
  static absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json);
  static absl::StatusOr<Value> FromJson(const nlohmann::json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool bool_value() const { return int_ != 0; }
  int64_t int_value() const { return int_; }
  double float_value() const { return float_; }
  double AsDouble() const { return is_float() ? float_ : static_cast<double>(int_); }
  const std::string& str() const;             // Strings only ("" otherwise).
  const std::string& undefined_hint() const;  // Undefined only.
  const std::vector<Value>& items() const;    // Lists only (empty otherwise).
  bool is_tuple() const;
  const std::vector<std::pair<Value, Value>>& dict_items() const;  // Dicts only.
  // Dict lookup (nullptr when absent or not a dict).
  const Value* Find(const Value& key) const;
  const Value* Find(absl::string_view key) const;
  NamespaceData* ns() const { return ns_.get(); }
  const Callable* callable() const { return fn_.get(); }
  const void* identity() const;  // The shared storage (for `is sameas`), or nullptr.

  int depth() const { return depth_; }  // 0 for scalars, 1 + deepest element for containers.
  bool has_namespace() const { return has_ns_; }  // A namespace inside (or this one).

  // Python truthiness.
  bool Truthy() const;
  // Python ==, deep (1 == 1.0 == True; dicts compare unordered).
  bool Equals(const Value& other) const;
  // Python str(): strings as they are, None/True/False, floats as repr(), containers as repr().
  std::string Str() const;
  // Python repr().
  std::string Repr() const;
  // Python json.dumps(self, ensure_ascii=False, indent=indent (<0: none), separators, sort_keys)
  // as transformers' tojson filter calls it. InvalidArgument for undefined values, namespaces
  // and functions (not JSON serializable); RESOURCE_EXHAUSTED past max_bytes.
  absl::StatusOr<std::string> ToJson(int indent = -1, std::string item_sep = "",
                                     std::string key_sep = "", bool sort_keys = false,
                                     size_t max_bytes = SIZE_MAX) const;

 private:
  Kind kind_ = Kind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0;
  int depth_ = 0;
  bool has_ns_ = false;
  std::shared_ptr<const std::string> str_;  // String, or an undefined value's hint.
  std::shared_ptr<const ListData> list_;
  std::shared_ptr<const DictData> dict_;
  std::shared_ptr<NamespaceData> ns_;
  std::shared_ptr<const Callable> fn_;
};

// Mutable attributes of a namespace() object. Never holds a namespace (that would allow cycles).
struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* Find(absl::string_view name) const;
  void Set(const std::string& name, Value value);
};

struct ParseOptions {
  bool trim_blocks = true;    // Drop the first newline after a block/comment tag.
  bool lstrip_blocks = true;  // Strip spaces/tabs from a line's start up to a block/comment tag.
  bool keep_trailing_newline = false;
  int max_nesting = 128;  // Nested statements and expression depth.
};

struct Limits {
  // Any string built, the output included; a list may hold this many bytes of Values.
  size_t max_output_bytes = size_t{64} << 20;
  // Units of work in a render: loop iterations, calls, outputs, elements visited, 64-byte pieces
  // of text processed.
  int64_t max_steps = 20'000'000;
  int max_call_depth = 64;  // Nested macro calls.
};

class Template {
 public:
  // Parses `source`. InvalidArgument "line L column C: ..." for malformed templates (unclosed
  // tags, unexpected tokens, unknown statements), and for source that is not valid UTF-8.
  static absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source,
                                                         const ParseOptions& options = {});
  ~Template();

  // Renders with `globals` as the template's variables (over the built-ins namespace(), range(),
  // dict(), raise_exception()). Errors: InvalidArgument "line L column C: ..." for runtime errors
  // (undefined values used, type errors); raise_exception(msg) gives InvalidArgument with exactly
  // `msg`; RESOURCE_EXHAUSTED when a limit is reached.
  absl::StatusOr<std::string> Render(const std::map<std::string, Value>& globals,
                                     const Limits& limits = {}) const;

  struct Impl;

 private:
  explicit Template(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True when `status` came from the template's own raise_exception(msg) (its message is then
// exactly msg), as opposed to an error in the template or the renderer's limits.
bool IsRaisedException(const absl::Status& status);

}  // namespace swarm::tokenizer::jinja

#endif  // SWARM_TOKENIZER_JINJA_H_
