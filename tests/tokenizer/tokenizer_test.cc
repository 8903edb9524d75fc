// Tokenizer tests: the three real tokenizer.json files in ../shared/fixtures/tokenizers and
// stories260K's against the reference encodings recorded from Hugging Face tokenizers
// (golden_visible.json, tokenizer_golden.json); StreamDecoder; pipeline variants (Metaspace,
// GPT-2 ByteLevel, ignore_merges, added-token flags) on small hand-built files whose results
// follow from the Hugging Face semantics; malformed files; and `swarm tokenize` end to end.
#include "tokenizer/tokenizer.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/util/files.h"
#include "tests/util/skip.h"

namespace swarm::tokenizer {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kShared = SWARM_SHARED_DIR;
const std::string kTokenizers = kShared + "/fixtures/tokenizers";
const std::string kStories = kShared + "/models/stories260K";

using test_util::ReadFile;
using test_util::WriteFile;

std::string TempDir(const std::string& name) {
  return test_util::MakeTempDir("swarm_tokenizer_test", name);
}

// Loads each fixture tokenizer once per process (the 128k/150k files take a moment).
const Tokenizer& Fixture(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(name);
  if (it == cache->end()) {
    const std::string path = name == "stories260K" ? kStories + "/tokenizer.json"
                                                   : kTokenizers + "/" + name + "/tokenizer.json";
    auto tok = Tokenizer::FromFile(path);
    EXPECT_TRUE(tok.ok()) << tok.status();
    if (!tok.ok()) std::abort();
    it = cache->emplace(name, *std::move(tok)).first;
  }
  return *it->second;
}

std::vector<int64_t> Ids(const Json& j) { return j.get<std::vector<int64_t>>(); }

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The reference encodings.

class GoldenTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTokenizerTest, EncodesAndDecodesLikeHuggingFace) {
  const Tokenizer& tok = Fixture(GetParam());
  const Json golden =
      Json::parse(ReadFile(kTokenizers + "/" + GetParam() + "/golden_visible.json"));
  ASSERT_GE(golden.at("texts").size(), 40u);
  for (const Json& item : golden.at("texts")) {
    const std::string text = item.at("text").get<std::string>();
    SCOPED_TRACE(text);
    auto ids = tok.Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item.at("ids")));
    auto plain = tok.Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_EQ(*plain, Ids(item.at("ids_no_special")));
    const std::string decoded = item.at("decoded").get<std::string>();
    EXPECT_EQ(tok.Decode(Ids(item.at("ids")), /*skip_special=*/true), decoded);
    EXPECT_EQ(tok.Decode(Ids(item.at("ids_no_special")), /*skip_special=*/false), decoded);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTokenizerTest,
                         ::testing::Values("sp-bpe-32k", "llama3", "qwen3"), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

TEST(Stories260KTokenizer, MatchesGolden) {
  const Tokenizer& tok = Fixture("stories260K");
  const Json golden =
      Json::parse(ReadFile(kShared + "/fixtures/golden/stories260K/tokenizer_golden.json"));
  ASSERT_FALSE(golden.at("texts").empty());
  for (const Json& item : golden.at("texts")) {
    const std::string text = item.at("text").get<std::string>();
    SCOPED_TRACE(text);
    auto ids = tok.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item.at("ids")));
    EXPECT_EQ(tok.Decode(*ids, true), item.at("decoded").get<std::string>());
  }
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
}

