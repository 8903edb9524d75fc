// The Jinja evaluator (see jinja.h): walks the syntax tree with Python/Jinja2 semantics —
// scopes as Jinja2 has them (a for-loop iteration and a macro call get their own; `if` does
// not), Undefined as jinja2.Undefined behaves, the filters, tests and str/dict methods chat
// templates use — and enforces the render limits.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "absl/base/attributes.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "tokenizer/jinja_internal.h"
#include "tokenizer/tokenizer_internal.h"
#include "utf8proc.h"

namespace swarm::tokenizer::jinja {

namespace {

constexpr char kRaisedPayload[] = "swarm.jinja/raise_exception";
constexpr int kMaxEvalDepth = 1000;

enum class Flow { kNormal, kBreak, kContinue };

struct Scope {
  explicit Scope(Scope* p) : parent(p) {}
  Scope* parent;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* Find(absl::string_view name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent) {
      for (const auto& [n, v] : s->vars) {
        if (n == name) return &v;
      }
    }
    return nullptr;
  }
  void Set(const std::string& name, Value value) {
    for (auto& [n, v] : vars) {
      if (n == name) {
        v = std::move(value);
        return;
      }
    }
    vars.emplace_back(name, std::move(value));
  }
};

std::string TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return "str";
    case Value::Kind::kList:
      return v.is_tuple() ? "tuple" : "list";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kCallable:
      return "function";
  }
  return "object";
}

bool IsAscii(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Python's slice.indices(): the positions a[start:stop:step] selects from a sequence of `len`.
std::vector<int64_t> SliceIndices(int64_t len, const Value& start_v, const Value& stop_v,
                                  int64_t step) {
  auto clamp = [&](const Value& v, int64_t def_pos, int64_t def_neg) -> int64_t {
    if (v.is_none() || v.is_undefined()) return step > 0 ? def_pos : def_neg;
    int64_t i = v.int_value();
    if (i < 0) {
      i += len;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= len) {
      i = step < 0 ? len - 1 : len;
    }
    return i;
  };
  const int64_t start = clamp(start_v, 0, len - 1);
  const int64_t stop = clamp(stop_v, len, -1);
  std::vector<int64_t> out;
  // |stop - start| <= len + 1, so the count and each position fit; i += step could overflow.
  if (step > 0 && start < stop) {
    const int64_t n = (stop - start - 1) / step + 1;
    for (int64_t k = 0; k < n; ++k) out.push_back(start + k * step);
  } else if (step < 0 && start > stop) {
    const int64_t n = step == INT64_MIN ? 1 : (start - stop - 1) / -step + 1;
    for (int64_t k = 0; k < n; ++k) out.push_back(start + k * step);
  }
  return out;
}

std::string StripChars(absl::string_view s, const Value* chars, bool left, bool right) {
  std::vector<char32_t> cps = CodePoints(s);
  std::vector<char32_t> set;
  const bool custom = chars != nullptr && chars->is_string();
  if (custom) set = CodePoints(chars->str());
  auto strip = [&](char32_t c) {
    return custom ? std::find(set.begin(), set.end(), c) != set.end() : IsPySpace(c);
  };
  size_t b = 0;
  size_t e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  return FromCodePoints(cps, b, e);
}

std::string MapCase(absl::string_view s, bool upper) {
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const auto cp = static_cast<utf8proc_int32_t>(internal::NextCodePoint(s, &pos));
    internal::AppendUtf8(static_cast<char32_t>(upper ? utf8proc_toupper(cp) : utf8proc_tolower(cp)),
                         &out);
  }
  return out;
}

bool IsCased(char32_t cp) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// Python's str.title().
std::string PyTitle(absl::string_view s) {
  std::string out;
  bool prev_cased = false;
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t cp = internal::NextCodePoint(s, &pos);
    const auto c = static_cast<utf8proc_int32_t>(cp);
    internal::AppendUtf8(
        static_cast<char32_t>(prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c)), &out);
    prev_cased = IsCased(cp);
  }
  return out;
}

std::string PyCapitalize(absl::string_view s) {
  std::string out;
  size_t pos = 0;
  bool first = true;
  while (pos < s.size()) {
    const auto c = static_cast<utf8proc_int32_t>(internal::NextCodePoint(s, &pos));
    internal::AppendUtf8(static_cast<char32_t>(first ? utf8proc_totitle(c) : utf8proc_tolower(c)),
                         &out);
    first = false;
  }
  return out;
}

// Jinja2's title filter: each word after [-\s({\[<]+ gets its first letter upper, rest lower.
std::string JinjaTitle(absl::string_view s) {
  std::string out;
  std::vector<char32_t> cps = CodePoints(s);
  bool word_start = true;
  for (char32_t cp : cps) {
    const bool sep = IsPySpace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
    const auto c = static_cast<utf8proc_int32_t>(cp);
    if (sep) {
      internal::AppendUtf8(cp, &out);
      word_start = true;
    } else {
      internal::AppendUtf8(
          static_cast<char32_t>(word_start ? utf8proc_toupper(c) : utf8proc_tolower(c)), &out);
      word_start = false;
    }
  }
  return out;
}

std::string HtmlEscape(absl::string_view s) {
  return absl::StrReplaceAll(
      s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&#34;"}, {"'", "&#39;"}});
}

std::vector<std::string> SplitLines(absl::string_view s) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      lines.emplace_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) lines.emplace_back(s.substr(start));
  return lines;
}

class ArgReader {
 public:
  ArgReader(const std::vector<Value>& args, const Kwargs& kwargs) : args_(args), kwargs_(kwargs) {}
  // Positional `index` or keyword `name`; nullptr when neither was given.
  const Value* Get(size_t index, absl::string_view name) const {
    if (index < args_.size()) return &args_[index];
    for (const auto& [k, v] : kwargs_) {
      if (k == name) return &v;
    }
    return nullptr;
  }
  bool Bool(size_t index, absl::string_view name, bool fallback) const {
    const Value* v = Get(index, name);
    return v ? v->Truthy() : fallback;
  }

 private:
  const std::vector<Value>& args_;
  const Kwargs& kwargs_;
};

// The `loop` object of iteration i of n (noinline: it is big, and loops nest).
ABSL_ATTRIBUTE_NOINLINE Value LoopObject(int64_t i, int64_t n, const std::vector<Value>& items) {
  std::vector<std::pair<Value, Value>> loop = {
      {Value("index"), Value(i + 1)},
      {Value("index0"), Value(i)},
      {Value("revindex"), Value(n - i)},
      {Value("revindex0"), Value(n - i - 1)},
      {Value("first"), Value(i == 0)},
      {Value("last"), Value(i == n - 1)},
      {Value("length"), Value(n)},
      {Value("depth"), Value(1)},
      {Value("depth0"), Value(0)},
      {Value("previtem"), i > 0 ? items[i - 1] : Value::Undefined("there is no previous item")},
      {Value("nextitem"), i + 1 < n ? items[i + 1] : Value::Undefined("there is no next item")},
      {Value("cycle"),
       Value::Function("loop.cycle",
                       [i](const std::vector<Value>& args, const Kwargs&) -> absl::StatusOr<Value> {
                         if (args.empty()) {
                           return absl::InvalidArgumentError("loop.cycle() needs an argument");
                         }
                         return args[static_cast<size_t>(i) % args.size()];
                       })},
  };
  return Value::Dict(std::move(loop));
}

