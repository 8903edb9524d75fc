// The Jinja subset (tokenizer/jinja.h) on its own: whitespace control, expressions, statements,
// filters, tests and methods against Python Jinja2 3.1.6 set up as transformers sets it up
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, transformers'
// tojson); the expected strings below are what that environment renders for the same template
// and variables. Then malformed templates (errors with line and column) and hostile ones (every
// limit is reached with a clean RESOURCE_EXHAUSTED, never a crash).
#include "tokenizer/jinja.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace swarm::tokenizer::jinja {
namespace {

using ::testing::HasSubstr;

// The variables every reference case renders with.
constexpr char kVariables[] =
    R"~~({"xs": [3, 1, 2], "d": {"b": 1, "a": [1, 2.5, null, true, "q\"uo'te"]}, "s": "  Héllo wörld  ", "msgs": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "tool_calls": [{"name": "f"}]}], "empty": "", "n": null, "u": "ünï😀"})~~";

std::map<std::string, Value> Variables() {
  std::map<std::string, Value> vars;
  const auto json = nlohmann::ordered_json::parse(kVariables);
  for (auto it = json.begin(); it != json.end(); ++it)
    vars[it.key()] = *Value::FromJson(it.value());
  return vars;
}

absl::StatusOr<std::string> Render(const std::string& source,
                                   const std::map<std::string, Value>& vars = {},
                                   const Limits& limits = {}) {
  absl::StatusOr<std::unique_ptr<Template>> t = Template::Parse(source);
  if (!t.ok()) return t.status();
  return (*t)->Render(vars, limits);
}

struct ReferenceCase {
  const char* name;
  const char* source;
  const char* expected;  // Python Jinja2's rendering.
};

const ReferenceCase kReference[] =
    {
        {"ws_minus", R"~~(a  {%- if true %} b {% endif -%}  c)~~", R"~~(a b c)~~"},
        {"ws_lstrip_trim", R"~~(x
    {% if true %}
    y
    {% endif %}
z)~~",
         R"~~(x
    y
z)~~"},
        {"ws_plus", R"~~(x
    {%+ if true %}y{% endif %})~~",
         R"~~(x
    y)~~"},
        {"ws_var", R"~~(a  {{- 'b' -}}  
 c)~~",
         R"~~(abc)~~"},
        {"ws_var_newline_kept", R"~~({{ 'a' }}
{{ 'b' }}
)~~",
         R"~~(a
b)~~"},
        {"ws_comment", R"~~(a {#- note -#} b
  {# line #}
c)~~",
         R"~~(ab
c)~~"},
        {"ws_raw", R"~~({% raw %}{{ not }}{% x %}{% endraw %}!)~~", R"~~({{ not }}{% x %}!)~~"},
        {"ws_trailing_newlines", R"~~(a

)~~",
         R"~~(a
)~~"},
        {"ws_for_lines", R"~~({% for x in xs %}
  - {{ x }}
{% endfor %}
end)~~",
         R"~~(  - 3
  - 1
  - 2
