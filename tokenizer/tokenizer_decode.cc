// Decoders and post-processors of tokenizer.json (see tokenizer_internal.h).
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"
#include "tokenizer/tokenizer_internal.h"

namespace swarm::tokenizer::internal {

namespace {

std::string TypeOf(const Json& j) {
  if (!j.is_object() || !j.contains("type") || !j.at("type").is_string()) return "";
  return j.at("type").get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// Decoders.

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& p : parts_) p->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

// Maps byte-level characters back to bytes and joins everything into one UTF-8 string (lossy).
// Tokens with characters outside the byte-level alphabet (added tokens) contribute their own
// bytes.
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    std::string token_bytes;
    for (const std::string& t : *tokens) {
      token_bytes.clear();
      bool mapped = true;
      size_t pos = 0;
      while (pos < t.size()) {
        const int b = ByteLevelByte(NextCodePoint(t, &pos));
        if (b < 0) {
          mapped = false;
          break;
        }
        token_bytes.push_back(static_cast<char>(b));
      }
      bytes += mapped ? token_bytes : t;
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      const std::string& t = (*tokens)[i];
      std::string out;
      out.reserve(t.size());
      size_t pos = 0;
      while (pos < t.size()) {
        if (t.compare(pos, replacement_.size(), replacement_) == 0) {
          // As in the Rust library, every replacement character of the first token is dropped.
          if (!(i == 0 && strip_first_)) out.push_back(' ');
          pos += replacement_.size();
        } else {
          const size_t start = pos;
          NextCodePoint(t, &pos);
          out.append(t, start, pos - start);
        }
      }
      (*tokens)[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      absl::StatusOr<std::string> r = pattern_.ReplaceAll(t, content_);
      if (r.ok()) t = *std::move(r);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of <0xNN> tokens become the UTF-8 text they spell, or one U+FFFD per byte when the run
// is not valid UTF-8.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string run;
    size_t run_len = 0;
    auto flush = [&]() {
      if (run_len == 0) return;
      if (IsValidUtf8(run)) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run_len; ++k) out.emplace_back(kReplacementChar);
      }
      run.clear();
      run_len = 0;
    };
    for (std::string& t : *tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        int v = 0;
        bool ok = true;
        for (int k = 3; k < 5; ++k) {
          const char c = t[k];
          int d;
          if (c >= '0' && c <= '9') {
            d = c - '0';
          } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
          } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
          } else {
            ok = false;
            break;
          }
          v = v * 16 + d;
        }
        if (ok) byte = v;
      }
      if (byte >= 0) {
        run.push_back(static_cast<char>(byte));
        ++run_len;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    tokens->assign(1, absl::StrJoin(*tokens, ""));
  }
};

// Removes up to `start` leading and `stop` trailing occurrences of `content` from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      absl::string_view v = t;
      for (size_t k = 0; k < start_ && absl::StartsWith(v, content_); ++k) {
        v.remove_prefix(content_.size());
      }
      for (size_t k = 0; k < stop_ && absl::EndsWith(v, content_); ++k) {
        v.remove_suffix(content_.size());
      }
      t = std::string(v);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{suffix_, i + 1 == tokens->size() ? "" : " "}});
    }
  }

 private:
  std::string suffix_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const Json& sub : j.at("decoders")) {
      ASSIGN_OR_RETURN(std::unique_ptr<Decoder> d, MakeDecoder(sub));
      if (d != nullptr) parts.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    std::string replacement = j.contains("replacement") ? j.at("replacement").get<std::string>()
                                                        : std::string("\xE2\x96\x81");
    if (replacement.empty()) return absl::InvalidArgumentError("Metaspace: empty replacement");
    bool strip_first;
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
      strip_first = j.at("prepend_scheme").get<std::string>() != "never";
    } else {
      strip_first = j.value("add_prefix_space", true);
    }
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), strip_first);
  }
  if (type == "Replace") {
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.at("pattern")));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), j.at("content").get<std::string>());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    std::string content = j.at("content").get<std::string>();
    const int64_t start = j.value("start", int64_t{0});
    const int64_t stop = j.value("stop", int64_t{0});
    if (content.empty() || start < 0 || stop < 0) {
      return absl::InvalidArgumentError("Strip decoder: bad content/start/stop");
    }
    return std::make_unique<StripDecoder>(std::move(content), static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "BPEDecoder") {
    std::string suffix = j.value("suffix", std::string("</w>"));
    if (suffix.empty()) return absl::InvalidArgumentError("BPEDecoder: empty suffix");
    return std::make_unique<BpeSuffixDecoder>(std::move(suffix));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported decoder type '", type.empty() ? j.dump() : type, "'"));
}