// str(v), at most 64 KiB (for messages).
std::string Capped(const Value& v) {
  std::string out;
  if (!AppendStr(v, 65536, &out)) out += "...";
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class Evaluator {
 public:
  Evaluator(const Template::Impl& impl, const Limits& limits) : impl_(impl), limits_(limits) {}

  absl::StatusOr<std::string> Run(const std::map<std::string, Value>& globals);

  absl::StatusOr<Value> CallMacro(const Node& macro, const std::vector<Value>& args,
                                  const Kwargs& kwargs);
  absl::StatusOr<Value> CallMethod(const Value& self, const std::string& name,
                                   const std::vector<Value>& args, const Kwargs& kwargs);
  size_t call_pos() const { return call_pos_; }

 private:
  absl::Status Err(size_t pos, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(impl_.Where(pos), ": ", message));
  }
  absl::Status Limit(size_t pos, absl::string_view message) const {
    return absl::ResourceExhaustedError(absl::StrCat(impl_.Where(pos), ": ", message));
  }
  absl::Status UndefinedError(const Value& v, size_t pos) const {
    return Err(pos, v.undefined_hint().empty() ? "undefined value" : v.undefined_hint());
  }
  absl::Status Step(size_t pos) { return Work(1, pos); }
  // Counts `units` of work (a loop iteration, a call, an element visited, 64 bytes of text).
  absl::Status Work(uint64_t units, size_t pos) {
    steps_ += static_cast<int64_t>(std::min<uint64_t>(units, INT64_MAX / 2));
    if (steps_ > limits_.max_steps) {
      return Limit(pos, absl::StrCat("render took more than ", limits_.max_steps,
                                     " steps (loop iterations, calls and outputs)"));
    }
    return absl::OkStatus();
  }
  absl::Status CheckSize(size_t bytes, size_t pos) {
    if (bytes > limits_.max_output_bytes) {
      return Limit(pos, absl::StrCat("a string or list longer than ", limits_.max_output_bytes,
                                     " bytes would be built"));
    }
    return Work(bytes / 64, pos);
  }
  // Lists are capped at the same memory as strings.
  absl::Status CheckItems(size_t items, size_t pos) {
    return CheckSize(items > SIZE_MAX / sizeof(Value) ? SIZE_MAX : items * sizeof(Value), pos);
  }
  // Python str(v), capped at the output limit.
  absl::StatusOr<std::string> StrOf(const Value& v, size_t pos) {
    std::string out;
    if (!AppendStr(v, limits_.max_output_bytes, &out)) {
      RETURN_IF_ERROR(CheckSize(SIZE_MAX, pos));
    }
    RETURN_IF_ERROR(Work(out.size() / 64, pos));
    return out;
  }
  absl::Status CheckDepth(const Value& v, size_t pos) const {
    if (v.depth() > kMaxValueDepth) {
      return Limit(pos, absl::StrCat("a value nested deeper than ", kMaxValueDepth,
                                     " levels would be built"));
    }
    return absl::OkStatus();
  }
  absl::Status Append(std::string* out, absl::string_view s, size_t pos) {
    RETURN_IF_ERROR(CheckSize(out->size() + s.size(), pos));
    out->append(s.data(), s.size());
    return absl::OkStatus();
  }

  class DepthGuard {
   public:
    explicit DepthGuard(Evaluator* ev) : ev_(ev) { ++ev_->depth_; }
    ~DepthGuard() { --ev_->depth_; }
    bool exceeded() const { return ev_->depth_ > kMaxEvalDepth; }

   private:
    Evaluator* ev_;
  };

  absl::StatusOr<Flow> Exec(const Body& body, Scope& scope, std::string* out);
  absl::StatusOr<Flow> ExecNode(const Node& node, Scope& scope, std::string* out);
  // Kept out of ExecNode (noinline) so that the frame of each nested statement stays small.
  ABSL_ATTRIBUTE_NOINLINE absl::StatusOr<Flow> ExecFor(const Node& node, Scope& scope,
                                                       std::string* out);
  ABSL_ATTRIBUTE_NOINLINE absl::Status ExecCapture(const Node& node, Scope& scope,
                                                   std::string* out);
  ABSL_ATTRIBUTE_NOINLINE absl::Status ExecSet(const Node& node, Scope& scope);
  absl::Status Assign(const std::vector<std::string>& targets, const Value& value, Scope& scope,
                      size_t pos);

  absl::StatusOr<Value> Eval(const Expr& e, Scope& scope);
  absl::StatusOr<Value> EvalFilter(const Expr& e, Scope& scope);
  absl::StatusOr<Value> EvalTest(const Expr& e, Scope& scope);
  absl::Status EvalArgs(const Expr& e, size_t first, Scope& scope, std::vector<Value>* args,
                        Kwargs* kwargs);
  absl::StatusOr<Value> CallValue(const Value& fn, const std::vector<Value>& args,
                                  const Kwargs& kwargs, size_t pos);

  absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name, size_t pos);
  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key, size_t pos);
  absl::StatusOr<Value> AttrPath(const Value& obj, const std::string& path, size_t pos);
  absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop,
                              const Value& step, size_t pos);
  absl::StatusOr<std::vector<Value>> Iterate(const Value& v, size_t pos);
  absl::StatusOr<int64_t> Length(const Value& v, size_t pos) const;
  absl::StatusOr<Value> Binary(const std::string& op, const Value& a, const Value& b, size_t pos);
  absl::StatusOr<Value> PercentFormat(const std::string& format, const Value& args, size_t pos);
  absl::StatusOr<int> Compare(const Value& a, const Value& b, const std::string& op,
                              size_t pos) const;
  absl::StatusOr<bool> Contains(const Value& container, const Value& item, size_t pos);
  absl::StatusOr<bool> CompareOp(const std::string& op, const Value& a, const Value& b, size_t pos);

  absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& v,
                                    const std::vector<Value>& args, const Kwargs& kwargs,
                                    size_t pos);
  absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v,
                                 const std::vector<Value>& args, size_t pos);
  absl::StatusOr<Value> SelectOrReject(const Value& seq, const std::vector<Value>& args,
                                       bool by_attr, bool select, size_t pos);
  absl::StatusOr<std::vector<Value>> SortedItems(std::vector<Value> items, const Value* attribute,
                                                 bool case_sensitive, bool reverse, size_t pos);
  absl::StatusOr<Value> ToJsonFilter(const Value& v, const std::vector<Value>& args,
                                     const Kwargs& kwargs, size_t pos);
  absl::StatusOr<Value> StringMethod(const std::string& s, const std::string& name,
                                     const std::vector<Value>& args, const Kwargs& kwargs,
                                     size_t pos);

  const Template::Impl& impl_;
  const Limits& limits_;
  Scope* root_ = nullptr;
  int64_t steps_ = 0;
  int depth_ = 0;
  int call_depth_ = 0;
  size_t call_pos_ = 0;
  const Value* block_subject_ = nullptr;  // The body of a filter block / block set.
};

namespace {

class MacroCallable : public Callable {
 public:
  explicit MacroCallable(const Node* node) : node_(node) {}
  absl::StatusOr<Value> Call(Evaluator& ev, const std::vector<Value>& args,
                             const Kwargs& kwargs) const override {
    return ev.CallMacro(*node_, args, kwargs);
  }
  std::string Name() const override { return node_->text; }
  bool native() const override { return false; }

 private:
  const Node* node_;
};

class BoundMethod : public Callable {
 public:
  BoundMethod(Value self, std::string name) : self_(std::move(self)), name_(std::move(name)) {}
  absl::StatusOr<Value> Call(Evaluator& ev, const std::vector<Value>& args,
                             const Kwargs& kwargs) const override {
    return ev.CallMethod(self_, name_, args, kwargs);
  }
  std::string Name() const override { return absl::StrCat(TypeName(self_), ".", name_); }
  bool native() const override { return false; }

 private:
  Value self_;
  std::string name_;
};

const std::set<std::string>& StringMethods() {
  static const auto* methods = new std::set<std::string>{
      "strip",      "lstrip",   "rstrip",  "split",   "rsplit",  "splitlines",
      "startswith", "endswith", "upper",   "lower",   "title",   "capitalize",
      "replace",    "find",     "rfind",   "count",   "join",    "isdigit",
      "isalpha",    "isalnum",  "isspace", "islower", "isupper", "format"};
  return *methods;
}

const std::set<std::string>& DictMethods() {
  static const auto* methods = new std::set<std::string>{"items", "keys", "values", "get"};
  return *methods;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Statements.

absl::StatusOr<std::string> Evaluator::Run(const std::map<std::string, Value>& globals) {
  Scope root(nullptr);
  root.Set(
      "raise_exception",
      Value::Function("raise_exception",
                      [](const std::vector<Value>& args, const Kwargs&) -> absl::StatusOr<Value> {
                        absl::Status s = absl::InvalidArgumentError(
                            args.empty() ? std::string("raise_exception called") : Capped(args[0]));
                        s.SetPayload(kRaisedPayload, absl::Cord("1"));
                        return s;
                      }));
  root.Set(
      "namespace",
      Value::Function(
          "namespace",
          [](const std::vector<Value>& args, const Kwargs& kwargs) -> absl::StatusOr<Value> {
            std::vector<std::pair<std::string, Value>> attrs;
            for (const Value& a : args) {
              if (!a.is_dict()) {
                return absl::InvalidArgumentError("namespace() takes keyword arguments or a dict");
              }
              for (const auto& [k, v] : a.dict_items()) {
                attrs.emplace_back(k.Str(), v);
              }
            }
            for (const auto& kv : kwargs) attrs.push_back(kv);
            for (const auto& kv : attrs) {
              if (kv.second.has_namespace()) {
                return absl::InvalidArgumentError("a namespace cannot hold a namespace");
              }
            }
            return Value::Namespace(std::move(attrs));
          }));
  root.Set("dict", Value::Function("dict",
                                   [](const std::vector<Value>& args,
                                      const Kwargs& kwargs) -> absl::StatusOr<Value> {
                                     std::vector<std::pair<Value, Value>> items;
                                     for (const Value& a : args) {
                                       if (!a.is_dict())
                                         return absl::InvalidArgumentError("dict() takes a dict");
                                       for (const auto& kv : a.dict_items()) items.push_back(kv);
                                     }
                                     for (const auto& [k, v] : kwargs)
                                       items.emplace_back(Value(k), v);
                                     return Value::Dict(std::move(items));
                                   }));
  const size_t max_items = limits_.max_output_bytes / sizeof(Value);
  root.Set("range",
           Value::Function(
               "range",
               [max_items](const std::vector<Value>& args, const Kwargs&) -> absl::StatusOr<Value> {
                 if (args.empty() || args.size() > 3) {
                   return absl::InvalidArgumentError("range() takes 1 to 3 integer arguments");
                 }
                 for (const Value& a : args) {
                   if (!a.is_int() && !a.is_bool()) {
                     return absl::InvalidArgumentError(absl::StrCat(
                         "range() arguments must be integers, not '", TypeName(a), "'"));
                   }
                 }
                 int64_t start = 0, stop = 0, step = 1;
                 if (args.size() == 1) {
                   stop = args[0].int_value();
                 } else {
                   start = args[0].int_value();
                   stop = args[1].int_value();
                   if (args.size() == 3) step = args[2].int_value();
                 }
                 if (step == 0) return absl::InvalidArgumentError("range() step must not be zero");
                 std::vector<Value> items;
                 for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
                   if (items.size() >= max_items) {
                     return absl::ResourceExhaustedError("range() too long");
                   }
                   items.emplace_back(i);
                   if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step))
                     break;
                 }
                 return Value::List(std::move(items));
               }));
  for (const auto& [name, value] : globals) root.Set(name, value);
  root_ = &root;
  std::string out;
  ASSIGN_OR_RETURN(Flow flow, Exec(impl_.body, root, &out));
  (void)flow;
  return out;
}