TEST(Tokenizer, SpecialTokensVocabAndDecodeWithSpecials) {
  const Tokenizer& sp = Fixture("sp-bpe-32k");
  EXPECT_EQ(sp.vocab_size(), 32000);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  EXPECT_EQ(sp.TokenToId("<s>"), 1);
  EXPECT_EQ(sp.IdToToken(1), "<s>");
  EXPECT_EQ(sp.IdToToken(1526), "\xE2\x96\x81world");
  EXPECT_EQ(sp.IdToToken(-1), std::nullopt);
  EXPECT_EQ(sp.IdToToken(32000), std::nullopt);
  // Hugging Face keeps the special token and the space after it ("<s> Hello world").
  EXPECT_EQ(sp.Decode({1, 22557, 1526}, false), "<s> Hello world");
  EXPECT_EQ(sp.Decode({1, 22557, 1526, 2}, true), "Hello world");

  const Tokenizer& llama3 = Fixture("llama3");
  EXPECT_EQ(llama3.vocab_size(), 128256);
  EXPECT_EQ(llama3.bos_id(), 128000);  // tokenizer_config.json: <|begin_of_text|>
  EXPECT_EQ(llama3.eos_id(), 128001);  // <|end_of_text|>
  EXPECT_EQ(llama3.Decode({128000, 9906, 1917}, false), "<|begin_of_text|>Hello world");
  EXPECT_EQ(llama3.Decode({128000, 9906, 1917}, true), "Hello world");

  const Tokenizer& qwen3 = Fixture("qwen3");
  EXPECT_EQ(qwen3.vocab_size(), 151669);
  EXPECT_EQ(qwen3.bos_id(), std::nullopt);  // bos_token: null
  EXPECT_EQ(qwen3.eos_id(), 151645);        // <|im_end|>
  EXPECT_EQ(qwen3.TokenToId("<|im_start|>"), 151644);
}

// Added tokens written in the text are split out before normalisation; the rest is encoded
// piecewise, exactly as the pieces alone.
TEST(Tokenizer, AddedTokensInText) {
  const Tokenizer& qwen3 = Fixture("qwen3");
  auto user = qwen3.Encode("user\nHello world", false);
  ASSERT_TRUE(user.ok());
  std::vector<int64_t> expected = {151644};
  expected.insert(expected.end(), user->begin(), user->end());
  expected.push_back(151645);
  auto ids = qwen3.Encode("<|im_start|>user\nHello world<|im_end|>", true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, expected);
  EXPECT_EQ(qwen3.Decode(*ids, false), "<|im_start|>user\nHello world<|im_end|>");
  EXPECT_EQ(qwen3.Decode(*ids, true), "user\nHello world");
  // Non-special added tokens (<think>) are matched too and survive skip_special.
  const std::optional<int64_t> think = qwen3.TokenToId("<think>");
  ASSERT_TRUE(think.has_value());
  auto t = qwen3.Encode("<think>", false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, std::vector<int64_t>{*think});
  EXPECT_EQ(qwen3.Decode(*t, true), "<think>");

  // SentencePiece style: the normalizer runs per segment, so "▁" is prepended after </s> too.
  const Tokenizer& sp = Fixture("sp-bpe-32k");
  auto a = sp.Encode("Hello", false);
  auto b = sp.Encode("world", false);
  auto ab = sp.Encode("Hello</s>world", true);
  ASSERT_TRUE(a.ok() && b.ok() && ab.ok());
  expected = {1};
  expected.insert(expected.end(), a->begin(), a->end());
  expected.push_back(2);
  expected.insert(expected.end(), b->begin(), b->end());
  EXPECT_EQ(*ab, expected);
}

TEST(Tokenizer, RejectsInvalidUtf8) {
  auto ids = Fixture("qwen3").Encode("bad \xC3\x28 bytes");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
}