// ---------------------------------------------------------------------------------------------
// Post-processors.

void PostProcessor::Surroundings(std::vector<int64_t>* prefix, std::vector<int64_t>* suffix) const {
  // Token ids are non-negative, so a negative sentinel marks where the sequence went.
  constexpr int64_t kSentinel = -12345;
  std::vector<int64_t> ids = {kSentinel};
  Process(&ids);
  auto it = std::find(ids.begin(), ids.end(), kSentinel);
  prefix->assign(ids.begin(), it);
  suffix->assign(it == ids.end() ? it : it + 1, ids.end());
}

namespace {

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void Process(std::vector<int64_t>* ids) const override {
    for (const auto& p : parts_) p->Process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

class NoopPostProcessor : public PostProcessor {
 public:
  void Process(std::vector<int64_t>* /*ids*/) const override {}
};

// TemplateProcessing's "single" template, and BERT/RoBERTa's fixed cls/sep wrapping.
class WrapPostProcessor : public PostProcessor {
 public:
  WrapPostProcessor(std::vector<int64_t> prefix, std::vector<int64_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void Process(std::vector<int64_t>* ids) const override {
    ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
    ids->insert(ids->end(), suffix_.begin(), suffix_.end());
  }

 private:
  std::vector<int64_t> prefix_, suffix_;
};

absl::StatusOr<int64_t> PairId(const Json& j, const char* key) {
  if (!j.contains(key) || !j.at(key).is_array() || j.at(key).size() != 2 ||
      !j.at(key)[1].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("post_processor.", key, " must be [token, id]"));
  }
  return j.at(key)[1].get<int64_t>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const Json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const Json& sub : j.at("processors")) {
      ASSIGN_OR_RETURN(std::unique_ptr<PostProcessor> p, MakePostProcessor(sub));
      if (p != nullptr) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    ASSIGN_OR_RETURN(int64_t cls, PairId(j, "cls"));
    ASSIGN_OR_RETURN(int64_t sep, PairId(j, "sep"));
    return std::make_unique<WrapPostProcessor>(std::vector<int64_t>{cls},
                                               std::vector<int64_t>{sep});
  }
  if (type == "TemplateProcessing") {
    const Json& special = j.contains("special_tokens") ? j.at("special_tokens") : Json::object();
    std::vector<int64_t> prefix, suffix;
    bool seen_sequence = false;
    for (const Json& item : j.at("single")) {
      if (item.contains("Sequence")) {
        const std::string id = item.at("Sequence").at("id").get<std::string>();
        if (id != "A") {
          return absl::InvalidArgumentError(
              absl::StrCat("post_processor.single uses sequence '", id, "'; only A is allowed"));
        }
        if (seen_sequence) {
          return absl::InvalidArgumentError("post_processor.single repeats sequence A");
        }
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        if (!special.contains(name)) {
          return absl::InvalidArgumentError(
              absl::StrCat("post_processor special token '", name, "' is not in special_tokens"));
        }
        for (const Json& id : special.at(name).at("ids")) {
          (seen_sequence ? suffix : prefix).push_back(id.get<int64_t>());
        }
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("post_processor.single has an unknown item ", item.dump()));
      }
    }
    return std::make_unique<WrapPostProcessor>(std::move(prefix), std::move(suffix));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported post_processor type '", type.empty() ? j.dump() : type, "'"));
}

}  // namespace swarm::tokenizer::internal