absl::StatusOr<Flow> Evaluator::Exec(const Body& body, Scope& scope, std::string* out) {
  DepthGuard guard(this);
  if (guard.exceeded() && !body.empty()) {
    return Limit(body.front()->pos, "render nested too deeply");
  }
  for (const NodePtr& node : body) {
    ASSIGN_OR_RETURN(Flow flow, ExecNode(*node, scope, out));
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

absl::Status Evaluator::Assign(const std::vector<std::string>& targets, const Value& value,
                               Scope& scope, size_t pos) {
  RETURN_IF_ERROR(CheckDepth(value, pos));
  if (targets.size() == 1) {
    scope.Set(targets[0], value);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value, pos));
  if (value.is_undefined() || items.size() != targets.size()) {
    return Err(pos, absl::StrCat("cannot unpack ", items.size(), " values into ", targets.size(),
                                 " names"));
  }
  for (size_t i = 0; i < targets.size(); ++i) scope.Set(targets[i], items[i]);
  return absl::OkStatus();
}

absl::StatusOr<Flow> Evaluator::ExecNode(const Node& node, Scope& scope, std::string* out) {
  switch (node.kind) {
    case Node::Kind::kText:
      RETURN_IF_ERROR(Append(out, node.text, node.pos));
      return Flow::kNormal;
    case Node::Kind::kOutput: {
      RETURN_IF_ERROR(Step(node.pos));
      ASSIGN_OR_RETURN(Value v, Eval(*node.expr, scope));
      ASSIGN_OR_RETURN(std::string text, StrOf(v, node.pos));
      RETURN_IF_ERROR(Append(out, text, node.pos));
      return Flow::kNormal;
    }
    case Node::Kind::kIf:
      for (const auto& [cond, body] : node.branches) {
        ASSIGN_OR_RETURN(Value c, Eval(*cond, scope));
        if (c.Truthy()) return Exec(body, scope, out);
      }
      return Exec(node.else_body, scope, out);
    case Node::Kind::kFor:
      return ExecFor(node, scope, out);
    case Node::Kind::kSet:
      RETURN_IF_ERROR(ExecSet(node, scope));
      return Flow::kNormal;
    case Node::Kind::kSetBlock:
    case Node::Kind::kFilterBlock:
      RETURN_IF_ERROR(ExecCapture(node, scope, out));
      return Flow::kNormal;
    case Node::Kind::kMacro:
      scope.Set(node.text, Value::FromCallable(std::make_shared<MacroCallable>(&node)));
      return Flow::kNormal;
    case Node::Kind::kWith: {
      Scope inner(&scope);
      for (const auto& [name, expr] : node.params) {
        ASSIGN_OR_RETURN(Value v, Eval(*expr, scope));
        inner.Set(name, std::move(v));
      }
      return Exec(node.body, inner, out);
    }
    case Node::Kind::kScope: {
      Scope inner(&scope);
      return Exec(node.body, inner, out);
    }
    case Node::Kind::kBreak:
      return Flow::kBreak;
    case Node::Kind::kContinue:
      return Flow::kContinue;
  }
  return Flow::kNormal;
}

absl::Status Evaluator::ExecSet(const Node& node, Scope& scope) {
  ASSIGN_OR_RETURN(Value v, Eval(*node.expr, scope));
  if (node.attr.empty()) {
    RETURN_IF_ERROR(Assign(node.targets, v, scope, node.pos));
    return absl::OkStatus();
  }
  const Value* ns = scope.Find(node.targets[0]);
  if (ns == nullptr || !ns->is_namespace()) {
    return Err(node.pos, absl::StrCat("cannot assign attribute '", node.attr, "' of '",
                                      node.targets[0], "': it is not a namespace"));
  }
  if (v.has_namespace()) return Err(node.pos, "a namespace cannot hold a namespace");
  RETURN_IF_ERROR(CheckDepth(v, node.pos));
  ns->ns()->Set(node.attr, std::move(v));
  return absl::OkStatus();
}

absl::Status Evaluator::ExecCapture(const Node& node, Scope& scope, std::string* out) {
  std::string captured;
  Scope inner(&scope);
  ASSIGN_OR_RETURN(Flow flow, Exec(node.body, inner, &captured));
  (void)flow;
  Value v(std::move(captured));
  if (node.filter) {
    const Value* saved = block_subject_;
    block_subject_ = &v;
    absl::StatusOr<Value> filtered = Eval(*node.filter, scope);
    block_subject_ = saved;
    if (!filtered.ok()) return filtered.status();
    v = *std::move(filtered);
  }
  if (node.kind == Node::Kind::kSetBlock) {
    scope.Set(node.targets[0], std::move(v));
  } else {
    ASSIGN_OR_RETURN(std::string text, StrOf(v, node.pos));
    RETURN_IF_ERROR(Append(out, text, node.pos));
  }
  return absl::OkStatus();
}

absl::StatusOr<Flow> Evaluator::ExecFor(const Node& node, Scope& scope, std::string* out) {
  ASSIGN_OR_RETURN(Value iterable, Eval(*node.expr, scope));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable, node.expr->pos));
  if (node.filter) {
    std::vector<Value> kept;
    for (Value& item : items) {
      RETURN_IF_ERROR(Step(node.pos));
      Scope inner(&scope);
      RETURN_IF_ERROR(Assign(node.targets, item, inner, node.pos));
      ASSIGN_OR_RETURN(Value keep, Eval(*node.filter, inner));
      if (keep.Truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    Scope inner(&scope);
    ASSIGN_OR_RETURN(Flow flow, Exec(node.else_body, inner, out));
    (void)flow;
    return Flow::kNormal;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    RETURN_IF_ERROR(Step(node.pos));
    Scope inner(&scope);
    RETURN_IF_ERROR(Assign(node.targets, items[i], inner, node.pos));
    inner.Set("loop", LoopObject(i, n, items));
    ASSIGN_OR_RETURN(Flow flow, Exec(node.body, inner, out));
    if (flow == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

absl::StatusOr<Value> Evaluator::CallMacro(const Node& macro, const std::vector<Value>& args,
                                           const Kwargs& kwargs) {
  const size_t pos = call_pos_;
  if (call_depth_ >= limits_.max_call_depth) {
    return Limit(pos, absl::StrCat("macro calls nested deeper than ", limits_.max_call_depth));
  }
  if (args.size() > macro.params.size()) {
    return Err(pos, absl::StrCat("macro '", macro.text, "' takes at most ", macro.params.size(),
                                 " arguments, got ", args.size()));
  }
  Scope scope(root_);
  for (const auto& [k, v] : kwargs) {
    bool known = false;
    for (const auto& p : macro.params) known = known || p.first == k;
    if (!known) {
      return Err(pos, absl::StrCat("macro '", macro.text, "' has no parameter '", k, "'"));
    }
  }
  for (size_t i = 0; i < macro.params.size(); ++i) {
    const auto& [name, def] = macro.params[i];
    const Value* given = i < args.size() ? &args[i] : nullptr;
    for (const auto& [k, v] : kwargs) {
      if (k == name) given = &v;
    }
    if (given != nullptr) {
      scope.Set(name, *given);
    } else if (def) {
      ASSIGN_OR_RETURN(Value v, Eval(*def, scope));
      scope.Set(name, std::move(v));
    } else {
      scope.Set(name, Value::Undefined(absl::StrCat("parameter '", name, "' was not provided")));
    }
  }
  ++call_depth_;
  std::string out;
  absl::StatusOr<Flow> flow = Exec(macro.body, scope, &out);
  --call_depth_;
  if (!flow.ok()) return flow.status();
  return Value(std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Expressions.

absl::Status Evaluator::EvalArgs(const Expr& e, size_t first, Scope& scope,
                                 std::vector<Value>* args, Kwargs* kwargs) {
  for (size_t i = first; i < e.args.size(); ++i) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.args[i], scope));
    args->push_back(std::move(v));
  }
  for (const auto& [k, expr] : e.kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*expr, scope));
    kwargs->emplace_back(k, std::move(v));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Evaluator::CallValue(const Value& fn, const std::vector<Value>& args,
                                           const Kwargs& kwargs, size_t pos) {
  if (fn.is_undefined()) return UndefinedError(fn, pos);
  if (!fn.is_callable())
    return Err(pos, absl::StrCat("'", TypeName(fn), "' object is not callable"));
  RETURN_IF_ERROR(Step(pos));
  const size_t saved = call_pos_;
  call_pos_ = pos;
  absl::StatusOr<Value> result = fn.callable()->Call(*this, args, kwargs);
  call_pos_ = saved;
  if (!result.ok()) {
    if (!fn.callable()->native() || result.status().GetPayload(kRaisedPayload).has_value()) {
      return result.status();
    }
    return absl::Status(result.status().code(),
                        absl::StrCat(impl_.Where(pos), ": ", fn.callable()->Name(),
                                     "(): ", result.status().message()));
  }
  RETURN_IF_ERROR(CheckDepth(*result, pos));
  return result;
}

absl::StatusOr<Value> Evaluator::Eval(const Expr& e, Scope& scope) {
  DepthGuard guard(this);
  if (guard.exceeded()) return Limit(e.pos, "expression nested too deeply");
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.value;
    case Expr::Kind::kName: {
      const Value* v = scope.Find(e.name);
      if (v != nullptr) return *v;
      return Value::Undefined(absl::StrCat("'", e.name, "' is undefined"));
    }
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      for (const ExprPtr& a : e.args) {
        ASSIGN_OR_RETURN(Value v, Eval(*a, scope));
        items.push_back(std::move(v));
      }
      Value list = Value::List(std::move(items), e.kind == Expr::Kind::kTuple);
      RETURN_IF_ERROR(CheckDepth(list, e.pos));
      return list;
    }
    case Expr::Kind::kDict: {
      std::vector<std::pair<Value, Value>> items;
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        ASSIGN_OR_RETURN(Value k, Eval(*e.args[i], scope));
        if (k.is_list() && !k.is_tuple()) return Err(e.args[i]->pos, "unhashable type: 'list'");
        if (k.is_dict()) return Err(e.args[i]->pos, "unhashable type: 'dict'");
        if (k.is_undefined()) return UndefinedError(k, e.args[i]->pos);
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1], scope));
        items.emplace_back(std::move(k), std::move(v));
      }
      Value dict = Value::Dict(std::move(items));
      RETURN_IF_ERROR(CheckDepth(dict, e.pos));
      return dict;
    }
    case Expr::Kind::kGetAttr: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0], scope));
      return GetAttr(obj, e.name, e.pos);
    }
    case Expr::Kind::kGetItem: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0], scope));
      ASSIGN_OR_RETURN(Value key, Eval(*e.args[1], scope));
      return GetItem(obj, key, e.pos);
    }
    case Expr::Kind::kSlice: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0], scope));
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        if (e.args[i + 1]) {
          ASSIGN_OR_RETURN(parts[i], Eval(*e.args[i + 1], scope));
        } else {
          parts[i] = Value::None();
        }
      }
      return Slice(obj, parts[0], parts[1], parts[2], e.pos);
    }
    case Expr::Kind::kCall: {
      ASSIGN_OR_RETURN(Value fn, Eval(*e.args[0], scope));
      std::vector<Value> args;
      Kwargs kwargs;
      RETURN_IF_ERROR(EvalArgs(e, 1, scope, &args, &kwargs));
      return CallValue(fn, args, kwargs, e.pos);
    }
    case Expr::Kind::kFilter:
      return EvalFilter(e, scope);
    case Expr::Kind::kTest:
      return EvalTest(e, scope);
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.args[0], scope));
      if (v.is_undefined()) return UndefinedError(v, e.pos);
      const bool neg = e.kind == Expr::Kind::kNeg;
      if (v.is_float()) return Value(neg ? -v.float_value() : v.float_value());
      if (v.is_int() || v.is_bool()) {
        if (neg && v.int_value() == INT64_MIN) return Err(e.pos, "integer overflow");
        return Value(neg ? -v.int_value() : v.int_value());
      }
      return Err(e.pos, absl::StrCat("bad operand type for unary ", neg ? "-" : "+", ": '",
                                     TypeName(v), "'"));
    }
    case Expr::Kind::kNot: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.args[0], scope));
      return Value(!v.Truthy());
    }
    case Expr::Kind::kAnd: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.args[0], scope));
      if (!a.Truthy()) return a;
      return Eval(*e.args[1], scope);
    }
    case Expr::Kind::kOr: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.args[0], scope));
      if (a.Truthy()) return a;
      return Eval(*e.args[1], scope);
    }
    case Expr::Kind::kBinary: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.args[0], scope));
      ASSIGN_OR_RETURN(Value b, Eval(*e.args[1], scope));
      return Binary(e.name, a, b, e.pos);
    }
    case Expr::Kind::kCompare: {
      ASSIGN_OR_RETURN(Value left, Eval(*e.args[0], scope));
      for (size_t i = 0; i < e.ops.size(); ++i) {
        ASSIGN_OR_RETURN(Value right, Eval(*e.args[i + 1], scope));
        ASSIGN_OR_RETURN(bool ok, CompareOp(e.ops[i], left, right, e.pos));
        if (!ok) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case Expr::Kind::kCondExpr: {
      ASSIGN_OR_RETURN(Value cond, Eval(*e.args[0], scope));
      if (cond.Truthy()) return Eval(*e.args[1], scope);
      if (e.args[2]) return Eval(*e.args[2], scope);
      return Value::Undefined("the inline if expression evaluated to false and has no else");
    }
  }
  return Value();
}