// Load and encode times are measured in bench/, not asserted here (timed assertions flake on
// shared machines); these check that a large vocabulary loads and long inputs round-trip.
TEST(Tokenizer, LoadsLargeVocabulary) {
  auto tok = Tokenizer::FromFile(kTokenizers + "/qwen3/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_GT((*tok)->vocab_size(), 151000);
}

TEST(Tokenizer, EncodesLongInputs) {
  std::string text;
  for (int i = 0; i < 400; ++i) {
    text += "The quick brown fox jumps over the lazy dog 1234, naïve café 中文测试 😀. ";
  }
  for (const char* name : {"sp-bpe-32k", "llama3", "qwen3"}) {
    const Tokenizer& tok = Fixture(name);
    auto ids = tok.Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(tok.Decode(*ids), text) << name;
  }
}

TEST(Tokenizer, ConcurrentEncodeIsConsistent) {
  const Tokenizer& tok = Fixture("llama3");
  const Json golden = Json::parse(ReadFile(kTokenizers + "/llama3/golden_visible.json"));
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (const Json& item : golden.at("texts")) {
          auto ids = tok.Encode(item.at("text").get<std::string>(), true);
          if (!ids.ok() || *ids != Ids(item.at("ids"))) ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// ---------------------------------------------------------------------------------------------
// StreamDecoder.

void ExpectStreamsLikeDecode(const Tokenizer& tok, const std::vector<int64_t>& prefix,
                             const std::vector<int64_t>& ids) {
  StreamDecoder stream(&tok, prefix);
  std::string joined;
  for (int64_t id : ids) {
    const std::string piece = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << "piece for id " << id;
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD for id " << id;
    joined += piece;
  }
  joined += stream.Flush();
  std::vector<int64_t> all = prefix;
  all.insert(all.end(), ids.begin(), ids.end());
  const std::string full = tok.Decode(all, true);
  const std::string head = tok.Decode(prefix, true);
  ASSERT_EQ(full.compare(0, head.size(), head), 0);
  EXPECT_EQ(joined, full.substr(head.size()));
}

TEST(StreamDecoder, EmojiAndCjkPiecesAreWholeCharacters) {
  const std::vector<std::string> texts = {
      "emoji 😀🚀👍🏽 ok",
      "中文测试：你好，世界！",
      "日本語のテキスト",
      "한국어 문장입니다",
      "  two leading spaces and é combining acute",
      "mixed: Русский, العربية, 👩‍👩‍👧‍👦 family, "
      "tabs\t\tand\nnewlines",
  };
  for (const char* name : {"stories260K", "sp-bpe-32k", "llama3", "qwen3"}) {
    const Tokenizer& tok = Fixture(name);
    for (const std::string& text : texts) {
      SCOPED_TRACE(absl::StrCat(name, ": ", text));
      auto ids = tok.Encode(text, true);
      ASSERT_TRUE(ids.ok()) << ids.status();
      ExpectStreamsLikeDecode(tok, {}, *ids);
      // Without a prefix the stream reproduces the text itself.
      StreamDecoder stream(&tok);
      std::string joined;
      for (int64_t id : *ids) joined += stream.Push(id);
      joined += stream.Flush();
      EXPECT_EQ(joined, text);
    }
  }
}

TEST(StreamDecoder, ByteFallbackBytesAreHeldUntilComplete) {
  // stories260K spells 😀 with four <0xNN> byte tokens.
  const Tokenizer& tok = Fixture("stories260K");
  StreamDecoder stream(&tok);
  std::vector<std::string> pieces;
  for (int64_t id : {1, 344, 423, 414, 449, 417, 410, 243, 162, 155, 131, 334, 433}) {
    pieces.push_back(stream.Push(id));
  }
  EXPECT_EQ(pieces[7], "");
  EXPECT_EQ(pieces[8], "");
  EXPECT_EQ(pieces[9], "");
  EXPECT_EQ(pieces[10], "\xF0\x9F\x98\x80");
  EXPECT_EQ(absl::StrJoin(pieces, "") + stream.Flush(), "emoji 😀 ok");
}

TEST(StreamDecoder, PromptPrefixKeepsLeadingSpaces) {
  for (const char* name : {"stories260K", "sp-bpe-32k", "llama3", "qwen3"}) {
    SCOPED_TRACE(name);
    const Tokenizer& tok = Fixture(name);
    auto prompt = tok.Encode("Once upon a time", true);
    // SentencePiece's normalizer adds the "▁" itself; byte-level files need the space written.
    const bool sentencepiece =
        std::string(name) == "stories260K" || std::string(name) == "sp-bpe-32k";
    auto rest = tok.Encode(
        absl::StrCat(sentencepiece ? "" : " ", "there was a little girl named 😀 Lily. 中文"),
        false);
    ASSERT_TRUE(prompt.ok() && rest.ok());
    ExpectStreamsLikeDecode(tok, *prompt, *rest);
    // A continuation after the prompt keeps its leading space.
    StreamDecoder stream(&tok, *prompt);
    std::string joined;
    for (int64_t id : *rest) joined += stream.Push(id);
    joined += stream.Flush();
    EXPECT_EQ(joined.rfind(" there was", 0), 0u) << joined;
  }
  // Generation from BOS alone: the first word loses SentencePiece's leading "▁".
  const Tokenizer& stories = Fixture("stories260K");
  auto ids = stories.Encode("Once upon a time", false);
  ASSERT_TRUE(ids.ok());
  StreamDecoder stream(&stories, {1});
  std::string joined;
  for (int64_t id : *ids) joined += stream.Push(id);
  EXPECT_EQ(joined + stream.Flush(), "Once upon a time");
}

TEST(StreamDecoder, LongStreamsMatchDecode) {
  std::string text;
  for (int i = 0; i < 30; ++i) {
    text +=
        absl::StrCat("Line ", i, ": naïve café 😀🚀 中文测试 ", std::string(i % 4, ' '), "end.\n");
  }
  for (const char* name : {"stories260K", "sp-bpe-32k", "llama3", "qwen3"}) {
    SCOPED_TRACE(name);
    const Tokenizer& tok = Fixture(name);
    auto ids = tok.Encode(text, true);
    ASSERT_TRUE(ids.ok());
    ExpectStreamsLikeDecode(tok, {}, *ids);
    auto prompt = tok.Encode("Prompt: ", true);
    ASSERT_TRUE(prompt.ok());
    ExpectStreamsLikeDecode(tok, *prompt, *ids);
  }
}

TEST(StreamDecoder, SpecialsCanBeKept) {
  const Tokenizer& sp = Fixture("sp-bpe-32k");
  StreamDecoder stream(&sp, {}, /*skip_special=*/false);
  std::string joined;
  for (int64_t id : {1, 22557, 1526, 2}) joined += stream.Push(id);
  EXPECT_EQ(joined + stream.Flush(), "<s> Hello world</s>");
}

// ---------------------------------------------------------------------------------------------
// Pipeline variants on hand-built files.

// The sp-bpe-32k file rewritten the way newer conversions write SentencePiece tokenizers: no
// normalizer, a Metaspace pre-tokenizer (prepend_scheme "first", split false) and decoder.
TEST(Tokenizer, MetaspaceVariantMatchesLegacyNormalizer) {
  Json j = Json::parse(ReadFile(kTokenizers + "/sp-bpe-32k/tokenizer.json"));
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"},
                        {"replacement", "\xE2\x96\x81"},
                        {"prepend_scheme", "first"},
                        {"split", false}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Metaspace"},
                     {"replacement", "\xE2\x96\x81"},
                     {"prepend_scheme", "first"},
                     {"split", false}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}}}}};
  auto tok = Tokenizer::FromJson(j.dump(), "metaspace.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Json golden = Json::parse(ReadFile(kTokenizers + "/sp-bpe-32k/golden_visible.json"));
  int checked = 0;
  for (const Json& item : golden.at("texts")) {
    const std::string text = item.at("text").get<std::string>();
    // Metaspace does not add a second "▁" before a leading space; the legacy normalizer does.
    if (!text.empty() && text[0] == ' ') continue;
    SCOPED_TRACE(text);
    auto ids = (*tok)->Encode(text, true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, Ids(item.at("ids")));
    EXPECT_EQ((*tok)->Decode(*ids, true), item.at("decoded").get<std::string>());
    ++checked;
  }
  EXPECT_GT(checked, 30);
  // " x": the text already starts with "▁" after replacement, so nothing is prepended.
  auto spaced = (*tok)->Encode(" leading space", false);
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(*spaced, (std::vector<int64_t>{5374, 2764}));  // "▁leading", "▁space"
  // "first": only the segment at the start of the input gets the "▁".
  auto after_bos = (*tok)->Encode("<s>leading", false);
  auto bare = (*tok)->Encode("leading", false);
  ASSERT_TRUE(after_bos.ok() && bare.ok());
  EXPECT_EQ(bare->front(), 5374);
  EXPECT_NE((*after_bos)[1], 5374);
  EXPECT_EQ((*after_bos)[0], 1);
}