end)~~"},
        {"literal_braces", R"~~({{ '}}' }}{{ "{{" }}{{ '{%' ~ '%}' }})~~", R"~~(}}{{{%%})~~"},
        {"escapes", R"~~({{ 'a\nb\tc\\d\'e\x41\u00e9' }})~~",
         R"~~(a
b	c\d'eAé)~~"},
        {"precedence_filter",
         R"~~({{ 'a' + ' b ' | trim + 'c' }}|{{ xs | length - 1 }}|{{ -2 ** 2 }}|{{ 2 + 3 * 4 }}|{{ (2 + 3) * 4 }})~~",
         R"~~(abc|2|4|14|20)~~"},
        {"arith",
         R"~~({{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ 'ab' * 3 }} {{ 1 ~ 2 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 123456789.125 }})~~",
         R"~~(3 -4 2 3.5 2.0 1024 3.0 ababab 12 0.30000000000000004 1e+20 1e-05 123456789.125)~~"},
        {"compare",
         R"~~({{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 2 in xs }} {{ 'a' in d }} {{ [1, 2] == [1, 2] }} {{ d == {'a': d.a, 'b': 1} }} {{ 1 == 1.0 }} {{ 'b' < 'a' }})~~",
         R"~~(True False True True True True True True True False)~~"},
        {"logic",
         R"~~({{ n or 'dflt' }}|{{ 0 and 1 }}|{{ not empty }}|{{ 'y' if xs else 'n' }}|{{ 'y' if empty }}|{{ missing is defined }})~~",
         R"~~(dflt|0|True|y||False)~~"},
        {"truthiness",
         R"~~({% for v in [0, 1, '', 'x', [], [0], {}, none, 0.0] %}{{ 'T' if v else 'F' }}{% endfor %})~~",
         R"~~(FTFTFTFFF)~~"},
        {"slices",
         R"~~({{ xs[::-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[-1] }} {{ u[1:3] }} {{ u[::-1] }} {{ u|length }} {{ 'abcdef'[1:5:2] }} {{ xs[5] }}|)~~",
         R"~~([2, 1, 3] [1, 2] [3, 1] 2 nï 😀ïnü 4 bd |)~~"},
        {"repr",
         R"~~({{ d }} {{ xs }} {{ n }} {{ true }} {{ (1,) }} {{ (1, 'a') }} {{ 'it\'s' }} {{ ['it\'s', "q\""] }})~~",
         R"~~({'b': 1, 'a': [1, 2.5, None, True, 'q"uo\'te']} [3, 1, 2] None True (1,) (1, 'a') it's ["it's", 'q"'])~~"},
        {"loop_vars",
         R"~~({% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.cycle('a', 'b') }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %})~~",
         R"~~(1032TrueFalse3a1;2121FalseFalse3b32;3210FalseTrue3a1;)~~"},
        {"loop_filter_else",
         R"~~({% for x in xs if x > 1 %}{{ x }}{{ loop.last }},{% endfor %}|{% for x in [] %}x{% else %}none{% endfor %})~~",
         R"~~(3False,2True,|none)~~"},
        {"loop_controls",
         R"~~({% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %})~~",
         R"~~(0134)~~"},
        {"loop_unpack",
         R"~~({% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %})~~",
         R"~~(b=1;a=[1, 2.5, None, True, 'q"uo\'te'];ba37)~~"},
        {"scoping",
         R"~~({% set x = 1 %}{% for i in xs %}{% set x = i %}{% endfor %}{{ x }}|{% set ns = namespace(x=1, y='a') %}{% for i in xs %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}{{ ns.y }}|{% if true %}{% set z = 5 %}{% endif %}{{ z }})~~",
         R"~~(1|7a|5)~~"},
        {"macro",
         R"~~({% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(punct='.', name='c') }})~~",
         R"~~(Hi a! Hi b? Hi c.)~~"},
        {"set_block_filter_block",
         R"~~({% set body %}  Hello {{ 'x' }}  {% endset %}[{{ body }}]{% filter upper %}up {{ 'me' }}{% endfilter %}{% set t | trim %}  spaced  {% endset %}[{{ t }}])~~",
         R"~~([  Hello x  ]UP ME[spaced])~~"},
        {"filters_text",
         R"~~({{ s|trim }}|{{ s|upper }}|{{ s|lower }}|{{ 'hello world-x'|title }}|{{ 'hELLO'|capitalize }}|{{ 'aXbX'|replace('X', '-') }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ '<a&b>'|e }}|{{ 'xx'|center(6) }}|{{ 'one two  three'|wordcount }})~~",
         R"~~(Héllo wörld|  HÉLLO WÖRLD  |  héllo wörld  |Hello World-X|Hello|a-b-|bba|&lt;a&amp;b&gt;|  xx  |3)~~"},
        {"filters_seq",
         R"~~({{ xs|sort }} {{ xs|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ xs|first }} {{ xs|last }} {{ xs|reverse|list }} {{ xs|sum }} {{ xs|min }} {{ xs|max }} {{ [1, 2, 1, 3]|unique|list }} {{ xs|join(', ') }} {{ 'abc'|list }} {{ d|list }})~~",
         R"~~([1, 2, 3] [3, 2, 1] ['A', 'b', 'c'] 3 2 [2, 1, 3] 6 1 3 [1, 2, 3] 3, 1, 2 ['a', 'b', 'c'] ['b', 'a'])~~"},
        {"filters_select",
         R"~~({{ msgs|selectattr('role', 'equalto', 'user')|list|length }} {{ msgs|rejectattr('role', 'equalto', 'user')|map(attribute='role')|join(',') }} {{ xs|select('odd')|list }} {{ xs|reject('odd')|list }} {{ msgs|selectattr('tool_calls', 'defined')|map(attribute='content')|first }} {{ ['a', 'b']|map('upper')|join }} {{ msgs|map(attribute='missing', default='-')|join }})~~",
         R"~~(1 system,assistant [3, 1] [2] yo AB ---)~~"},
        {"filters_dict",
         R"~~({{ d|items|list }} {{ d|dictsort }} {{ d|length }} {{ d.get('b') }} {{ d.get('zz', 'no') }} {{ d.keys()|list }} {{ d.values()|list|length }} {{ d['a'][1] }} {{ d.a.0 }})~~",
         R"~~([('b', 1), ('a', [1, 2.5, None, True, 'q"uo\'te'])] [('a', [1, 2.5, None, True, 'q"uo\'te']), ('b', 1)] 2 1 no ['b', 'a'] 2 2.5 1)~~"},
        {"filters_num",
         R"~~({{ '42'|int + 1 }} {{ 'x'|int }} {{ 3.9|int }} {{ '2.5'|float }} {{ -3|abs }} {{ 2.5|round }} {{ 3.14159|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ xs|length is divisibleby 3 }})~~",
         R"~~(43 0 3 2.5 3 2.0 3.14 3.0 True)~~"},
        {"filters_default",
         R"~~({{ missing|default('dflt') }} {{ empty|default('dflt') }} {{ empty|default('dflt', true) }} {{ n|d('x') }} {{ missing|length }} {{ missing|trim }}|{{ missing|list }})~~",
         R"~~(dflt  dflt None 0 |[])~~"},
        {"filters_indent",
         R"~~({{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }})~~",
         R"~~(a
    b

    c|  a
  b|a
  
  b)~~"},
        {"tojson",
         R"~~({{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ xs|tojson(separators=(',', ':')) }}|{{ {'z': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ u|tojson }}|{{ u|tojson(ensure_ascii=true) }}|{{ 'a\n\u0001"'|tojson }}|{{ [1.0, 1e20, -0.5, 100] | tojson }}|{{ {}|tojson(indent=4) }}|{{ [[]]|tojson(indent=1) }})~~",
         R"~~({"b": 1, "a": [1, 2.5, null, true, "q\"uo'te"]}|{
  "b": 1,
  "a": [
    1,
    2.5,
    null,
    true,
    "q\"uo'te"
  ]
}|[3,1,2]|{"a": 2, "z": 1}|"ünï😀"|"\u00fcn\u00ef\ud83d\ude00"|"a\n\u0001\""|[1.0, 1e+20, -0.5, 100]|{}|[
 []
])~~"},
        {"tests",
         R"~~({{ n is none }} {{ xs is iterable }} {{ s is iterable }} {{ d is mapping }} {{ xs is mapping }} {{ 1 is number }} {{ 1.5 is integer }} {{ true is boolean }} {{ false is false }} {{ 1 is true }} {{ s is string }} {{ 4 is even }} {{ 3 is odd }} {{ 'ab' is lower }} {{ 2 is equalto 2 }} {{ 3 is gt 2 }} {{ 2 is in xs }} {{ n is not none }} {{ msgs[0].nope is defined }} {{ raise_exception is callable }})~~",
         R"~~(True True True True False True False True True False True True True True True True True False False True)~~"},
        {"string_methods",
         R"~~({{ s.strip() }}|{{ '--a--'.strip('-') }}|{{ '\n\nx\n'.lstrip('\n') }}|{{ 'x\n\n'.rstrip('\n') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a-b-c'.rsplit('-', 1) }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.startswith(('x', 'h')) }}|{{ 'hello'.endswith('lo') }}|{{ 'hello world'.title() }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ 'a.b.c'.replace('.', '/') }}|{{ 'abc'.find('c') }}|{{ 'banana'.count('a') }}|{{ '-'.join(['a', 'b']) }}|{{ '{} and {name}'.format(1, name='x') }}|{{ 'x</think>y'.split('</think>')[-1] }})~~",
         R"~~(Héllo wörld|a|x
|x|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|['a-b', 'c']|True|True|True|Hello World|HELLOhello|a/b/c|2|3|a-b|1 and x|y)~~"},
        {"dict_literal",
         R"~~({% set m = {'role': 'user', 'n': 1, 2: 'two'} %}{{ m.role }}{{ m['n'] }}{{ m[2] }}{{ m|length }}{{ m }})~~",
         R"~~(user1two3{'role': 'user', 'n': 1, 2: 'two'})~~"},
        {"reassign_messages",
         R"~~({% set msgs = msgs[1:] %}{{ msgs|length }}{% for m in msgs %}{{ m.role }}{% endfor %}{{ msgs[0]['content'] }})~~",
         R"~~(2userassistanthi)~~"},
        {"with", R"~~({% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a is defined }})~~",
         R"~~(3False)~~"},
        {"concat_undefined", R"~~([{{ missing ~ 'x' }}][{{ missing }}])~~", R"~~([x][])~~"},
        {"range",
         R"~~({{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(3, 0, -1)|list }})~~",
         R"~~([0, 1, 2] [1, 4, 7] [3, 2, 1])~~"},
        {"percent_format",
         R"~~({{ '%s and %d; %5.2f|%-4s|%r|%%|%x|%03d|%.2s' % ('a', 3, 3.14159, 'ab', 'q', 255, 7, 'xyz') }}|{{ 'n=%s' % 5 }}|{{ '%s' % [1, 'a'] }}|{{ '%5s|%c' % ('ü', 233) }})~~",
         R"~~(a and 3;  3.14|ab  |'q'|%|ff|007|xy|n=5|[1, 'a']|    ü|é)~~"},
};