absl::StatusOr<Value> Evaluator::GetAttr(const Value& obj, const std::string& name, size_t pos) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return UndefinedError(obj, pos);
    case Value::Kind::kDict: {
      if (DictMethods().count(name)) {
        return Value::FromCallable(std::make_shared<BoundMethod>(obj, name));
      }
      if (const Value* v = obj.Find(absl::string_view(name))) return *v;
      break;
    }
    case Value::Kind::kNamespace:
      if (const Value* v = obj.ns()->Find(name)) return *v;
      break;
    case Value::Kind::kString:
      if (StringMethods().count(name)) {
        return Value::FromCallable(std::make_shared<BoundMethod>(obj, name));
      }
      break;
    default:
      break;
  }
  return Value::Undefined(
      absl::StrCat("'", TypeName(obj), " object' has no attribute '", name, "'"));
}

absl::StatusOr<Value> Evaluator::GetItem(const Value& obj, const Value& key, size_t pos) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return UndefinedError(obj, pos);
    case Value::Kind::kDict:
      if (const Value* v = obj.Find(key)) return *v;
      break;
    case Value::Kind::kList:
    case Value::Kind::kString:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.int_value();
        if (obj.is_list()) {
          const int64_t n = static_cast<int64_t>(obj.items().size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return obj.items()[static_cast<size_t>(i)];
        } else if (IsAscii(obj.str())) {
          const int64_t n = static_cast<int64_t>(obj.str().size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) return Value(obj.str().substr(static_cast<size_t>(i), 1));
        } else {
          std::vector<char32_t> cps = CodePoints(obj.str());
          const int64_t n = static_cast<int64_t>(cps.size());
          if (i < 0) i += n;
          if (i >= 0 && i < n) {
            return Value(FromCodePoints(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
          }
        }
        return Value::Undefined(
            absl::StrCat("'", TypeName(obj), " object' has no element ", key.int_value()));
      }
      break;
    default:
      break;
  }
  if (key.is_string()) return GetAttr(obj, key.str(), pos);
  return Value::Undefined(absl::StrCat("'", TypeName(obj), " object' has no element ", key.Repr()));
}

absl::StatusOr<Value> Evaluator::AttrPath(const Value& obj, const std::string& path, size_t pos) {
  Value v = obj;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    int64_t index = 0;
    if (absl::SimpleAtoi(part, &index)) {
      ASSIGN_OR_RETURN(v, GetItem(v, Value(index), pos));
    } else {
      ASSIGN_OR_RETURN(v, GetItem(v, Value(std::string(part)), pos));
    }
  }
  return v;
}

absl::StatusOr<Value> Evaluator::Slice(const Value& obj, const Value& start, const Value& stop,
                                       const Value& step_v, size_t pos) {
  for (const Value* v : {&start, &stop, &step_v}) {
    if (!v->is_none() && !v->is_int() && !v->is_bool()) {
      if (v->is_undefined()) return UndefinedError(*v, pos);
      return Err(pos, "slice indices must be integers or None");
    }
  }
  const int64_t step = step_v.is_none() ? 1 : step_v.int_value();
  if (step == 0) return Err(pos, "slice step cannot be zero");
  if (obj.is_undefined()) return UndefinedError(obj, pos);
  if (obj.is_list()) {
    const auto& items = obj.items();
    std::vector<Value> out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(items.size()), start, stop, step)) {
      out.push_back(items[static_cast<size_t>(i)]);
    }
    return Value::List(std::move(out), obj.is_tuple());
  }
  if (obj.is_string()) {
    if (IsAscii(obj.str())) {
      const std::string& s = obj.str();
      std::string out;
      for (int64_t i : SliceIndices(static_cast<int64_t>(s.size()), start, stop, step)) {
        out += s[static_cast<size_t>(i)];
      }
      return Value(std::move(out));
    }
    std::vector<char32_t> cps = CodePoints(obj.str());
    std::string out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(cps.size()), start, stop, step)) {
      internal::AppendUtf8(cps[static_cast<size_t>(i)], &out);
    }
    return Value(std::move(out));
  }
  return Err(pos, absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
}

absl::StatusOr<std::vector<Value>> Evaluator::Iterate(const Value& v, size_t pos) {
  RETURN_IF_ERROR(Work(v.items().size() + v.dict_items().size() + v.str().size(), pos));
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();
    case Value::Kind::kList:
      return v.items();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& kv : v.dict_items()) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      const std::string& s = v.str();
      size_t p = 0;
      while (p < s.size()) {
        const size_t start = p;
        internal::NextCodePoint(s, &p);
        chars.emplace_back(s.substr(start, p - start));
      }
      return chars;
    }
    default:
      return Err(pos, absl::StrCat("'", TypeName(v), "' object is not iterable"));
  }
}

absl::StatusOr<int64_t> Evaluator::Length(const Value& v, size_t pos) const {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CodePointCount(v.str()));
    case Value::Kind::kList:
      return static_cast<int64_t>(v.items().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict_items().size());
    default:
      return Err(pos, absl::StrCat("object of type '", TypeName(v), "' has no len()"));
  }
}