// GPT-2's alphabet: byte b as the code point that ByteLevel maps it to.
std::string ByteChar(int b) {
  std::vector<int> bs;
  for (int c = '!'; c <= '~'; ++c) bs.push_back(c);
  for (int c = 0xA1; c <= 0xAC; ++c) bs.push_back(c);
  for (int c = 0xAE; c <= 0xFF; ++c) bs.push_back(c);
  int cp = -1, n = 0;
  for (int x = 0; x < 256; ++x) {
    const bool direct = std::find(bs.begin(), bs.end(), x) != bs.end();
    const int mapped = direct ? x : 256 + n++;
    if (x == b) cp = mapped;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// A byte-level vocab: the 256 byte characters (id = byte), then "or", "Ġw", "Ġwor", "Ġworld".
Json TinyByteLevel(bool ignore_merges) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  const std::string g = ByteChar(' ');  // "Ġ"
  vocab["or"] = 256;
  vocab[g + "w"] = 257;
  vocab[g + "wor"] = 258;
  vocab[g + "world"] = 259;
  Json j = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 260},
         {"content", "<|end|>"},
         {"special", true},
         {"lstrip", false},
         {"rstrip", false},
         {"single_word", false},
         {"normalized", false}},
        {{"id", 261},
         {"content", "<mask>"},
         {"special", true},
         {"lstrip", true},
         {"rstrip", true},
         {"single_word", false},
         {"normalized", false}},
        {{"id", 262},
         {"content", "cat"},
         {"special", false},
         {"lstrip", false},
         {"rstrip", false},
         {"single_word", true},
         {"normalized", false}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", "<|end|>"}, {"type_id", 0}}}}}},
        {"special_tokens",
         {{"<|end|>", {{"id", "<|end|>"}, {"ids", {260}}, {"tokens", {"<|end|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", Json::array({Json::array({"o", "r"}), Json::array({g, "w"}),
                                Json::array({g + "w", "or"})})},
        {"ignore_merges", ignore_merges}}}};
  return j;
}

TEST(Tokenizer, Gpt2ByteLevelMergesByRank) {
  auto tok = Tokenizer::FromJson(TinyByteLevel(false).dump(), "tiny.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // add_prefix_space: " Hello", " world"; "o r" (rank 0) before "Ġ w" (1), then "Ġw or" (2).
  auto ids = (*tok)->Encode("Hello world", true);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int64_t>{' ', 'H', 'e', 'l', 'l', 'o', 258, 'l', 'd', 260}));
  EXPECT_EQ((*tok)->eos_id(), 260);  // What the template appends.
  EXPECT_EQ((*tok)->Decode(*ids, true), " Hello world");
  EXPECT_EQ((*tok)->Decode(*ids, false), " Hello world<|end|>");
  // Bytes that do not form UTF-8 decode to U+FFFD.
  EXPECT_EQ((*tok)->Decode({0xE4, 'a'}),
            "\xEF\xBF\xBD"
            "a");
}

TEST(Tokenizer, IgnoreMergesTakesWholeWordsFromTheVocab) {
  auto tok = Tokenizer::FromJson(TinyByteLevel(true).dump(), "tiny.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("Hello world", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int64_t>{' ', 'H', 'e', 'l', 'l', 'o', 259}));
}

TEST(Tokenizer, AddedTokenFlags) {
  auto tok = Tokenizer::FromJson(TinyByteLevel(false).dump(), "tiny.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // lstrip/rstrip: the spaces around <mask> belong to it.
  auto ids = (*tok)->Encode("a <mask>  b", false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int64_t>{' ', 'a', 261, ' ', 'b'}));
  // single_word: "cat" only as a whole word.
  ids = (*tok)->Encode("cat concat", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int64_t>{262, ' ', 'c', 'o', 'n', 'c', 'a', 't'}));
}

// ---------------------------------------------------------------------------------------------
// Errors.

void ExpectInvalid(const std::string& json, const std::string& needle) {
  auto tok = Tokenizer::FromJson(json, "broken/tokenizer.json");
  ASSERT_FALSE(tok.ok()) << json;
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("broken/tokenizer.json"));
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(needle));
}