class ReferenceTest : public ::testing::TestWithParam<ReferenceCase> {};

TEST_P(ReferenceTest, RendersLikeJinja2) {
  absl::StatusOr<std::string> out = Render(GetParam().source, Variables());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(Jinja2, ReferenceTest, ::testing::ValuesIn(kReference),
                         [](const ::testing::TestParamInfo<ReferenceCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(Jinja, GenerationBlockRendersItsBody) {
  EXPECT_EQ(*Render("{% generation %}gen{{ 1 }}{% endgeneration %}"), "gen1");
}

TEST(Jinja, OptionsOff) {
  ParseOptions options;
  options.trim_blocks = false;
  options.lstrip_blocks = false;
  options.keep_trailing_newline = true;
  auto t = Template::Parse("  {% if true %}\nx\n{% endif %}\n", options);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Render({}), "  \nx\n\n");
}

TEST(Jinja, CarriageReturnsAreNewlines) {
  EXPECT_EQ(*Render("{% if true %}\r\na\r\n{% endif %}\r\nb"), "a\nb");
}

// ---------------------------------------------------------------------------------------------
// Malformed templates: InvalidArgument naming the line and column.

struct ErrorCase {
  const char* source;
  const char* message;  // A substring of the error.
};

TEST(JinjaErrors, ParseErrorsHavePositions) {
  const ErrorCase cases[] = {
      {"{{ x", "line 1 column 1: unexpected end of template: the tag opened here has no '}}'"},
      {"a\n  {% if x",
       "line 2 column 3: unexpected end of template: the tag opened here has no '%}'"},
      {"{% if x %}y",
       "line 1 column 12: unexpected end of template: expected 'elif' or 'else' or 'endif'"},
      {"ok\n{% endfor %}", "line 2 column 4: unknown or misplaced tag 'endfor'"},
      {"hello\n{{ 1 + }}", "line 2 column 8: expected an expression, got '}}'"},
      {"{% for in xs %}{% endfor %}", "line 1 column 11: expected 'in', got 'xs'"},
      {"{{ (1 }}", "line 1 column 7: unexpected '}'"},
      {"{{ 'abc }}", "line 1 column 4: unterminated string literal"},
      {"{# open", "line 1 column 1: missing end of comment tag"},
      {"{% raw %}x", "line 1 column 1: missing end of raw directive"},
      {"{% break %}", "line 1 column 4: 'break' outside a loop"},
      {"{% extends 'base' %}", "the 'extends' statement is not supported"},
      {"{% for x in xs recursive %}{% endfor %}", "recursive loops are not supported"},
      {"{% frobnicate %}", "unknown or misplaced tag 'frobnicate'"},
      {"{{ x | }}", "expected a name, got '}}'"},
      {"{{ 1 $ 2 }}", "line 1 column 6: unexpected character '$'"},
      {"{{ 'é' }}{{ 1 2 }}", "line 1 column 15: expected '}}', got '2'"},
      {"{% set true = 1 %}", "cannot assign to 'true'"},
  };
  for (const ErrorCase& c : cases) {
    absl::StatusOr<std::unique_ptr<Template>> t = Template::Parse(c.source);
    ASSERT_FALSE(t.ok()) << c.source;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.message)) << c.source;
  }
  EXPECT_THAT(std::string(Template::Parse("\xff").status().message()), HasSubstr("UTF-8"));
}

