// The Jinja lexer and parser (see jinja.h): template text → tokens → syntax tree
// (jinja_internal.h). Both follow Jinja2 3.1's lexer.py and parser.py rule by rule, so that
// whitespace control and operator precedence come out the same.
#include <cstring>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "tokenizer/jinja_internal.h"
#include "tokenizer/tokenizer_internal.h"

namespace swarm::tokenizer::jinja {

std::string Template::Impl::Where(size_t pos) const {
  size_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < pos && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  const size_t end = std::min(pos, source.size());
  const size_t column =
      1 + CodePointCount(absl::string_view(source).substr(line_start, end - line_start));
  return absl::StrCat("line ", line, " column ", column);
}

namespace {

enum class Tok {
  kData,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  size_t pos;
  std::string text;  // Data, name, operator, or a literal's decoded string.
  Value value;       // Literals.
};

bool IsNameStart(char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Python's str.rstrip() (Unicode whitespace).
std::string RStripPy(absl::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t p = start;
    if (!IsPySpace(internal::NextCodePoint(s, &p))) break;
    end = start;
  }
  return std::string(s.substr(0, end));
}

// Length of the run of (Unicode) whitespace at s[pos...].
size_t SpanPySpace(absl::string_view s, size_t pos) {
  size_t p = pos;
  while (p < s.size()) {
    size_t next = p;
    if (!IsPySpace(internal::NextCodePoint(s, &next))) break;
    p = next;
  }
  return p - pos;
}

class Lexer {
 public:
  Lexer(absl::string_view src, const ParseOptions& options, const Template::Impl& impl)
      : src_(src), options_(options), impl_(impl) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t start = FindTagStart(pos);
      if (start == absl::string_view::npos) {
        Emit(Tok::kData, pos, std::string(src_.substr(pos)));
        break;
      }
      std::string text(src_.substr(pos, start - pos));
      const char kind = src_[start + 1];
      size_t p = start + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      // {% raw %}: everything up to {% endraw %} is text.
      size_t raw_body = 0;
      const bool raw = kind == '%' && MatchRawTag(p, "raw", &raw_body, /*trim=*/false);
      if (sign == '-') {
        text = RStripPy(text);
      } else if (sign != '+' && options_.lstrip_blocks && kind != '{') {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            SpanPySpace(text, l_pos) == text.size() - l_pos) {
          text.resize(l_pos);
        }
      }
      if (!text.empty()) Emit(Tok::kData, pos, std::move(text));
      if (raw) {
        ASSIGN_OR_RETURN(pos, LexRaw(start, raw_body, &line_starting));
      } else if (kind == '#') {
        ASSIGN_OR_RETURN(pos, LexComment(start, p, &line_starting));
      } else {
        ASSIGN_OR_RETURN(pos, LexTag(start, p, kind == '%', &line_starting));
      }
    }
    tokens_.push_back({Tok::kEof, src_.size(), "", Value()});
    return std::move(tokens_);
  }

 private:
  absl::Status Error(size_t pos, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(impl_.Where(pos), ": ", message));
  }

  void Emit(Tok type, size_t pos, std::string text, Value value = Value()) {
    tokens_.push_back({type, pos, std::move(text), std::move(value)});
  }

  size_t FindTagStart(size_t pos) const {
    while (true) {
      const size_t b = src_.find('{', pos);
      if (b == absl::string_view::npos || b + 1 >= src_.size()) return absl::string_view::npos;
      const char c = src_[b + 1];
      if (c == '{' || c == '%' || c == '#') return b;
      pos = b + 1;
    }
  }

  // At `p` (after "{%" and its sign): optional whitespace, `word`, optional whitespace and a
  // block end. On a match sets *after past the end (and its whitespace control).
  bool MatchRawTag(size_t p, absl::string_view word, size_t* after, bool trim) const {
    p += SpanPySpace(src_, p);
    if (!absl::StartsWith(src_.substr(p), word)) return false;
    p += word.size();
    p += SpanPySpace(src_, p);
    if (absl::StartsWith(src_.substr(p), "-%}")) {
      p += 3;
      p += SpanPySpace(src_, p);
    } else if (absl::StartsWith(src_.substr(p), "+%}")) {
      if (!trim) return false;
      p += 3;
    } else if (absl::StartsWith(src_.substr(p), "%}")) {
      p += 2;
      if (trim && options_.trim_blocks && p < src_.size() && src_[p] == '\n') ++p;
    } else {
      return false;
    }
    *after = p;
    return true;
  }

  absl::StatusOr<size_t> LexRaw(size_t start, size_t body, bool* line_starting) {
    size_t search = body;
    while (true) {
      const size_t tag = src_.find("{%", search);
      if (tag == absl::string_view::npos) return Error(start, "missing end of raw directive");
      size_t p = tag + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      size_t after = 0;
      if (!MatchRawTag(p, "endraw", &after, /*trim=*/true)) {
        search = tag + 2;
        continue;
      }
      std::string text(src_.substr(body, tag - body));
      if (sign == '-') {
        text = RStripPy(text);
      } else if (sign != '+' && options_.lstrip_blocks) {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || src_[body - 1] == '\n') && l_pos < text.size() &&
            SpanPySpace(text, l_pos) == text.size() - l_pos) {
          text.resize(l_pos);
        }
      }
      if (!text.empty()) Emit(Tok::kData, body, std::move(text));
      *line_starting = src_[after - 1] == '\n';
      return after;
    }
  }

  absl::StatusOr<size_t> LexComment(size_t start, size_t p, bool* line_starting) {
    const size_t end = src_.find("#}", p);
    if (end == absl::string_view::npos) return Error(start, "missing end of comment tag");
    const char sign = end > p ? src_[end - 1] : 0;
    size_t after = end + 2;
    if (sign == '-') {
      after += SpanPySpace(src_, after);
    } else if (sign != '+' && options_.trim_blocks && after < src_.size() && src_[after] == '\n') {
      ++after;
    }
    *line_starting = src_[after - 1] == '\n';
    return after;
  }

  absl::StatusOr<size_t> LexTag(size_t start, size_t p, bool block, bool* line_starting) {
    Emit(block ? Tok::kBlockBegin : Tok::kVarBegin, start, "");
    std::vector<char> brackets;
    while (true) {
      p += SpanPySpace(src_, p);
      if (p >= src_.size()) {
        return Error(start, block ? "unexpected end of template: the tag opened here has no '%}'"
                                  : "unexpected end of template: the tag opened here has no '}}'");
      }
      const absl::string_view rest = src_.substr(p);
      if (brackets.empty()) {
        size_t after = 0;
        if (block) {
          if (absl::StartsWith(rest, "+%}")) {
            after = p + 3;
          } else if (absl::StartsWith(rest, "-%}")) {
            after = p + 3;
            after += SpanPySpace(src_, after);
          } else if (absl::StartsWith(rest, "%}")) {
            after = p + 2;
            if (options_.trim_blocks && after < src_.size() && src_[after] == '\n') ++after;
          }
        } else {
          if (absl::StartsWith(rest, "-}}")) {
            after = p + 3;
            after += SpanPySpace(src_, after);
          } else if (absl::StartsWith(rest, "}}")) {
            after = p + 2;
          }
        }
        if (after != 0) {
          Emit(block ? Tok::kBlockEnd : Tok::kVarEnd, p, "");
          *line_starting = src_[after - 1] == '\n';
          return after;
        }
      }
      const char c = src_[p];
      if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        ASSIGN_OR_RETURN(p, LexNumber(p));
      } else if (IsNameStart(c)) {
        size_t e = p;
        while (e < src_.size() && IsNameChar(src_[e])) ++e;
        Emit(Tok::kName, p, std::string(src_.substr(p, e - p)));
        p = e;
      } else if (c == '"' || c == '\'') {
        ASSIGN_OR_RETURN(p, LexString(p));
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "/",
                                           "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                           "<",  ">",  "=",  ".",  ":",  "|",  ",", ";"};
        const char* op = nullptr;
        for (const char* candidate : kOps) {
          if (absl::StartsWith(rest, candidate)) {
            op = candidate;
            break;
          }
        }
        if (op == nullptr) {
          return Error(p, absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        const std::string o(op);
        if (o == "(" || o == "[" || o == "{") {
          brackets.push_back(o == "(" ? ')' : o == "[" ? ']' : '}');
        } else if (o == ")" || o == "]" || o == "}") {
          if (brackets.empty()) return Error(p, absl::StrCat("unexpected '", o, "'"));
          if (brackets.back() != o[0]) {
            return Error(p, absl::StrCat("unexpected '", o, "', expected '",
                                         std::string(1, brackets.back()), "'"));
          }
          brackets.pop_back();
        }
        Emit(Tok::kOp, p, o);
        p += o.size();
      }
    }
  }

  // Digits with optional '_' separators between them, starting at p; returns the end.
  size_t Digits(size_t p) const {
    size_t e = p;
    while (e < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[e]))) {
      ++e;
      if (e + 1 < src_.size() && src_[e] == '_' &&
          absl::ascii_isdigit(static_cast<unsigned char>(src_[e + 1]))) {
        ++e;
      }
    }
    return e;
  }

  absl::StatusOr<size_t> LexNumber(size_t p) {
    size_t e = Digits(p);
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' &&
        absl::ascii_isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      e = Digits(e + 1);
      is_float = true;
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[x]))) {
        e = Digits(x);
        is_float = true;
      }
    }
    std::string text;
    for (char c : src_.substr(p, e - p)) {
      if (c != '_') text += c;
    }
    if (is_float) {
      double d = 0;
      if (!absl::SimpleAtod(text, &d)) return Error(p, "malformed number");
      Emit(Tok::kFloat, p, text, Value(d));
    } else {
      int64_t i = 0;
      if (!absl::SimpleAtoi(text, &i)) return Error(p, "integer literal too large");
      Emit(Tok::kInt, p, text, Value(i));
    }
    return e;
  }

  static int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // A '...' or "..." literal with Python's escapes (as Jinja2 decodes them).
  absl::StatusOr<size_t> LexString(size_t p) {
    const char quote = src_[p];
    std::string out;
    size_t i = p + 1;
    while (true) {
      if (i >= src_.size()) return Error(p, "unterminated string literal");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) return Error(p, "unterminated string literal");
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < n; ++k) {
            const int h = i + k < src_.size() ? HexValue(src_[i + k]) : -1;
            if (h < 0)
              return Error(i - 2, absl::StrCat("truncated \\", std::string(1, e), " escape"));
            cp = cp * 16 + static_cast<uint32_t>(h);
          }
          i += static_cast<size_t>(n);
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return Error(i - 2, "escape names no Unicode scalar value");
          }
          internal::AppendUtf8(static_cast<char32_t>(cp), &out);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
              cp = cp * 8 + static_cast<uint32_t>(src_[i++] - '0');
            }
            internal::AppendUtf8(static_cast<char32_t>(cp), &out);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    Emit(Tok::kString, p, out, Value(out));
    return i + 1;
  }

  absl::string_view src_;
  const ParseOptions& options_;
  const Template::Impl& impl_;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------------------------