TEST(Tokenizer, MalformedFilesAreInvalidArgumentNamingTheFile) {
  ExpectInvalid("{\"model\": {", "malformed JSON");
  ExpectInvalid("", "malformed JSON");
  ExpectInvalid("[1, 2]", "not a JSON object");
  ExpectInvalid("{}", "model");
  ExpectInvalid(R"({"model": {"type": "BPE", "merges": []}})", "vocab");
  ExpectInvalid(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})", "merges");
  ExpectInvalid(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})", "WordPiece");
  ExpectInvalid(R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})", "Unigram");
  ExpectInvalid(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})", "vocab");
  ExpectInvalid(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}})",
                "merges[0]");
  ExpectInvalid(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}})",
                "'ab' is not in the vocab");
  ExpectInvalid(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "?"}})",
                "unk_token");
  ExpectInvalid(R"({"normalizer": {"type": "Fancy"},
                    "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})",
                "normalizer");
  ExpectInvalid(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"},
                    "behavior": "Isolated", "invert": false},
                    "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})",
                "pre_tokenizer");
  ExpectInvalid(R"({"added_tokens": [{"content": "x"}],
                    "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})",
                "added_tokens");
  ExpectInvalid(
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": 3}})",
      "byte_fallback");
}

TEST(Tokenizer, FileErrorsNameTheFile) {
  auto missing = Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("/nonexistent/dir/tokenizer.json"));

  const std::string dir = TempDir("truncated");
  const std::string path = dir + "/tokenizer.json";
  const std::string full = ReadFile(kStories + "/tokenizer.json");
  WriteFile(path, full.substr(0, full.size() / 2));
  auto truncated = Tokenizer::FromFile(path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr(path));

  // A directory resolves to DIR/tokenizer.json.
  auto by_dir = Tokenizer::FromFile(kStories);
  ASSERT_TRUE(by_dir.ok()) << by_dir.status();
  EXPECT_EQ((*by_dir)->vocab_size(), 512);
}