TEST(JinjaErrors, RenderErrorsHavePositions) {
  const auto vars = Variables();
  const ErrorCase cases[] = {
      {"{{ missing.attr }}", "line 1 column 11: 'missing' is undefined"},
      {"\n  {{ missing + 'a' }}", "line 2 column 14: 'missing' is undefined"},
      {"{{ 'a' + 1 }}", "line 1 column 8: unsupported operand type(s) for +: 'str' and 'int'"},
      {"{{ 1 / 0 }}", "division by zero"},
      {"{{ xs | nofilter }}", "no filter named 'nofilter'"},
      {"{{ xs is nottest }}", "no test named 'nottest'"},
      {"{{ n.x.y }}", "'NoneType object' has no attribute 'x'"},
      {"{{ 1 < 'a' }}", "'<' not supported between instances of 'int' and 'str'"},
      {"{% for x in 5 %}{% endfor %}", "'int' object is not iterable"},
      {"{{ xs() }}", "'list' object is not callable"},
      {"{{ missing|tojson }}", "'missing' is undefined (not JSON serializable)"},
      {"{% set a, b = xs %}", "cannot unpack 3 values into 2 names"},
      {"{% set x.attr = 1 %}", "it is not a namespace"},
      {"{{ 9223372036854775807 + 1 }}", "integer overflow"},
      {"{{ 'x'.split('') }}", "empty separator"},
      {"{{ xs[::0] }}", "slice step cannot be zero"},
      {"{{ range(1, 2, 0) }}", "line 1 column 9: range(): range() step must not be zero"},
  };
  for (const ErrorCase& c : cases) {
    absl::StatusOr<std::string> out = Render(c.source, vars);
    ASSERT_FALSE(out.ok()) << c.source << " rendered " << *out;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(c.message)) << c.source;
    EXPECT_FALSE(IsRaisedException(out.status()));
  }
}