absl::StatusOr<Value> Evaluator::Binary(const std::string& op, const Value& a, const Value& b,
                                        size_t pos) {
  if (op == "~") {
    ASSIGN_OR_RETURN(std::string s, StrOf(a, pos));
    ASSIGN_OR_RETURN(std::string t, StrOf(b, pos));
    RETURN_IF_ERROR(CheckSize(s.size() + t.size(), pos));
    return Value(s + t);
  }
  if (a.is_undefined()) return UndefinedError(a, pos);
  if (b.is_undefined()) return UndefinedError(b, pos);
  auto type_error = [&]() {
    return Err(pos, absl::StrCat("unsupported operand type(s) for ", op, ": '", TypeName(a),
                                 "' and '", TypeName(b), "'"));
  };
  const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
  const bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      RETURN_IF_ERROR(CheckSize(a.str().size() + b.str().size(), pos));
      return Value(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      RETURN_IF_ERROR(CheckItems(a.items().size() + b.items().size(), pos));
      std::vector<Value> items = a.items();
      items.insert(items.end(), b.items().begin(), b.items().end());
      return Value::List(std::move(items), a.is_tuple());
    }
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.int_value(), b.int_value(), &r))
        return Err(pos, "integer overflow");
      return Value(r);
    }
    if (nums) return Value(a.AsDouble() + b.AsDouble());
    return type_error();
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.int_value(), b.int_value(), &r))
        return Err(pos, "integer overflow");
      return Value(r);
    }
    if (nums) return Value(a.AsDouble() - b.AsDouble());
    return type_error();
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.int_value(), b.int_value(), &r))
        return Err(pos, "integer overflow");
      return Value(r);
    }
    if (nums) return Value(a.AsDouble() * b.AsDouble());
    const Value* seq = (a.is_string() || a.is_list()) ? &a : &b;
    const Value* count = seq == &a ? &b : &a;
    if ((seq->is_string() || seq->is_list()) && (count->is_int() || count->is_bool())) {
      const int64_t n = std::max<int64_t>(0, count->int_value());
      const size_t unit =
          seq->is_string() ? seq->str().size() : seq->items().size() * sizeof(Value);
      if (unit == 0) return seq->is_string() ? Value("") : Value::List({}, seq->is_tuple());
      if (static_cast<uint64_t>(n) > limits_.max_output_bytes / unit) {
        return CheckSize(SIZE_MAX, pos);
      }
      RETURN_IF_ERROR(CheckSize(static_cast<size_t>(n) * unit, pos));
      if (seq->is_string()) {
        std::string out;
        for (int64_t i = 0; i < n; ++i) out += seq->str();
        return Value(std::move(out));
      }
      std::vector<Value> items;
      for (int64_t i = 0; i < n; ++i) {
        items.insert(items.end(), seq->items().begin(), seq->items().end());
      }
      return Value::List(std::move(items), seq->is_tuple());
    }
    return type_error();
  }
  if (op == "/") {
    if (!nums) return type_error();
    if (b.AsDouble() == 0) return Err(pos, "division by zero");
    return Value(a.AsDouble() / b.AsDouble());
  }
  if (op == "//" || op == "%") {
    if (!nums) {
      if (op == "%" && a.is_string()) return PercentFormat(a.str(), b, pos);
      return type_error();
    }
    if (b.AsDouble() == 0) return Err(pos, op == "%" ? "modulo by zero" : "division by zero");
    if (ints) {
      const int64_t x = a.int_value();
      const int64_t y = b.int_value();
      if (x == INT64_MIN && y == -1) {
        if (op == "%") return Value(int64_t{0});
        return Err(pos, "integer overflow");
      }
      int64_t q = x / y;
      int64_t r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        --q;
        r += y;
      }
      return Value(op == "//" ? q : r);
    }
    const double x = a.AsDouble();
    const double y = b.AsDouble();
    if (op == "//") return Value(std::floor(x / y));
    double r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value(r);
  }
  if (op == "**") {
    if (!nums) return type_error();
    if (ints && b.int_value() >= 0) {
      int64_t base = a.int_value();
      int64_t exp = b.int_value();
      int64_t result = 1;
      while (exp > 0) {
        if (exp & 1) {
          if (__builtin_mul_overflow(result, base, &result)) return Err(pos, "integer overflow");
        }
        exp >>= 1;
        if (exp > 0 && __builtin_mul_overflow(base, base, &base))
          return Err(pos, "integer overflow");
      }
      return Value(result);
    }
    return Value(std::pow(a.AsDouble(), b.AsDouble()));
  }
  return Err(pos, absl::StrCat("unknown operator '", op, "'"));
}

// Python's printf-style `format % args`: %s %r %d %i %f %F %e %E %g %G %x %X %o %c and %%, with
// flags (-+ 0#), width and precision; no %(name)s mappings and no `*` widths.
absl::StatusOr<Value> Evaluator::PercentFormat(const std::string& format, const Value& args,
                                               size_t pos) {
  std::vector<Value> values = args.is_tuple() ? args.items() : std::vector<Value>{args};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    size_t j = i + 1;
    std::string spec = "%";
    while (j < format.size() && std::strchr("-+ 0#", format[j]) != nullptr) spec += format[j++];
    while (j < format.size() && absl::ascii_isdigit(static_cast<unsigned char>(format[j]))) {
      spec += format[j++];
    }
    if (j < format.size() && format[j] == '.') {
      spec += format[j++];
      while (j < format.size() && absl::ascii_isdigit(static_cast<unsigned char>(format[j]))) {
        spec += format[j++];
      }
    }
    if (j >= format.size()) return Err(pos, "incomplete format");
    const char type = format[j];
    i = j;
    if (spec.size() > 12) return Err(pos, "format width or precision too long");
    if (type == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) return Err(pos, "not enough arguments for format string");
    const Value& v = values[next++];
    char buf[512];
    switch (type) {
      case 's':
      case 'r': {
        ASSIGN_OR_RETURN(std::string text, type == 's' ? StrOf(v, pos) : Value(v.Repr()).str());
        spec += 's';
        if (spec == "%s") {
          out += text;
        } else {
          // Width and precision count code points in Python; pad/cut by hand.
          std::vector<char32_t> cps = CodePoints(text);
          const size_t dot = spec.find('.');
          const bool left = spec.find('-') != std::string::npos;
          size_t width = 0;
          for (size_t k = 1; k < (dot == std::string::npos ? spec.size() - 1 : dot); ++k) {
            if (absl::ascii_isdigit(static_cast<unsigned char>(spec[k]))) {
              width = width * 10 + static_cast<size_t>(spec[k] - '0');
            }
          }
          if (dot != std::string::npos) {
            size_t precision = 0;
            for (size_t k = dot + 1; k + 1 < spec.size(); ++k) {
              precision = precision * 10 + static_cast<size_t>(spec[k] - '0');
            }
            if (cps.size() > precision) cps.resize(precision);
          }
          std::string body = FromCodePoints(cps, 0, cps.size());
          const std::string pad(width > cps.size() ? width - cps.size() : 0, ' ');
          out += left ? body + pad : pad + body;
        }
        break;
      }
      case 'd':
      case 'i':
      case 'x':
      case 'X':
      case 'o':
      case 'c': {
        if (!v.is_number()) {
          return Err(pos, absl::StrCat("%", std::string(1, type),
                                       " format: a number is required, not ", TypeName(v)));
        }
        const long long n = v.is_float() ? static_cast<long long>(v.float_value())
                                         : static_cast<long long>(v.int_value());
        if (type == 'c') {
          if (n < 0 || n > 0x10FFFF) return Err(pos, "%c arg not in range(0x110000)");
          internal::AppendUtf8(static_cast<char32_t>(n), &out);
          break;
        }
        spec += type == 'i' ? std::string("lld") : absl::StrCat("ll", std::string(1, type));
        std::snprintf(buf, sizeof(buf), spec.c_str(), n);
        out += buf;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!v.is_number()) {
          return Err(pos, absl::StrCat("must be real number, not ", TypeName(v)));
        }
        spec += type;
        std::snprintf(buf, sizeof(buf), spec.c_str(), v.AsDouble());
        out += buf;
        break;
      default:
        return Err(pos, absl::StrCat("unsupported format character '", std::string(1, type), "'"));
    }
    RETURN_IF_ERROR(CheckSize(out.size(), pos));
  }
  if (next < values.size()) return Err(pos, "not all arguments converted during string formatting");
  return Value(std::move(out));
}

absl::StatusOr<int> Evaluator::Compare(const Value& a, const Value& b, const std::string& op,
                                       size_t pos) const {
  if (a.is_undefined()) return UndefinedError(a, pos);
  if (b.is_undefined()) return UndefinedError(b, pos);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      const double x = a.AsDouble(), y = b.AsDouble();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    return a.int_value() < b.int_value() ? -1 : a.int_value() > b.int_value() ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.str().compare(b.str());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return Compare(x[i], y[i], op, pos);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return Err(pos, absl::StrCat("'", op, "' not supported between instances of '", TypeName(a),
                               "' and '", TypeName(b), "'"));
}