// ---------------------------------------------------------------------------------------------
// `swarm tokenize`.

struct RunResult {
  int exit_code;
  std::string out, err;
};

RunResult RunSwarm(const std::string& args, const std::string& stdin_text) {
  const std::string dir = TempDir("cli");
  const std::string in = dir + "/in.txt", out = dir + "/out.txt", err = dir + "/err.txt";
  WriteFile(in, stdin_text);
  const std::string cmd = absl::StrCat("'", SWARM_BINARY_DIR, "/swarm' ", args, " < '", in, "' > '",
                                       out, "' 2> '", err, "'");
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(out), ReadFile(err)};
}

TEST(SwarmTokenizeCommand, EncodesGoldenTextsLineByLine) {
  if (!std::filesystem::exists(std::string(SWARM_BINARY_DIR) + "/swarm")) {
    SWARM_SKIP_OR_FAIL("the swarm binary is not built");
  }
  // Each run pays the binary's start-up (LibTorch), so one run per flag setting.
  for (const auto& [name, special] : {std::pair<std::string, bool>{"sp-bpe-32k", true},
                                      std::pair<std::string, bool>{"qwen3", false}}) {
    SCOPED_TRACE(name);
    const Json golden = Json::parse(ReadFile(kTokenizers + "/" + name + "/golden_visible.json"));
    std::string input;
    for (const Json& item : golden.at("texts")) input += item.at("text").dump() + "\n";
    RunResult r = RunSwarm(absl::StrCat("tokenize --tokenizer '", kTokenizers, "/", name,
                                        "/tokenizer.json'", special ? "" : " --no-special"),
                           input);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
    ASSERT_EQ(lines.size(), golden.at("texts").size());
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(Ids(Json::parse(lines[i])),
                Ids(golden.at("texts")[i].at(special ? "ids" : "ids_no_special")))
          << lines[i];
    }
  }
}

TEST(SwarmTokenizeCommand, ErrorsExitNonZeroWithOneLine) {
  if (!std::filesystem::exists(std::string(SWARM_BINARY_DIR) + "/swarm")) {
    SWARM_SKIP_OR_FAIL("the swarm binary is not built");
  }
  RunResult missing = RunSwarm("tokenize --tokenizer /nonexistent/tokenizer.json", "\"a\"\n");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/tokenizer.json"));
  EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1) << missing.err;

  RunResult bad_line =
      RunSwarm(absl::StrCat("tokenize --tokenizer ", kStories), "\"ok\"\nnot json\n");
  EXPECT_NE(bad_line.exit_code, 0);
  auto ok_ids = Fixture("stories260K").Encode("ok");
  ASSERT_TRUE(ok_ids.ok());
  EXPECT_EQ(bad_line.out, absl::StrCat("[", absl::StrJoin(*ok_ids, ","), "]\n"));
  EXPECT_THAT(bad_line.err, HasSubstr("line 2"));
  EXPECT_EQ(std::count(bad_line.err.begin(), bad_line.err.end(), '\n'), 1) << bad_line.err;
}

}  // namespace
}  // namespace swarm::tokenizer