TEST(JinjaErrors, RaiseExceptionCarriesExactlyTheMessage) {
  auto t = Template::Parse("x{{ raise_exception('Roles must alternate: ' ~ 3) }}");
  ASSERT_TRUE(t.ok());
  absl::StatusOr<std::string> out = (*t)->Render({});
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Roles must alternate: 3");
  EXPECT_TRUE(IsRaisedException(out.status()));
  // Raised inside a macro, it is still the template's own message.
  out = Render("{% macro m() %}{{ raise_exception('deep') }}{% endmacro %}{{ m() }}");
  EXPECT_EQ(out.status().message(), "deep");
  EXPECT_TRUE(IsRaisedException(out.status()));
}

TEST(JinjaErrors, NativeFunctionsErrorsGetThePosition) {
  std::map<std::string, Value> vars;
  vars["f"] = Value::Function(
      "f", [](const std::vector<Value>& args, const Kwargs& kwargs) -> absl::StatusOr<Value> {
        if (args.size() == 2 && kwargs.size() == 1 && kwargs[0].first == "k") {
          return Value(args[0].int_value() + args[1].int_value() + kwargs[0].second.int_value());
        }
        return absl::InvalidArgumentError("bad arguments");
      });
  EXPECT_EQ(*Render("{{ f(1, 2, k=3) }}", vars), "6");
  EXPECT_EQ(Render("\n {{ f() }}", vars).status().message(), "line 2 column 6: f(): bad arguments");
}

// ---------------------------------------------------------------------------------------------
// Hostile templates and data: every cap holds.

TEST(JinjaLimits, RecursionIsCapped) {
  absl::StatusOr<std::string> out =
      Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("macro calls nested deeper than 64"));
  Limits limits;
  limits.max_call_depth = 3;
  out = Render(
      "{% macro f(n) %}{{ n }}{% if n < 5 %}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}", {},
      limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  limits.max_call_depth = 10;
  EXPECT_EQ(*Render("{% macro f(n) %}{{ n }}{% if n < 5 %}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                    "{{ f(0) }}",
                    {}, limits),
            "012345");
}

TEST(JinjaLimits, DeepNestingIsRefusedAtParse) {
  const std::string parens = std::string(10000, '(') + "1" + std::string(10000, ')');
  auto t = Template::Parse("{{ " + parens + " }}");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("nested deeper than 128 levels"));
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_EQ(Template::Parse(ifs).status().code(), absl::StatusCode::kResourceExhausted);
  std::string nots = "{{ ";
  for (int i = 0; i < 5000; ++i) nots += "not ";
  EXPECT_EQ(Template::Parse(nots + "1 }}").status().code(), absl::StatusCode::kResourceExhausted);
  std::string filters = "{{ 1";
  for (int i = 0; i < 20000; ++i) filters += "|string";
  // A long flat chain is fine to parse; it is just long.
  EXPECT_TRUE(Template::Parse(filters + " }}").ok());
}

