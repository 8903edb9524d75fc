// Text-level stages of the tokenizer pipeline: UTF-8 helpers, the PCRE2 wrapper, patterns,
// normalizers and pre-tokenizers (see tokenizer_internal.h).
#include <algorithm>
#include <cstdlib>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tokenizer/tokenizer_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

namespace swarm::tokenizer::internal {

// ---------------------------------------------------------------------------------------------
// UTF-8.

namespace {

// For the sequence starting at s[i] (i < s.size()), returns how many bytes form the longest
// prefix that is a well-formed (possibly incomplete) UTF-8 sequence, and the length the full
// sequence needs. A stray byte yields {0, 1}.
std::pair<int, int> ScanSequence(absl::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {1, 1};
  int need;
  unsigned char lo = 0x80, hi = 0xBF;  // Allowed range of the second byte.
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0, 1};
  }
  int have = 1;
  for (int k = 1; k < need && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    const bool ok = (k == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++have;
  }
  return {have, need};
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    auto [have, need] = ScanSequence(s, i);
    if (have != need) return false;
    i += need;
  }
  return true;
}

int Utf8SequenceLength(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 1;
}

char32_t NextCodePoint(absl::string_view s, size_t* pos) {
  const auto b0 = static_cast<unsigned char>(s[*pos]);
  const int n = std::min<int>(Utf8SequenceLength(b0), static_cast<int>(s.size() - *pos));
  char32_t cp;
  switch (n) {
    case 2:
      cp = b0 & 0x1F;
      break;
    case 3:
      cp = b0 & 0x0F;
      break;
    case 4:
      cp = b0 & 0x07;
      break;
    default:
      cp = b0;
  }
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[*pos + k]) & 0x3F);
  *pos += n;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      out.push_back(bytes[i++]);
      continue;
    }
    auto [have, need] = ScanSequence(bytes, i);
    if (have == need) {
      out.append(bytes.data() + i, need);
      i += need;
    } else {
      out.append(kReplacementChar.data(), kReplacementChar.size());
      i += std::max(have, 1);
    }
  }
  return out;
}

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> chars;
  std::array<int16_t, 512> bytes;  // Code points of the alphabet are all < 0x144.
  ByteLevelTables() {
    bytes.fill(-1);
    std::array<int, 256> cp_of{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) cp_of[b] = direct[b] ? b : 256 + n++;
    for (int b = 0; b < 256; ++b) {
      AppendUtf8(static_cast<char32_t>(cp_of[b]), &chars[b]);
      bytes[cp_of[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables* tables = new ByteLevelTables();
  return *tables;
}

}  // namespace

const std::array<std::string, 256>& ByteLevelChars() { return Tables().chars; }

int ByteLevelByte(char32_t cp) {
  if (cp >= Tables().bytes.size()) return -1;
  return Tables().bytes[cp];
}

bool IsUnicodeWhitespace(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

// ---------------------------------------------------------------------------------------------
// Regex.

namespace {
pcre2_code* Code(void* p) { return static_cast<pcre2_code*>(p); }
}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(absl::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, /*ccontext=*/nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("regex '", pattern,
                                                   "' does not compile at offset ", offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  // JIT is an optimisation only; the interpreter is used when it is unavailable.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(Code(code_)); }

absl::Status Regex::FindAll(absl::string_view text,
                            std::vector<std::pair<size_t, size_t>>* matches) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(Code(code_), nullptr);
  if (md == nullptr) return absl::ResourceExhaustedError("pcre2_match_data_create failed");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  absl::Status status;
  size_t start = 0;
  while (start <= text.size()) {
    // The caller validated the UTF-8 once; PCRE2 would otherwise re-check the whole subject on
    // every call.
    int rc = pcre2_match(Code(code_), subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(Code(code_), subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      status = absl::InternalError(
          absl::StrCat("regex match failed: ", reinterpret_cast<const char*>(message)));
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t s = ov[0], e = ov[1];
    if (e < s) break;  // \K games; never produced by tokenizer patterns.
    matches->emplace_back(s, e);
    if (e > s) {
      start = e;
    } else {
      if (e >= text.size()) break;
      start = e + Utf8SequenceLength(static_cast<unsigned char>(text[e]));
    }
  }
  pcre2_match_data_free(md);
  return status;
}

// ---------------------------------------------------------------------------------------------
// Pattern.

absl::StatusOr<Pattern> Pattern::FromJson(const Json& j) {
  Pattern p;
  if (j.is_object() && j.contains("String")) {
    p.literal_ = j.at("String").get<std::string>();
    if (p.literal_.empty()) return absl::InvalidArgumentError("empty String pattern");
    return p;
  }
  if (j.is_object() && j.contains("Regex")) {
    ASSIGN_OR_RETURN(std::unique_ptr<Regex> regex,
                     Regex::Compile(j.at("Regex").get<std::string>()));
    p.regex_ = std::move(regex);
    return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("pattern must be {\"String\": ...} or {\"Regex\": ...}, got ", j.dump()));
}

absl::Status Pattern::FindAll(absl::string_view text,
                              std::vector<std::pair<size_t, size_t>>* matches) const {
  if (regex_ != nullptr) return regex_->FindAll(text, matches);
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != absl::string_view::npos) {
    matches->emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Pattern::ReplaceAll(absl::string_view text,
                                                absl::string_view content) const {
  std::vector<std::pair<size_t, size_t>> matches;
  RETURN_IF_ERROR(FindAll(text, &matches));
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    out.append(text.data() + prev, s - prev);
    out.append(content.data(), content.size());
    prev = e;
  }
  out.append(text.data() + prev, text.size() - prev);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Normalizers.

namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& p : parts_) RETURN_IF_ERROR(p->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    // Rust's NormalizedString::prepend is a no-op on an empty string.
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class AppendNormalizer : public Normalizer {
 public:
  explicit AppendNormalizer(std::string suffix) : suffix_(std::move(suffix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->append(suffix_);
    return absl::OkStatus();
  }

 private:
  std::string suffix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    ASSIGN_OR_RETURN(*text, pattern_.ReplaceAll(*text, content_));
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(utf8proc_option_t options) : options_(options) {}
  absl::Status Normalize(std::string* text) const override {
    if (std::all_of(text->begin(), text->end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
      return absl::OkStatus();  // ASCII is invariant under every normalization form.
    }
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text->data()),
                                      static_cast<utf8proc_ssize_t>(text->size()), &out, options_);
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unicode normalization failed: ", utf8proc_errmsg(n)));
    }
    text->assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return absl::OkStatus();
  }

 private:
  utf8proc_option_t options_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    size_t pos = 0;
    while (pos < text->size()) {
      AppendUtf8(static_cast<char32_t>(
                     utf8proc_tolower(static_cast<utf8proc_int32_t>(NextCodePoint(*text, &pos)))),
                 &out);
    }
    *text = std::move(out);
    return absl::OkStatus();
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!IsUnicodeWhitespace(NextCodePoint(*text, &next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>((*text)[start]) & 0xC0) == 0x80) {
          --start;
        }
        size_t p = start;
        if (!IsUnicodeWhitespace(NextCodePoint(*text, &p))) break;
        end = start;
      }
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

std::string TypeOf(const Json& j) {
  if (!j.is_object() || !j.contains("type") || !j.at("type").is_string()) return "";
  return j.at("type").get<std::string>();
}

bool BoolOr(const Json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return j.at(key).get<bool>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const Json& sub : j.at("normalizers")) {
      ASSIGN_OR_RETURN(std::unique_ptr<Normalizer> n, MakeNormalizer(sub));
      if (n != nullptr) parts.push_back(std::move(n));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  }
  if (type == "Append") {
    return std::make_unique<AppendNormalizer>(j.at("append").get<std::string>());
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.at("pattern")));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern),
                                               j.at("content").get<std::string>());
  }
  if (type == "NFC") {
    return std::make_unique<UnicodeNormalizer>(
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  }
  if (type == "NFD") {
    return std::make_unique<UnicodeNormalizer>(
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE));
  }
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(BoolOr(j, "strip_left", true),
                                             BoolOr(j, "strip_right", true));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported normalizer type '", type.empty() ? j.dump() : type, "'"));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers.

void SplitPiece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                SplitBehavior behavior, bool invert, std::vector<Piece>* out) {
  struct Span {
    size_t start, end;
    bool flag;  // is_match on input; "remove" on output.
  };
  const absl::string_view text = piece.text;
  std::vector<Span> splits;
  if (text.empty()) {
    splits.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (const auto& [s, e] : matches) {
      if (s != prev) splits.push_back({prev, s, false});
      splits.push_back({s, e, true});
      prev = e;
    }
    if (prev != text.size()) splits.push_back({prev, text.size(), false});
  }
  if (invert) {
    for (Span& s : splits) s.flag = !s.flag;
  }
  std::vector<Span> result;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      result = splits;
      break;
    case SplitBehavior::kIsolated:
      for (const Span& s : splits) result.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Span& s : splits) {
        if (s.flag == previous_match && !result.empty()) {
          result.back().end = s.end;
        } else {
          result.push_back({s.start, s.end, false});
        }
        previous_match = s.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Span& s : splits) {
        if (s.flag && !previous_match && !result.empty()) {
          result.back().end = s.end;
        } else {
          result.push_back({s.start, s.end, false});
        }
        previous_match = s.flag;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = splits.rbegin(); it != splits.rend(); ++it) {
        if (it->flag && !previous_match && !result.empty()) {
          result.back().start = it->start;
        } else {
          result.push_back({it->start, it->end, false});
        }
        previous_match = it->flag;
      }
      std::reverse(result.begin(), result.end());
      break;
    }
  }
  for (const Span& s : result) {
    if (s.flag || s.end == s.start) continue;
    out->push_back(
        Piece{std::string(text.substr(s.start, s.end - s.start)), piece.at_origin && s.start == 0});
  }
}