// Parser.

class Parser {
 public:
  Parser(std::vector<Token> tokens, const ParseOptions& options, const Template::Impl& impl)
      : tokens_(std::move(tokens)), options_(options), impl_(impl) {}

  absl::StatusOr<Body> ParseAll() {
    std::string which;
    ASSIGN_OR_RETURN(Body body, ParseBody({}, &which));
    return body;
  }

 private:
  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Peek(size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(absl::string_view op) const { return Cur().type == Tok::kOp && Cur().text == op; }
  bool IsName(absl::string_view name) const {
    return Cur().type == Tok::kName && Cur().text == name;
  }
  bool SkipOp(absl::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(absl::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }

  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Tok::kData:
        return "template data";
      case Tok::kVarBegin:
        return "'{{'";
      case Tok::kVarEnd:
        return "'}}'";
      case Tok::kBlockBegin:
        return "'{%'";
      case Tok::kBlockEnd:
        return "'%}'";
      case Tok::kString:
        return "a string";
      case Tok::kInt:
      case Tok::kFloat:
        return absl::StrCat("'", t.text, "'");
      case Tok::kEof:
        return "end of template";
      default:
        return absl::StrCat("'", t.text, "'");
    }
  }

  absl::Status Error(size_t pos, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(impl_.Where(pos), ": ", message));
  }
  absl::Status Unexpected(absl::string_view expected) const {
    return Error(Cur().pos, absl::StrCat("expected ", expected, ", got ", Describe(Cur())));
  }
  absl::Status ExpectOp(absl::string_view op) {
    if (!SkipOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Cur().type != Tok::kBlockEnd) return Unexpected("'%}'");
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Cur().type != Tok::kName) return Unexpected("a name");
    std::string name = Cur().text;
    Next();
    return name;
  }

  // Guards recursion: every nested statement or expression level passes through here.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser* p) : p_(p) { ++p_->depth_; }
    ~DepthGuard() { --p_->depth_; }
    absl::Status Check() const {
      if (p_->depth_ > p_->options_.max_nesting) {
        return absl::ResourceExhaustedError(absl::StrCat(p_->impl_.Where(p_->Cur().pos),
                                                         ": template nested deeper than ",
                                                         p_->options_.max_nesting, " levels"));
      }
      return absl::OkStatus();
    }

   private:
    Parser* p_;
  };

  // Parses nodes until a block tag named in `end_names` (consumed with its name; the caller
  // parses the rest of that tag) or the end of the template (only when end_names is empty).
  absl::StatusOr<Body> ParseBody(const std::vector<std::string>& end_names, std::string* which) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    Body body;
    while (true) {
      const Token& t = Cur();
      switch (t.type) {
        case Tok::kEof:
          if (!end_names.empty()) {
            return Error(t.pos, absl::StrCat("unexpected end of template: expected '",
                                             absl::StrJoin(end_names, "' or '"), "'"));
          }
          return body;
        case Tok::kData: {
          auto node = std::make_unique<Node>();
          node->kind = Node::Kind::kText;
          node->pos = t.pos;
          node->text = t.text;
          body.push_back(std::move(node));
          Next();
          break;
        }
        case Tok::kVarBegin: {
          auto node = std::make_unique<Node>();
          node->kind = Node::Kind::kOutput;
          node->pos = t.pos;
          Next();
          ASSIGN_OR_RETURN(node->expr,
                           ParseTuple(/*with_condexpr=*/true, /*explicit_parens=*/false));
          if (Cur().type != Tok::kVarEnd) return Unexpected("'}}'");
          Next();
          body.push_back(std::move(node));
          break;
        }
        case Tok::kBlockBegin: {
          Next();
          if (Cur().type != Tok::kName) return Unexpected("a statement name");
          const std::string name = Cur().text;
          for (const std::string& end : end_names) {
            if (name == end) {
              Next();
              *which = name;
              return body;
            }
          }
          ASSIGN_OR_RETURN(NodePtr node, ParseStatement());
          if (node) body.push_back(std::move(node));
          break;
        }
        default:
          return Unexpected("template data or a tag");
      }
    }
  }

  absl::StatusOr<NodePtr> ParseStatement() {
    const Token& t = Cur();
    const std::string name = t.text;
    auto node = std::make_unique<Node>();
    node->pos = t.pos;
    Next();
    std::string which;
    if (name == "if") {
      node->kind = Node::Kind::kIf;
      while (true) {
        ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(/*with_condexpr=*/false, false));
        RETURN_IF_ERROR(ExpectBlockEnd());
        ASSIGN_OR_RETURN(Body body, ParseBody({"elif", "else", "endif"}, &which));
        node->branches.emplace_back(std::move(cond), std::move(body));
        if (which == "elif") continue;
        if (which == "else") {
          RETURN_IF_ERROR(ExpectBlockEnd());
          ASSIGN_OR_RETURN(node->else_body, ParseBody({"endif"}, &which));
        }
        break;
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "for") {
      node->kind = Node::Kind::kFor;
      ASSIGN_OR_RETURN(node->targets, ParseTargets("in"));
      if (!SkipName("in")) return Unexpected("'in'");
      ASSIGN_OR_RETURN(node->expr, ParseTuple(/*with_condexpr=*/false, false, "recursive"));
      if (SkipName("if")) {
        ASSIGN_OR_RETURN(node->filter, ParseExpression(/*with_condexpr=*/true));
      }
      if (IsName("recursive")) return Error(Cur().pos, "recursive loops are not supported");
      RETURN_IF_ERROR(ExpectBlockEnd());
      ++loop_depth_;
      absl::StatusOr<Body> body = ParseBody({"endfor", "else"}, &which);
      --loop_depth_;
      if (!body.ok()) return body.status();
      node->body = *std::move(body);
      if (which == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        ASSIGN_OR_RETURN(node->else_body, ParseBody({"endfor"}, &which));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "set") {
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "." &&
          Peek(2).type == Tok::kName) {
        node->kind = Node::Kind::kSet;
        node->targets.push_back(Cur().text);
        node->attr = Peek(2).text;
        Next();
        Next();
        Next();
        RETURN_IF_ERROR(ExpectOp("="));
        ASSIGN_OR_RETURN(node->expr, ParseTuple(true, false));
        RETURN_IF_ERROR(ExpectBlockEnd());
        return node;
      }
      ASSIGN_OR_RETURN(node->targets, ParseTargets("="));
      if (SkipOp("=")) {
        node->kind = Node::Kind::kSet;
        ASSIGN_OR_RETURN(node->expr, ParseTuple(true, false));
        RETURN_IF_ERROR(ExpectBlockEnd());
        return node;
      }
      if (node->targets.size() != 1) return Unexpected("'='");
      node->kind = Node::Kind::kSetBlock;
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node->filter, ParseFilter(nullptr, /*start_inline=*/false));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(node->body, ParseBody({"endset"}, &which));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "macro") {
      node->kind = Node::Kind::kMacro;
      ASSIGN_OR_RETURN(node->text, ExpectName());
      RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        if (!node->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp(")")) break;
        ASSIGN_OR_RETURN(std::string param, ExpectName());
        ExprPtr def;
        if (SkipOp("=")) {
          ASSIGN_OR_RETURN(def, ParseExpression(true));
        } else if (!node->params.empty() && node->params.back().second) {
          return Error(Cur().pos, "parameter without a default follows one with a default");
        }
        node->params.emplace_back(std::move(param), std::move(def));
      }
      Next();
      RETURN_IF_ERROR(ExpectBlockEnd());
      const int saved_loops = loop_depth_;
      loop_depth_ = 0;
      absl::StatusOr<Body> body = ParseBody({"endmacro"}, &which);
      loop_depth_ = saved_loops;
      if (!body.ok()) return body.status();
      node->body = *std::move(body);
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "filter") {
      node->kind = Node::Kind::kFilterBlock;
      ASSIGN_OR_RETURN(node->filter, ParseFilter(nullptr, /*start_inline=*/true));
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(node->body, ParseBody({"endfilter"}, &which));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "with") {
      node->kind = Node::Kind::kWith;
      while (Cur().type != Tok::kBlockEnd) {
        if (!node->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
        ASSIGN_OR_RETURN(std::string target, ExpectName());
        RETURN_IF_ERROR(ExpectOp("="));
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        node->params.emplace_back(std::move(target), std::move(value));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(node->body, ParseBody({"endwith"}, &which));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "generation") {  // transformers' assistant-mask marker: renders its body.
      node->kind = Node::Kind::kScope;
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(node->body, ParseBody({"endgeneration"}, &which));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) return Error(node->pos, absl::StrCat("'", name, "' outside a loop"));
      node->kind = name == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    static const std::set<std::string> kUnsupported = {
        "extends", "block", "include", "import", "from", "call", "autoescape", "do", "trans"};
    if (kUnsupported.count(name)) {
      return Error(node->pos, absl::StrCat("the '", name, "' statement is not supported"));
    }
    return Error(node->pos, absl::StrCat("unknown or misplaced tag '", name, "'"));
  }

  // Assignment targets: `a`, `a, b` or `(a, b)`, up to `stop` (a name or operator).
  absl::StatusOr<std::vector<std::string>> ParseTargets(absl::string_view stop) {
    std::vector<std::string> targets;
    const bool parens = SkipOp("(");
    while (true) {
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      static const std::set<std::string> kReserved = {"true", "false", "none",
                                                      "True", "False", "None"};
      if (kReserved.count(name)) {
        return Error(tokens_[pos_ - 1].pos, absl::StrCat("cannot assign to '", name, "'"));
      }
      targets.push_back(std::move(name));
      if (!SkipOp(",")) break;
      if ((parens && IsOp(")")) || IsName(stop) || IsOp(stop)) break;
    }
    if (parens) RETURN_IF_ERROR(ExpectOp(")"));
    return targets;
  }

  bool IsTupleEnd(absl::string_view extra_end) const {
    const Tok t = Cur().type;
    if (t == Tok::kVarEnd || t == Tok::kBlockEnd || t == Tok::kEof) return true;
    if (IsOp(")")) return true;
    return !extra_end.empty() && IsName(extra_end);
  }

  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr, bool explicit_parens,
                                     absl::string_view extra_end = "") {
    const size_t start = Cur().pos;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsTupleEnd(extra_end)) break;
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression(with_condexpr));
      items.push_back(std::move(e));
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) return Unexpected("an expression");
    }
    auto e = MakeExpr(Expr::Kind::kTuple, start);
    e->args = std::move(items);
    return e;
  }

  static ExprPtr MakeExpr(Expr::Kind kind, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }

  static ExprPtr Binary(Expr::Kind kind, size_t pos, std::string op, ExprPtr a, ExprPtr b) {
    auto e = MakeExpr(kind, pos);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    if (!with_condexpr) return ParseOr();
    ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      const size_t pos = Cur().pos;
      Next();
      ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr otherwise;
      if (SkipName("else")) {
        ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      auto e = MakeExpr(Expr::Kind::kCondExpr, pos);
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(expr));
      e->args.push_back(std::move(otherwise));
      expr = std::move(e);
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      const size_t pos = Cur().pos;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = Binary(Expr::Kind::kOr, pos, "or", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      const size_t pos = Cur().pos;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = Binary(Expr::Kind::kAnd, pos, "and", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      RETURN_IF_ERROR(guard.Check());
      auto e = MakeExpr(Expr::Kind::kNot, Cur().pos);
      Next();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const size_t pos = Cur().pos;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    auto e = MakeExpr(Expr::Kind::kCompare, pos);
    e->args.push_back(std::move(first));
    while (true) {
      std::string op;
      if (Cur().type == Tok::kOp &&
          (Cur().text == "==" || Cur().text == "!=" || Cur().text == "<" || Cur().text == ">" ||
           Cur().text == "<=" || Cur().text == ">=")) {
        op = Cur().text;
        Next();
      } else if (IsName("in")) {
        op = "in";
        Next();
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().text == "in") {
        op = "notin";
        Next();
        Next();
      } else {
        break;
      }
      ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      e->ops.push_back(op);
      e->args.push_back(std::move(operand));
    }
    if (e->ops.empty()) return std::move(e->args[0]);
    return e;
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const size_t pos = Cur().pos;
      std::string op = Cur().text;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      left = Binary(Expr::Kind::kBinary, pos, op, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      const size_t pos = Cur().pos;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      left = Binary(Expr::Kind::kBinary, pos, "~", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const size_t pos = Cur().pos;
      std::string op = Cur().text;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      left = Binary(Expr::Kind::kBinary, pos, op, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      const size_t pos = Cur().pos;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      left = Binary(Expr::Kind::kBinary, pos, "**", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      auto e = MakeExpr(IsOp("-") ? Expr::Kind::kNeg : Expr::Kind::kPos, Cur().pos);
      Next();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      e->args.push_back(std::move(operand));
      node = std::move(e);
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    const Token& t = Cur();
    if (t.type == Tok::kName) {
      auto e = MakeExpr(Expr::Kind::kLiteral, t.pos);
      if (t.text == "true" || t.text == "True") {
        e->value = Value(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::None();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      Next();
      return e;
    }
    if (t.type == Tok::kString) {
      auto e = MakeExpr(Expr::Kind::kLiteral, t.pos);
      std::string s;
      while (Cur().type == Tok::kString) {
        s += Cur().text;
        Next();
      }
      e->value = Value(std::move(s));
      return e;
    }
    if (t.type == Tok::kInt || t.type == Tok::kFloat) {
      auto e = MakeExpr(Expr::Kind::kLiteral, t.pos);
      e->value = t.value;
      Next();
      return e;
    }
    if (IsOp("(")) {
      Next();
      ASSIGN_OR_RETURN(ExprPtr e, ParseTuple(true, /*explicit_parens=*/true));
      RETURN_IF_ERROR(ExpectOp(")"));
      return e;
    }
    if (IsOp("[")) {
      auto e = MakeExpr(Expr::Kind::kList, t.pos);
      Next();
      while (!IsOp("]")) {
        if (!e->args.empty()) RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp("]")) break;
        ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
        e->args.push_back(std::move(item));
      }
      Next();
      return e;
    }
    if (IsOp("{")) {
      auto e = MakeExpr(Expr::Kind::kDict, t.pos);
      Next();
      while (!IsOp("}")) {
        if (!e->args.empty()) RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp("}")) break;
        ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
        RETURN_IF_ERROR(ExpectOp(":"));
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->args.push_back(std::move(key));
        e->args.push_back(std::move(value));
      }
      Next();
      return e;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".") || IsOp("[")) {
        ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node, ParseFilter(std::move(node), false));
      } else if (IsName("is")) {
        ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    const size_t pos = Cur().pos;
    if (SkipOp(".")) {
      if (Cur().type == Tok::kName) {
        auto e = MakeExpr(Expr::Kind::kGetAttr, pos);
        e->name = Cur().text;
        e->args.push_back(std::move(node));
        Next();
        return e;
      }
      if (Cur().type == Tok::kInt) {
        auto e = MakeExpr(Expr::Kind::kGetItem, pos);
        e->args.push_back(std::move(node));
        auto index = MakeExpr(Expr::Kind::kLiteral, Cur().pos);
        index->value = Cur().value;
        e->args.push_back(std::move(index));
        Next();
        return e;
      }
      return Unexpected("an attribute name");
    }
    Next();  // '['
    std::vector<ExprPtr> subscripts;
    while (!IsOp("]")) {
      if (!subscripts.empty()) RETURN_IF_ERROR(ExpectOp(","));
      ASSIGN_OR_RETURN(ExprPtr s, ParseSubscribed());
      subscripts.push_back(std::move(s));
    }
    Next();
    if (subscripts.empty()) return Error(pos, "empty subscript");
    ExprPtr index;
    if (subscripts.size() == 1) {
      index = std::move(subscripts[0]);
    } else {
      index = MakeExpr(Expr::Kind::kTuple, pos);
      index->args = std::move(subscripts);
    }
    if (index->kind == Expr::Kind::kSlice && !index->args[0]) {
      index->args[0] = std::move(node);
      return index;
    }
    auto e = MakeExpr(Expr::Kind::kGetItem, pos);
    e->args.push_back(std::move(node));
    e->args.push_back(std::move(index));
    return e;
  }

  // One subscript: an expression or a slice a:b:c. A slice comes back as kSlice with a null
  // args[0] (the object, filled in by the caller).
  absl::StatusOr<ExprPtr> ParseSubscribed() {
    const size_t pos = Cur().pos;
    std::vector<ExprPtr> parts;
    if (IsOp(":")) {
      Next();
      parts.push_back(nullptr);
    } else {
      ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(true));
      if (!IsOp(":")) return first;
      Next();
      parts.push_back(std::move(first));
    }
    if (IsOp(":")) {
      parts.push_back(nullptr);
    } else if (!IsOp("]") && !IsOp(",")) {
      ASSIGN_OR_RETURN(ExprPtr stop, ParseExpression(true));
      parts.push_back(std::move(stop));
    } else {
      parts.push_back(nullptr);
    }
    if (SkipOp(":")) {
      if (!IsOp("]") && !IsOp(",")) {
        ASSIGN_OR_RETURN(ExprPtr step, ParseExpression(true));
        parts.push_back(std::move(step));
      } else {
        parts.push_back(nullptr);
      }
    } else {
      parts.push_back(nullptr);
    }
    auto e = MakeExpr(Expr::Kind::kSlice, pos);
    e->args.push_back(nullptr);
    for (auto& p : parts) e->args.push_back(std::move(p));
    return e;
  }

  // `(args, key=value)`, appended to e->args / e->kwargs.
  absl::Status ParseCallArgs(Expr* e) {
    RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
      first = false;
      if (IsOp("*") || IsOp("**")) return Error(Cur().pos, "*args and **kwargs are not supported");
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().text == "=") {
        std::string key = Cur().text;
        Next();
        Next();
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        if (!e->kwargs.empty()) {
          return Error(Cur().pos, "positional argument follows keyword argument");
        }
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        e->args.push_back(std::move(value));
      }
    }
    Next();
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr node) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    auto e = MakeExpr(Expr::Kind::kCall, Cur().pos);
    e->args.push_back(std::move(node));
    RETURN_IF_ERROR(ParseCallArgs(e.get()));
    return e;
  }

  absl::StatusOr<std::string> ParseDottedName() {
    ASSIGN_OR_RETURN(std::string name, ExpectName());
    while (IsOp(".") && Peek().type == Tok::kName) {
      Next();
      absl::StrAppend(&name, ".", Cur().text);
      Next();
    }
    return name;
  }

  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr node, bool start_inline) {
    while (IsOp("|") || start_inline) {
      DepthGuard guard(this);
      RETURN_IF_ERROR(guard.Check());
      if (!start_inline) Next();
      start_inline = false;
      auto e = MakeExpr(Expr::Kind::kFilter, Cur().pos);
      ASSIGN_OR_RETURN(e->name, ParseDottedName());
      e->args.push_back(std::move(node));
      if (IsOp("(")) RETURN_IF_ERROR(ParseCallArgs(e.get()));
      node = std::move(e);
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    auto e = MakeExpr(Expr::Kind::kTest, Cur().pos);
    Next();  // 'is'
    if (SkipName("not")) e->negated = true;
    ASSIGN_OR_RETURN(e->name, ParseDottedName());
    e->args.push_back(std::move(node));
    const Tok t = Cur().type;
    if (IsOp("(")) {
      RETURN_IF_ERROR(ParseCallArgs(e.get()));
    } else if ((t == Tok::kName || t == Tok::kString || t == Tok::kInt || t == Tok::kFloat ||
                IsOp("[") || IsOp("{")) &&
               !IsName("else") && !IsName("or") && !IsName("and")) {
      if (IsName("is")) return Error(Cur().pos, "tests cannot be chained with 'is'");
      ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
      ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
      e->args.push_back(std::move(arg));
    }
    return e;
  }

  std::vector<Token> tokens_;
  const ParseOptions& options_;
  const Template::Impl& impl_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::Status ParseTemplate(absl::string_view source, const ParseOptions& options,
                           Template::Impl* impl) {
  Lexer lexer(source, options, *impl);
  ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.Run());
  Parser parser(std::move(tokens), options, *impl);
  ASSIGN_OR_RETURN(impl->body, parser.ParseAll());
  return absl::OkStatus();
}

}  // namespace swarm::tokenizer::jinja