TEST(JinjaLimits, OutputAndStringSizeAreCapped) {
  Limits limits;
  limits.max_output_bytes = 10000;
  auto out = Render("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}", {}, limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  // Doubling a string through a namespace stops at the cap (default 64 MiB) instead of 2^100.
  out = Render(
      "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
      "{% endfor %}{{ ns.s|length }}");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  out = Render("{{ 'ab' * 100000000000 }}", {}, limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  out = Render("{{ range(100000000000)|length }}", {}, limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JinjaLimits, SharedPiecesCannotMultiplyIntoHugeText) {
  // 2000 references to one 1000-byte string: cheap as a list, 2 MB as text (limit 1 MB).
  Limits limits;
  limits.max_output_bytes = 1 << 20;
  for (const char* source :
       {"{{ ['x' * 1000] * 2000 }}", "{{ (['x' * 1000] * 2000)|tojson }}",
        "{{ (['x' * 1000] * 2000)|join }}", "{{ (['x' * 1000] * 2000)|string|length }}"}) {
    auto out = Render(source, {}, limits);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted) << source;
  }
  EXPECT_EQ(*Render("[{{ '' * 100000000000 }}]"), "[]");
  EXPECT_EQ(*Render("{{ ([] * 100000000000)|length }}"), "0");
}

TEST(JinjaLimits, QuadraticWorkIsCounted) {
  Limits limits;
  limits.max_steps = 1000000;
  auto out = Render("{{ range(50000)|unique|list|length }}", {}, limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  out =
      Render("{% set l = range(20000)|list %}{% for i in l %}{{ i in l }}{% endfor %}", {}, limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*Render("{{ range(1000)|unique|list|length }}", {}, limits), "1000");
}

TEST(JinjaLimits, StepsAreCapped) {
  Limits limits;
  limits.max_steps = 100000;
  auto out = Render("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                    {}, limits);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("more than 100000 steps"));
}

TEST(JinjaLimits, ValueDepthAndCyclesAreRefused) {
  auto out = Render(
      "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}"
      "{% endfor %}{{ ns.l|tojson }}");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("nested deeper than 256"));
  out = Render("{% set ns = namespace() %}{% set ns.me = ns %}");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(out.status().message()),
              HasSubstr("a namespace cannot hold a namespace"));
  out = Render("{% set ns = namespace() %}{% set ns.me = [1, {'a': ns}] %}");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  out = Render("{% set ns = namespace() %}{% set other = namespace(x=ns) %}");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);

  std::string deep(1000, '[');
  deep += std::string(1000, ']');
  absl::StatusOr<Value> v = Value::FromJson(nlohmann::ordered_json::parse(deep));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("deeper than 256"));
}

// ---------------------------------------------------------------------------------------------
// Value on its own.

TEST(JinjaValue, PythonReprAndJson) {
  EXPECT_EQ(Value(0.1).Repr(), "0.1");
  EXPECT_EQ(Value(1e16).Repr(), "1e+16");
  EXPECT_EQ(Value(1e15).Repr(), "1000000000000000.0");
  EXPECT_EQ(Value(0.0001).Repr(), "0.0001");
  EXPECT_EQ(Value(-2.5e-7).Repr(), "-2.5e-07");
  EXPECT_EQ(Value(-0.0).Repr(), "-0.0");
  EXPECT_EQ(Value("tab\there\x01\u00a0\u00e9'").Repr(), "\"tab\\there\\x01\\xa0\u00e9'\"");
  const auto json =
      nlohmann::ordered_json::parse(R"({"z": [1, 2.0, "\u00e9\n"], "a": {}, "n": null})");
  Value v = *Value::FromJson(json);
  EXPECT_EQ(*v.ToJson(), R"({"z": [1, 2.0, "é\n"], "a": {}, "n": null})");
  EXPECT_EQ(v.Str(), "{'z': [1, 2.0, 'é\\n'], 'a': {}, 'n': None}");
  EXPECT_TRUE(v.Equals(*Value::FromJson(
      nlohmann::ordered_json::parse(R"({"a": {}, "n": null, "z": [1.0, 2, "é\n"]})"))));
  EXPECT_EQ(Value::FromJson(nlohmann::json::parse("18446744073709551615"))->Repr(),
            "1.8446744073709552e+19");
}

}  // namespace
}  // namespace swarm::tokenizer::jinja
