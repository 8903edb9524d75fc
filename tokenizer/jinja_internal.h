// Private to the Jinja implementation (tokenizer/jinja*.cc): container storage, the syntax tree
// the parser builds and the evaluator walks, and the Python-compatible text helpers both use.
#ifndef SWARM_TOKENIZER_JINJA_INTERNAL_H_
#define SWARM_TOKENIZER_JINJA_INTERNAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tokenizer/jinja.h"

namespace swarm::tokenizer::jinja {

struct ListData {
  std::vector<Value> items;
  bool tuple = false;
};

struct DictData {
  std::vector<std::pair<Value, Value>> items;
  absl::flat_hash_map<std::string, size_t> string_index;  // String keys → position in items.
};

class Evaluator;

// Something a template can call: a native function, a macro, a bound method.
class Callable {
 public:
  virtual ~Callable() = default;
  virtual absl::StatusOr<Value> Call(Evaluator& ev, const std::vector<Value>& args,
                                     const Kwargs& kwargs) const = 0;
  virtual std::string Name() const = 0;
  // Native functions' errors carry no position; the evaluator adds the call's.
  virtual bool native() const { return true; }
};

// ---------------------------------------------------------------------------------------------
// Syntax tree. Positions are byte offsets into the (newline-normalised) source.

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kList,     // args: elements
    kTuple,    // args: elements
    kDict,     // args: key, value, key, value, ...
    kGetAttr,  // args[0].name
    kGetItem,  // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]] (null parts allowed)
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..], kwargs); args[0] null inside a filter block
    kTest,     // args[0] is [not] name(args[1..]); negated
    kNeg,      // -args[0]
    kPos,      // +args[0]
    kNot,      // not args[0]
    kBinary,   // args[0] op args[1]: + - * / // % ** ~
    kAnd,
    kOr,
    kCompare,   // args[0] ops[0] args[1] ops[1] args[2] ...: == != < > <= >= in notin
    kCondExpr,  // args[1] if args[0] else args[2] (args[2] may be null)
  };
  Kind kind;
  size_t pos = 0;
  Value value;
  std::string name;  // Variable, attribute, filter, test or operator.
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,         // text
    kOutput,       // {{ expr }}
    kIf,           // branches (cond, body); else_body
    kFor,          // targets in expr [if filter]: body; else_body
    kSet,          // targets = expr, or ns.attr = expr (attr non-empty)
    kSetBlock,     // targets[0] = rendered body, through filter (optional)
    kMacro,        // name(params) body
    kFilterBlock,  // body through filter
    kWith,         // assignments; body in a new scope
    kScope,        // body (generation blocks)
    kBreak,
    kContinue,
  };
  Kind kind;
  size_t pos = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // Macro parameters / with assignments.
};

struct Template::Impl {
  std::string source;  // Newline-normalised; positions index it.
  Body body;
  // "line L column C" of byte offset `pos`.
  std::string Where(size_t pos) const;
};

// Parses newline-normalised `source` into `impl->body`.
absl::Status ParseTemplate(absl::string_view source, const ParseOptions& options,
                           Template::Impl* impl);

// ---------------------------------------------------------------------------------------------
// Python-compatible text helpers.

// Python's str.isspace() for one code point.
bool IsPySpace(char32_t cp);
// Python repr() of a str.
std::string PyStrRepr(absl::string_view s);
// Python repr() of a float.
std::string PyFloatRepr(double d);
// Python str() / repr() of `v` appended to *out; false (out then partial) once *out would pass
// max_bytes.
bool AppendStr(const Value& v, size_t max_bytes, std::string* out);
bool AppendRepr(const Value& v, size_t max_bytes, std::string* out);
// Code points of valid UTF-8 text.
std::vector<char32_t> CodePoints(absl::string_view s);
std::string FromCodePoints(const std::vector<char32_t>& cps, size_t begin, size_t end);
size_t CodePointCount(absl::string_view s);

}  // namespace swarm::tokenizer::jinja

#endif  // SWARM_TOKENIZER_JINJA_INTERNAL_H_