absl::StatusOr<bool> Evaluator::Contains(const Value& container, const Value& item, size_t pos) {
  RETURN_IF_ERROR(Work(container.items().size() + container.str().size() / 64, pos));
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) return UndefinedError(item, pos);
        return Err(pos, absl::StrCat("'in <string>' requires string as left operand, not ",
                                     TypeName(item)));
      }
      return absl::StrContains(container.str(), item.str());
    case Value::Kind::kList:
      for (const Value& v : container.items()) {
        if (v.Equals(item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      return container.Find(item) != nullptr;
    default:
      return Err(pos, absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
  }
}

absl::StatusOr<bool> Evaluator::CompareOp(const std::string& op, const Value& a, const Value& b,
                                          size_t pos) {
  if (op == "==" || op == "!=") {
    RETURN_IF_ERROR(Work(a.items().size() + a.dict_items().size() + a.str().size() / 64, pos));
    return a.Equals(b) == (op == "==");
  }
  if (op == "in") return Contains(b, a, pos);
  if (op == "notin") {
    ASSIGN_OR_RETURN(bool in, Contains(b, a, pos));
    return !in;
  }
  ASSIGN_OR_RETURN(int c, Compare(a, b, op, pos));
  if (op == "<") return c < 0;
  if (op == ">") return c > 0;
  if (op == "<=") return c <= 0;
  return c >= 0;
}

// ---------------------------------------------------------------------------------------------
// Filters and tests.

absl::StatusOr<Value> Evaluator::EvalFilter(const Expr& e, Scope& scope) {
  Value subject;
  if (e.args[0]) {
    ASSIGN_OR_RETURN(subject, Eval(*e.args[0], scope));
  } else if (block_subject_ != nullptr) {
    subject = *block_subject_;
  }
  std::vector<Value> args;
  Kwargs kwargs;
  RETURN_IF_ERROR(EvalArgs(e, 1, scope, &args, &kwargs));
  ASSIGN_OR_RETURN(Value result, ApplyFilter(e.name, subject, args, kwargs, e.pos));
  RETURN_IF_ERROR(CheckDepth(result, e.pos));
  return result;
}

absl::StatusOr<Value> Evaluator::EvalTest(const Expr& e, Scope& scope) {
  ASSIGN_OR_RETURN(Value subject, Eval(*e.args[0], scope));
  std::vector<Value> args;
  Kwargs kwargs;
  RETURN_IF_ERROR(EvalArgs(e, 1, scope, &args, &kwargs));
  for (const auto& kv : kwargs) args.push_back(kv.second);
  ASSIGN_OR_RETURN(bool result, ApplyTest(e.name, subject, args, e.pos));
  return Value(result != e.negated);
}

absl::StatusOr<bool> Evaluator::ApplyTest(const std::string& name, const Value& v,
                                          const std::vector<Value>& args, size_t pos) {
  auto arg = [&](size_t i) -> absl::StatusOr<Value> {
    if (i >= args.size()) return Err(pos, absl::StrCat("test '", name, "' needs an argument"));
    return args[i];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.bool_value();
  if (name == "false") return v.is_bool() && !v.bool_value();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    ASSIGN_OR_RETURN(Value r,
                     StringMethod(v.str(), name == "lower" ? "islower" : "isupper", {}, {}, pos));
    return r.bool_value();
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int() && !v.is_bool()) {
      return Err(pos, absl::StrCat("test '", name, "' needs an integer, not '", TypeName(v), "'"));
    }
    if (name == "odd") return v.int_value() % 2 != 0;
    if (name == "even") return v.int_value() % 2 == 0;
    ASSIGN_OR_RETURN(Value d, arg(0));
    if (!d.is_int() || d.int_value() == 0) return Err(pos, "divisibleby needs a non-zero integer");
    return v.int_value() % d.int_value() == 0;
  }
  static const std::map<std::string, std::string> kCompare = {
      {"eq", "=="}, {"equalto", "=="}, {"==", "=="},      {"ne", "!="},
      {"!=", "!="}, {"lt", "<"},       {"lessthan", "<"}, {"<", "<"},
      {"le", "<="}, {"<=", "<="},      {"gt", ">"},       {"greaterthan", ">"},
      {">", ">"},   {"ge", ">="},      {">=", ">="},      {"in", "in"}};
  if (auto it = kCompare.find(name); it != kCompare.end()) {
    ASSIGN_OR_RETURN(Value other, arg(0));
    return CompareOp(it->second, v, other, pos);
  }
  if (name == "sameas") {
    ASSIGN_OR_RETURN(Value other, arg(0));
    if (v.kind() != other.kind()) return false;
    if (v.identity() != nullptr) return v.identity() == other.identity();
    return v.Equals(other);
  }
  return Err(pos, absl::StrCat("no test named '", name, "'"));
}

absl::StatusOr<std::vector<Value>> Evaluator::SortedItems(std::vector<Value> items,
                                                          const Value* attribute,
                                                          bool case_sensitive, bool reverse,
                                                          size_t pos) {
  std::vector<Value> keys;
  for (const Value& item : items) {
    Value key = item;
    if (attribute != nullptr && !attribute->is_none()) {
      ASSIGN_OR_RETURN(key, AttrPath(item, attribute->Str(), pos));
    }
    if (!case_sensitive && key.is_string()) key = Value(MapCase(key.str(), false));
    keys.push_back(std::move(key));
  }
  RETURN_IF_ERROR(
      Work(items.size() * (1 + static_cast<uint64_t>(std::log2(items.size() + 1))), pos));
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    if (!error.ok()) return false;
    absl::StatusOr<int> c = Compare(keys[x], keys[y], "<", pos);
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  RETURN_IF_ERROR(error);
  std::vector<Value> out;
  for (size_t i : order) out.push_back(std::move(items[i]));
  return out;
}

absl::StatusOr<Value> Evaluator::SelectOrReject(const Value& seq, const std::vector<Value>& args,
                                                bool by_attr, bool select, size_t pos) {
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(seq, pos));
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (args.empty()) return Err(pos, "selectattr/rejectattr need an attribute name");
    ASSIGN_OR_RETURN(attr, StrOf(args[0], pos));
    next = 1;
  }
  std::string test;
  if (next < args.size()) {
    ASSIGN_OR_RETURN(test, StrOf(args[next++], pos));
  }
  const std::vector<Value> test_args(args.begin() + static_cast<std::ptrdiff_t>(next), args.end());
  std::vector<Value> out;
  for (const Value& item : items) {
    Value subject = item;
    if (by_attr) {
      ASSIGN_OR_RETURN(subject, AttrPath(item, attr, pos));
    }
    bool ok;
    if (test.empty()) {
      ok = subject.Truthy();
    } else {
      ASSIGN_OR_RETURN(ok, ApplyTest(test, subject, test_args, pos));
    }
    if (ok == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> Evaluator::ToJsonFilter(const Value& v, const std::vector<Value>& args,
                                              const Kwargs& kwargs, size_t pos) {
  // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  ArgReader r(args, kwargs);
  const bool ensure_ascii = r.Bool(0, "ensure_ascii", false);
  int indent = -1;
  if (const Value* i = r.Get(1, "indent"); i != nullptr && !i->is_none()) {
    if (i->is_int()) {
      indent = static_cast<int>(std::clamp<int64_t>(i->int_value(), 0, 64));
    } else if (i->is_string()) {
      return Err(pos, "tojson: a string indent is not supported");
    }
  }
  std::string item_sep, key_sep;
  if (const Value* s = r.Get(2, "separators"); s != nullptr && !s->is_none()) {
    if (!s->is_list() || s->items().size() != 2 || !s->items()[0].is_string() ||
        !s->items()[1].is_string()) {
      return Err(pos, "tojson: separators must be a pair of strings");
    }
    item_sep = s->items()[0].str();
    key_sep = s->items()[1].str();
  }
  const bool sort_keys = r.Bool(3, "sort_keys", false);
  absl::StatusOr<std::string> json =
      v.ToJson(indent, item_sep, key_sep, sort_keys, limits_.max_output_bytes);
  if (!json.ok()) {
    return absl::Status(json.status().code(),
                        absl::StrCat(impl_.Where(pos), ": ", json.status().message()));
  }
  if (ensure_ascii) {
    std::string ascii;
    size_t p = 0;
    while (p < json->size()) {
      const char32_t cp = internal::NextCodePoint(*json, &p);
      if (cp < 0x80) {
        ascii += static_cast<char>(cp);
      } else if (cp < 0x10000) {
        absl::StrAppend(&ascii, absl::StrFormat("\\u%04x", static_cast<unsigned>(cp)));
      } else {
        const uint32_t c = static_cast<uint32_t>(cp) - 0x10000;
        absl::StrAppend(
            &ascii, absl::StrFormat("\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF)));
      }
    }
    json = std::move(ascii);
  }
  RETURN_IF_ERROR(CheckSize(json->size(), pos));
  return Value(*std::move(json));
}

absl::StatusOr<Value> Evaluator::ApplyFilter(const std::string& name, const Value& v,
                                             const std::vector<Value>& args, const Kwargs& kwargs,
                                             size_t pos) {
  ArgReader r(args, kwargs);
  static const auto* kTextFilters = new std::set<std::string>{
      "string", "trim",        "upper",   "lower",  "title",  "capitalize", "escape",
      "e",      "forceescape", "replace", "indent", "center", "wordcount"};
  std::string text;
  if (kTextFilters->count(name)) {
    ASSIGN_OR_RETURN(text, StrOf(v, pos));
  }
  if (name == "safe") return v;
  if (name == "string") return Value(text);
  if (name == "trim") return Value(StripChars(text, r.Get(0, "chars"), true, true));
  if (name == "length" || name == "count") {
    ASSIGN_OR_RETURN(int64_t n, Length(v, pos));
    return Value(n);
  }
  if (name == "tojson") return ToJsonFilter(v, args, kwargs, pos);
  if (name == "upper" || name == "lower") return Value(MapCase(text, name == "upper"));
  if (name == "title") return Value(JinjaTitle(text));
  if (name == "capitalize") return Value(PyCapitalize(text));
  if (name == "escape" || name == "e" || name == "forceescape") return Value(HtmlEscape(text));
  if (name == "default" || name == "d") {
    const Value* def = r.Get(0, "default_value");
    const bool boolean = r.Bool(1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.Truthy())) return def ? *def : Value("");
    return v;
  }
  if (name == "replace") {
    if (v.is_undefined()) return Value("");
    return StringMethod(text, "replace", args, kwargs, pos);
  }
  if (name == "list") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    return Value::List(std::move(items));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::List({});
    if (!v.is_dict())
      return Err(pos, absl::StrCat("items: expected a dict, got '", TypeName(v), "'"));
    std::vector<Value> out;
    for (const auto& [k, val] : v.dict_items()) out.push_back(Value::List({k, val}, true));
    return Value::List(std::move(out));
  }
  if (name == "dictsort") {
    if (!v.is_dict())
      return Err(pos, absl::StrCat("dictsort: expected a dict, got '", TypeName(v), "'"));
    const bool case_sensitive = r.Bool(0, "case_sensitive", false);
    const Value* by = r.Get(1, "by");
    const bool reverse = r.Bool(2, "reverse", false);
    const Value attr(by != nullptr && by->Str() == "value" ? "1" : "0");
    std::vector<Value> pairs;
    for (const auto& [k, val] : v.dict_items()) pairs.push_back(Value::List({k, val}, true));
    ASSIGN_OR_RETURN(pairs, SortedItems(std::move(pairs), &attr, case_sensitive, reverse, pos));
    return Value::List(std::move(pairs));
  }
  if (name == "first" || name == "last") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    if (items.empty())
      return Value::Undefined(absl::StrCat("no ", name, " item, sequence was empty"));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<char32_t> cps = CodePoints(v.str());
      std::reverse(cps.begin(), cps.end());
      return Value(FromCodePoints(cps, 0, cps.size()));
    }
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "join") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    const Value* sep = r.Get(0, "d");
    const Value* attribute = r.Get(1, "attribute");
    const std::string separator = sep ? sep->Str() : "";
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += separator;
      Value item = items[i];
      if (attribute != nullptr && !attribute->is_none()) {
        ASSIGN_OR_RETURN(item, AttrPath(item, attribute->Str(), pos));
      }
      ASSIGN_OR_RETURN(std::string piece, StrOf(item, pos));
      out += piece;
      RETURN_IF_ERROR(CheckSize(out.size(), pos));
    }
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject")
    return SelectOrReject(v, args, false, name == "select", pos);
  if (name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(v, args, true, name == "selectattr", pos);
  }
  if (name == "map") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    const Value* attribute = nullptr;
    const Value* def = nullptr;
    for (const auto& [k, val] : kwargs) {
      if (k == "attribute") attribute = &val;
      if (k == "default") def = &val;
    }
    std::vector<Value> out;
    if (attribute != nullptr) {
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(Value x, AttrPath(item, attribute->Str(), pos));
        if (x.is_undefined() && def != nullptr) x = *def;
        out.push_back(std::move(x));
      }
      return Value::List(std::move(out));
    }
    if (args.empty()) return Err(pos, "map needs a filter name or attribute=");
    ASSIGN_OR_RETURN(const std::string filter, StrOf(args[0], pos));
    const std::vector<Value> rest(args.begin() + 1, args.end());
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value x, ApplyFilter(filter, item, rest, {}, pos));
      out.push_back(std::move(x));
    }
    return Value::List(std::move(out));
  }
  if (name == "attr") {
    const Value* a = r.Get(0, "name");
    if (a == nullptr) return Err(pos, "attr needs a name");
    return GetAttr(v, a->Str(), pos);
  }
  if (name == "unique") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    const bool case_sensitive = r.Bool(0, "case_sensitive", false);
    const Value* attribute = r.Get(1, "attribute");
    std::vector<Value> seen, out;
    for (const Value& item : items) {
      Value key = item;
      if (attribute != nullptr && !attribute->is_none()) {
        ASSIGN_OR_RETURN(key, AttrPath(item, attribute->Str(), pos));
      }
      if (!case_sensitive && key.is_string()) key = Value(MapCase(key.str(), false));
      RETURN_IF_ERROR(Work(seen.size(), pos));
      bool dup = false;
      for (const Value& s : seen) dup = dup || s.Equals(key);
      if (!dup) {
        seen.push_back(key);
        out.push_back(item);
      }
    }
    return Value::List(std::move(out));
  }
  if (name == "sort") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    ASSIGN_OR_RETURN(
        items, SortedItems(std::move(items), r.Get(2, "attribute"),
                           r.Bool(1, "case_sensitive", false), r.Bool(0, "reverse", false), pos));
    return Value::List(std::move(items));
  }
  if (name == "min" || name == "max") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    if (items.empty())
      return Value::Undefined(absl::StrCat("no ", name, " item, sequence was empty"));
    ASSIGN_OR_RETURN(items, SortedItems(std::move(items), r.Get(1, "attribute"),
                                        r.Bool(0, "case_sensitive", false), false, pos));
    return name == "min" ? items.front() : items.back();
  }
  if (name == "sum") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v, pos));
    const Value* attribute = r.Get(0, "attribute");
    const Value* start = r.Get(1, "start");
    Value total = start ? *start : Value(0);
    for (const Value& item : items) {
      Value x = item;
      if (attribute != nullptr && !attribute->is_none()) {
        ASSIGN_OR_RETURN(x, AttrPath(item, attribute->Str(), pos));
      }
      ASSIGN_OR_RETURN(total, Binary("+", total, x, pos));
    }
    return total;
  }
  if (name == "abs") {
    if (v.is_float()) return Value(std::fabs(v.float_value()));
    if (v.is_int() || v.is_bool()) {
      if (v.int_value() == INT64_MIN) return Err(pos, "integer overflow");
      return Value(v.int_value() < 0 ? -v.int_value() : v.int_value());
    }
    return Err(pos, absl::StrCat("bad operand type for abs(): '", TypeName(v), "'"));
  }
  if (name == "int") {
    const Value* def = r.Get(0, "default");
    const Value fallback = def ? *def : Value(0);
    if (v.is_int() || v.is_bool()) return Value(v.int_value());
    if (v.is_float()) {
      if (!std::isfinite(v.float_value()) || std::fabs(v.float_value()) >= 9.2e18) return fallback;
      return Value(static_cast<int64_t>(v.float_value()));
    }
    if (v.is_string()) {
      const std::string s(absl::StripAsciiWhitespace(v.str()));
      int64_t i;
      if (absl::SimpleAtoi(s, &i)) return Value(i);
      double d;
      if (absl::SimpleAtod(s, &d) && std::isfinite(d) && std::fabs(d) < 9.2e18) {
        return Value(static_cast<int64_t>(d));
      }
    }
    return fallback;
  }
  if (name == "float") {
    const Value* def = r.Get(0, "default");
    const Value fallback = def ? *def : Value(0.0);
    if (v.is_number()) return Value(v.AsDouble());
    double d;
    if (v.is_string() && absl::SimpleAtod(absl::StripAsciiWhitespace(v.str()), &d)) return Value(d);
    return fallback;
  }
  if (name == "round") {
    if (!v.is_number())
      return Err(pos, absl::StrCat("round: expected a number, got '", TypeName(v), "'"));
    const Value* p = r.Get(0, "precision");
    const int64_t precision = p && p->is_int() ? std::clamp<int64_t>(p->int_value(), -20, 20) : 0;
    const Value* m = r.Get(1, "method");
    const std::string method = m ? m->Str() : "common";
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = v.AsDouble() * scale;
    double rounded;
    if (method == "ceil") {
      rounded = std::ceil(x);
    } else if (method == "floor") {
      rounded = std::floor(x);
    } else if (method == "common") {
      rounded = std::nearbyint(x);  // Python's round(): half to even.
    } else {
      return Err(pos, "round: method must be 'common', 'ceil' or 'floor'");
    }
    return Value(rounded / scale);
  }
  if (name == "indent") {
    const Value* w = r.Get(0, "width");
    std::string indention =
        w == nullptr ? "    "
        : w->is_string()
            ? w->str()
            : std::string(static_cast<size_t>(std::clamp<int64_t>(w->int_value(), 0, 1024)), ' ');
    const bool first = r.Bool(1, "first", false);
    const bool blank = r.Bool(2, "blank", false);
    std::vector<std::string> lines = SplitLines(text + "\n");
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) {
        out += '\n';
        if (blank || !lines[i].empty()) out += indention;
      }
      out += lines[i];
      RETURN_IF_ERROR(CheckSize(out.size(), pos));
    }
    if (first) out = indention + out;
    return Value(std::move(out));
  }
  if (name == "center") {
    const Value* w = r.Get(0, "width");
    const int64_t width = w && w->is_int() ? std::min<int64_t>(w->int_value(), 1 << 20) : 80;
    const std::string s = text;
    const int64_t len = static_cast<int64_t>(CodePointCount(s));
    if (width <= len) return Value(s);
    // Python's str.center: the extra space goes left when the padding and width are both odd.
    const int64_t pad = width - len;
    const int64_t left = pad / 2 + (pad & width & 1);
    return Value(std::string(static_cast<size_t>(left), ' ') + s +
                 std::string(static_cast<size_t>(pad - left), ' '));
  }
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    for (char32_t cp : CodePoints(text)) {
      const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
      const bool word = cp == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                        (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
      if (word && !in_word) ++words;
      in_word = word;
    }
    return Value(words);
  }
  return Err(pos, absl::StrCat("no filter named '", name, "'"));
}