namespace {

absl::StatusOr<SplitBehavior> ParseBehavior(const Json& j) {
  const std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("unknown split behavior '", b, "'"));
}

// Splits every piece around the matches of `pattern`.
absl::Status SplitAll(const Pattern& pattern, SplitBehavior behavior, bool invert,
                      std::vector<Piece>* pieces) {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  std::vector<std::pair<size_t, size_t>> matches;
  for (const Piece& p : *pieces) {
    matches.clear();
    RETURN_IF_ERROR(pattern.FindAll(p.text, &matches));
    SplitPiece(p, matches, behavior, invert, &out);
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& p : parts_) RETURN_IF_ERROR(p->PreTokenize(pieces));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    return SplitAll(pattern_, behavior_, invert_, pieces);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's pre-tokenization regex, used by ByteLevel when use_regex is true.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::optional<Pattern> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    if (add_prefix_space_) {
      for (Piece& p : *pieces) {
        if (!p.text.empty() && p.text[0] != ' ') p.text.insert(0, " ");
      }
    }
    if (regex_.has_value()) {
      RETURN_IF_ERROR(SplitAll(*regex_, SplitBehavior::kIsolated, false, pieces));
    }
    const auto& chars = ByteLevelChars();
    for (Piece& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += chars[static_cast<unsigned char>(c)];
      p.text = std::move(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::optional<Pattern> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

absl::StatusOr<PrependScheme> ParsePrependScheme(const Json& j) {
  if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
    const std::string s = j.at("prepend_scheme").get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return absl::InvalidArgumentError(absl::StrCat("unknown prepend_scheme '", s, "'"));
  }
  // Files written before prepend_scheme existed carry add_prefix_space.
  return BoolOr(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {
    Json pattern = {{"String", replacement_}};
    split_pattern_ = *Pattern::FromJson(pattern);
    space_pattern_ = *Pattern::FromJson(Json{{"String", " "}});
  }
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    for (Piece& p : *pieces) {
      ASSIGN_OR_RETURN(p.text, space_pattern_.ReplaceAll(p.text, replacement_));
      const bool starts = absl::string_view(p.text).substr(0, replacement_.size()) == replacement_;
      const bool prepend =
          !p.text.empty() && !starts &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_origin));
      if (prepend) p.text.insert(0, replacement_);
    }
    if (split_) {
      RETURN_IF_ERROR(SplitAll(split_pattern_, SplitBehavior::kMergedWithNext, false, pieces));
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  Pattern split_pattern_;
  Pattern space_pattern_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const Json& sub : j.at("pretokenizers")) {
      ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> p, MakePreTokenizer(sub));
      if (p != nullptr) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Split") {
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.at("pattern")));
    ASSIGN_OR_RETURN(SplitBehavior behavior, ParseBehavior(j.at("behavior")));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior,
                                               BoolOr(j, "invert", false));
  }
  if (type == "ByteLevel") {
    std::optional<Pattern> regex;
    if (BoolOr(j, "use_regex", true)) {
      ASSIGN_OR_RETURN(regex, Pattern::FromJson(Json{{"Regex", kGpt2Pattern}}));
    }
    return std::make_unique<ByteLevelPreTokenizer>(BoolOr(j, "add_prefix_space", true),
                                                   std::move(regex));
  }
  if (type == "Metaspace") {
    std::string replacement = j.contains("replacement") ? j.at("replacement").get<std::string>()
                                                        : std::string("\xE2\x96\x81");
    if (replacement.empty()) return absl::InvalidArgumentError("Metaspace: empty replacement");
    ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(j));
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme,
                                                   BoolOr(j, "split", true));
  }
  if (type == "Digits") {
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(Json{{"Regex", R"(\p{N})"}}));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern),
                                               BoolOr(j, "individual_digits", false)
                                                   ? SplitBehavior::kIsolated
                                                   : SplitBehavior::kContiguous,
                                               false);
  }
  if (type == "WhitespaceSplit") {
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(Json{{"Regex", R"(\s+)"}}));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), SplitBehavior::kRemoved, false);
  }
  if (type == "Whitespace") {
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(Json{{"Regex", R"(\w+|[^\w\s]+)"}}));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), SplitBehavior::kRemoved, true);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported pre_tokenizer type '", type.empty() ? j.dump() : type, "'"));
}

}  // namespace swarm::tokenizer::internal