// ---------------------------------------------------------------------------------------------
// Methods.

absl::StatusOr<Value> Evaluator::CallMethod(const Value& self, const std::string& name,
                                            const std::vector<Value>& args, const Kwargs& kwargs) {
  const size_t pos = call_pos_;
  if (self.is_string()) return StringMethod(self.str(), name, args, kwargs, pos);
  ArgReader r(args, kwargs);
  if (name == "items") {
    std::vector<Value> out;
    for (const auto& [k, v] : self.dict_items()) out.push_back(Value::List({k, v}, true));
    return Value::List(std::move(out));
  }
  if (name == "keys" || name == "values") {
    std::vector<Value> out;
    for (const auto& [k, v] : self.dict_items()) out.push_back(name == "keys" ? k : v);
    return Value::List(std::move(out));
  }
  if (name == "get") {
    const Value* key = r.Get(0, "key");
    if (key == nullptr) return Err(pos, "get() needs a key");
    if (const Value* v = self.Find(*key)) return *v;
    const Value* def = r.Get(1, "default");
    return def ? *def : Value::None();
  }
  return Err(pos, absl::StrCat("'", TypeName(self), "' object has no method '", name, "'"));
}

absl::StatusOr<Value> Evaluator::StringMethod(const std::string& s, const std::string& name,
                                              const std::vector<Value>& args, const Kwargs& kwargs,
                                              size_t pos) {
  RETURN_IF_ERROR(Work(s.size() / 64, pos));
  ArgReader r(args, kwargs);
  auto string_arg = [&](size_t i, absl::string_view arg_name) -> absl::StatusOr<std::string> {
    const Value* v = r.Get(i, arg_name);
    if (v == nullptr || !v->is_string()) {
      return Err(pos, absl::StrCat("str.", name, "() needs a string argument"));
    }
    return v->str();
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Value* chars = r.Get(0, "chars");
    if (chars != nullptr && chars->is_none()) chars = nullptr;
    return Value(StripChars(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "upper" || name == "lower") return Value(MapCase(s, name == "upper"));
  if (name == "title") return Value(PyTitle(s));
  if (name == "capitalize") return Value(PyCapitalize(s));
  if (name == "startswith" || name == "endswith") {
    const Value* prefix = r.Get(0, "prefix");
    if (prefix == nullptr) return Err(pos, absl::StrCat("str.", name, "() needs an argument"));
    std::vector<Value> options = prefix->is_list() ? prefix->items() : std::vector<Value>{*prefix};
    for (const Value& o : options) {
      if (!o.is_string()) return Err(pos, absl::StrCat("str.", name, "() needs strings"));
      if (name == "startswith" ? absl::StartsWith(s, o.str()) : absl::EndsWith(s, o.str())) {
        return Value(true);
      }
    }
    return Value(false);
  }
  if (name == "split" || name == "rsplit") {
    const Value* sep = r.Get(0, "sep");
    const Value* max_v = r.Get(1, "maxsplit");
    int64_t maxsplit = max_v && max_v->is_int() ? max_v->int_value() : -1;
    std::vector<Value> parts;
    if (sep == nullptr || sep->is_none()) {
      // Runs of whitespace; no empty strings.
      std::vector<char32_t> cps = CodePoints(s);
      if (name == "rsplit") std::reverse(cps.begin(), cps.end());
      size_t i = 0;
      while (i < cps.size()) {
        while (i < cps.size() && IsPySpace(cps[i])) ++i;
        if (i >= cps.size()) break;
        size_t j = i;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          j = cps.size();
          while (j > i && IsPySpace(cps[j - 1])) --j;
        } else {
          while (j < cps.size() && !IsPySpace(cps[j])) ++j;
        }
        std::vector<char32_t> word(cps.begin() + static_cast<std::ptrdiff_t>(i),
                                   cps.begin() + static_cast<std::ptrdiff_t>(j));
        if (name == "rsplit") std::reverse(word.begin(), word.end());
        parts.emplace_back(FromCodePoints(word, 0, word.size()));
        i = j;
      }
      if (name == "rsplit") std::reverse(parts.begin(), parts.end());
      return Value::List(std::move(parts));
    }
    if (!sep->is_string()) return Err(pos, "str.split() separator must be a string");
    const std::string& d = sep->str();
    if (d.empty()) return Err(pos, "empty separator");
    if (name == "split") {
      size_t start = 0;
      while (true) {
        const size_t found = (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit)
                                 ? std::string::npos
                                 : s.find(d, start);
        if (found == std::string::npos) {
          parts.emplace_back(s.substr(start));
          break;
        }
        parts.emplace_back(s.substr(start, found - start));
        start = found + d.size();
      }
    } else {
      size_t end = s.size();
      while (true) {
        const size_t found =
            (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) || end < d.size()
                ? std::string::npos
                : s.rfind(d, end - d.size());
        if (found == std::string::npos) {
          parts.emplace_back(s.substr(0, end));
          break;
        }
        parts.emplace_back(s.substr(found + d.size(), end - found - d.size()));
        end = found;
      }
      std::reverse(parts.begin(), parts.end());
    }
    return Value::List(std::move(parts));
  }
  if (name == "splitlines") {
    std::vector<Value> parts;
    for (std::string& line : SplitLines(s)) parts.emplace_back(std::move(line));
    return Value::List(std::move(parts));
  }
  if (name == "replace") {
    ASSIGN_OR_RETURN(std::string old_s, string_arg(0, "old"));
    ASSIGN_OR_RETURN(std::string new_s, string_arg(1, "new"));
    const Value* count_v = r.Get(2, "count");
    int64_t count = count_v && count_v->is_int() ? count_v->int_value() : -1;
    std::string out;
    if (old_s.empty()) {
      std::vector<char32_t> cps = CodePoints(s);
      for (size_t i = 0; i <= cps.size(); ++i) {
        if (count < 0 || static_cast<int64_t>(i) < count) out += new_s;
        if (i < cps.size()) internal::AppendUtf8(cps[i], &out);
        RETURN_IF_ERROR(CheckSize(out.size(), pos));
      }
      return Value(std::move(out));
    }
    size_t start = 0;
    int64_t done = 0;
    while (true) {
      const size_t found = (count >= 0 && done >= count) ? std::string::npos : s.find(old_s, start);
      if (found == std::string::npos) break;
      out.append(s, start, found - start);
      out += new_s;
      RETURN_IF_ERROR(CheckSize(out.size(), pos));
      start = found + old_s.size();
      ++done;
    }
    out.append(s, start, std::string::npos);
    return Value(std::move(out));
  }
  if (name == "find" || name == "rfind") {
    ASSIGN_OR_RETURN(std::string sub, string_arg(0, "sub"));
    const size_t found = name == "find" ? s.find(sub) : s.rfind(sub);
    if (found == std::string::npos) return Value(int64_t{-1});
    return Value(static_cast<int64_t>(CodePointCount(absl::string_view(s).substr(0, found))));
  }
  if (name == "count") {
    ASSIGN_OR_RETURN(std::string sub, string_arg(0, "sub"));
    if (sub.empty()) return Value(static_cast<int64_t>(CodePointCount(s) + 1));
    int64_t n = 0;
    for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
    return Value(n);
  }
  if (name == "join") {
    const Value* seq = r.Get(0, "iterable");
    if (seq == nullptr) return Err(pos, "str.join() needs an argument");
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(*seq, pos));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        return Err(pos, absl::StrCat("sequence item ", i, ": expected str instance, ",
                                     TypeName(items[i]), " found"));
      }
      if (i > 0) out += s;
      out += items[i].str();
      RETURN_IF_ERROR(CheckSize(out.size(), pos));
    }
    return Value(std::move(out));
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "islower" || name == "isupper") {
    std::vector<char32_t> cps = CodePoints(s);
    if (cps.empty()) return Value(false);
    bool any_cased = false;
    for (char32_t cp : cps) {
      const auto c = static_cast<utf8proc_int32_t>(cp);
      const auto cat = utf8proc_category(c);
      const bool alpha = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
      const bool digit = cat == UTF8PROC_CATEGORY_ND;
      if (name == "isdigit" && !digit) return Value(false);
      if (name == "isalpha" && !alpha) return Value(false);
      if (name == "isalnum" && !alpha && !digit && cat != UTF8PROC_CATEGORY_NL &&
          cat != UTF8PROC_CATEGORY_NO) {
        return Value(false);
      }
      if (name == "isspace" && !IsPySpace(cp)) return Value(false);
      if (name == "islower" || name == "isupper") {
        if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) {
          if (name == "islower") return Value(false);
          any_cased = true;
        } else if (cat == UTF8PROC_CATEGORY_LL) {
          if (name == "isupper") return Value(false);
          any_cased = true;
        }
      }
    }
    if (name == "islower" || name == "isupper") return Value(any_cased);
    return Value(true);
  }
  if (name == "format") {
    // Python str.format with {} / {0} / {name} fields and {{ }} escapes (no format specs).
    std::string out;
    size_t auto_index = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if (c == '{' && i + 1 < s.size() && s[i + 1] == '{') {
        out += '{';
        ++i;
      } else if (c == '}' && i + 1 < s.size() && s[i + 1] == '}') {
        out += '}';
        ++i;
      } else if (c == '{') {
        const size_t close = s.find('}', i);
        if (close == std::string::npos) return Err(pos, "str.format(): unmatched '{'");
        const std::string field = s.substr(i + 1, close - i - 1);
        const Value* v = nullptr;
        int64_t index = 0;
        if (field.empty()) {
          v = auto_index < args.size() ? &args[auto_index++] : nullptr;
        } else if (absl::SimpleAtoi(field, &index)) {
          v = index >= 0 && static_cast<size_t>(index) < args.size()
                  ? &args[static_cast<size_t>(index)]
                  : nullptr;
        } else {
          for (const auto& [k, kv] : kwargs) {
            if (k == field) v = &kv;
          }
        }
        if (v == nullptr)
          return Err(pos, absl::StrCat("str.format(): no value for '{", field, "}'"));
        out += v->Str();
        RETURN_IF_ERROR(CheckSize(out.size(), pos));
        i = close;
      } else {
        out += c;
      }
    }
    return Value(std::move(out));
  }
  return Err(pos, absl::StrCat("'str' object has no method '", name, "'"));
}

// ---------------------------------------------------------------------------------------------

Template::Template(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(absl::string_view source,
                                                          const ParseOptions& options) {
  if (!internal::IsValidUtf8(source)) {
    return absl::InvalidArgumentError("template is not valid UTF-8");
  }
  auto impl = std::make_unique<Impl>();
  // As Jinja2: every newline sequence becomes "\n", and one trailing newline is dropped.
  std::string& src = impl->source;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!options.keep_trailing_newline && !src.empty() && src.back() == '\n') src.pop_back();
  RETURN_IF_ERROR(ParseTemplate(src, options, impl.get()));
  return std::unique_ptr<Template>(new Template(std::move(impl)));
}

bool IsRaisedException(const absl::Status& status) {
  return status.GetPayload(kRaisedPayload).has_value();
}

absl::StatusOr<std::string> Template::Render(const std::map<std::string, Value>& globals,
                                             const Limits& limits) const {
  Evaluator ev(*impl_, limits);
  return ev.Run(globals);
}

}  // namespace swarm::tokenizer::jinja
