// The BPE model of tokenizer.json (see tokenizer_internal.h): vocab and ranked merges, applied to
// one pre-tokenized word at a time with a priority queue over adjacent pairs, as the Rust
// library's Word::merge_all does (lowest rank first, leftmost first among equal ranks).
#include <queue>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "tokenizer/tokenizer_internal.h"

namespace swarm::tokenizer::internal {

// ---------------------------------------------------------------------------------------------
// Loading.

namespace {

// nlohmann SAX handler: builds the DOM, except for model.vocab / model.merges (see BpeTables).
class TokenizerSax {
 public:
  TokenizerSax(Json* root, BpeTables* tables) : root_(root), tables_(tables) {}

  const std::string& error() const { return error_; }

  bool null() { return Value(Json(nullptr)); }
  bool boolean(bool v) { return Value(Json(v)); }
  bool number_integer(int64_t v) { return Value(Json(v)); }
  bool number_unsigned(uint64_t v) { return Value(Json(v)); }
  bool number_float(double v, const std::string&) { return Value(Json(v)); }
  bool binary(Json::binary_t&) { return Fail("unexpected binary value"); }

  bool string(std::string& v) {
    switch (mode_) {
      case Mode::kVocab:
        return Fail(absl::StrCat("model.vocab['", vocab_key_, "'] is not an integer id"));
      case Mode::kMerges: {
        BpeTables::Merge m;
        m.first = std::move(v);
        tables_->merges.push_back(std::move(m));
        return true;
      }
      case Mode::kMergePair:
        if (pair_.size() == 2) return Fail(MergeError());
        pair_.push_back(std::move(v));
        return true;
      case Mode::kDom:
        return Value(Json(std::move(v)));
    }
    return true;
  }

  bool key(std::string& k) {
    if (mode_ == Mode::kVocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    frames_.back().key = std::move(k);
    return true;
  }

  bool start_object(std::size_t) {
    if (mode_ != Mode::kDom) {
      return Fail(mode_ == Mode::kVocab
                      ? absl::StrCat("model.vocab['", vocab_key_, "'] is not an integer id")
                      : MergeError());
    }
    if (AtModelKey("vocab")) {
      mode_ = Mode::kVocab;
      tables_->has_vocab = true;
      return true;
    }
    return Open(Json::object());
  }

  bool end_object() {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    return Close();
  }

  bool start_array(std::size_t) {
    switch (mode_) {
      case Mode::kVocab:
        return Fail(absl::StrCat("model.vocab['", vocab_key_, "'] is not an integer id"));
      case Mode::kMerges:
        mode_ = Mode::kMergePair;
        pair_.clear();
        return true;
      case Mode::kMergePair:
        return Fail(MergeError());
      case Mode::kDom:
        break;
    }
    if (AtModelKey("merges")) {
      mode_ = Mode::kMerges;
      tables_->has_merges = true;
      return true;
    }
    return Open(Json::array());
  }

  bool end_array() {
    switch (mode_) {
      case Mode::kMerges:
        mode_ = Mode::kDom;
        return true;
      case Mode::kMergePair: {
        if (pair_.size() != 2) return Fail(MergeError());
        BpeTables::Merge m;
        m.first = std::move(pair_[0]);
        m.second = std::move(pair_[1]);
        m.is_pair = true;
        tables_->merges.push_back(std::move(m));
        mode_ = Mode::kMerges;
        return true;
      }
      default:
        return Close();
    }
  }

  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& ex) {
    if (error_.empty()) {
      error_ = absl::StrCat("malformed JSON at byte ", position, ": ", ex.what());
    }
    return false;
  }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };
  struct Frame {
    Json* node;
    std::string key;  // The pending key while `node` is an object.
  };

  // True when the value being opened sits at model.<name> (root → "model" → name).
  bool AtModelKey(const char* name) const {
    return frames_.size() == 2 && frames_[0].key == "model" && frames_[1].node->is_object() &&
           frames_[1].key == name;
  }

  // Where the next value goes: the root, the pending key of an object, or the end of an array.
  Json* Slot() {
    if (frames_.empty()) return root_;
    Frame& f = frames_.back();
    if (f.node->is_object()) return &(*f.node)[f.key];
    f.node->push_back(Json());
    return &f.node->back();
  }

  bool Value(Json v) {
    switch (mode_) {
      case Mode::kVocab:
        if (!v.is_number_integer()) {
          return Fail(absl::StrCat("model.vocab['", vocab_key_, "'] is not an integer id"));
        }
        tables_->vocab.emplace_back(std::move(vocab_key_), v.get<int64_t>());
        return true;
      case Mode::kMerges:
      case Mode::kMergePair:
        return Fail(MergeError());
      case Mode::kDom:
        *Slot() = std::move(v);
        return true;
    }
    return true;
  }

  bool Open(Json container) {
    Json* slot = Slot();
    *slot = std::move(container);
    frames_.push_back(Frame{slot, std::string()});
    return true;
  }

  bool Close() {
    if (!frames_.empty()) frames_.pop_back();
    return true;
  }

  std::string MergeError() const {
    return absl::StrCat("model.merges[", tables_->merges.size(),
                        "] is neither \"a b\" nor [\"a\", \"b\"]");
  }

  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  Json* root_;
  BpeTables* tables_;
  std::vector<Frame> frames_;
  Mode mode_ = Mode::kDom;
  std::string vocab_key_;
  std::vector<std::string> pair_;
  std::string error_;
};

std::optional<std::string> OptionalString(const Json& model, const char* key) {
  if (!model.contains(key) || model.at(key).is_null()) return std::nullopt;
  return model.at(key).get<std::string>();
}

}  // namespace

absl::Status ParseTokenizerJson(absl::string_view text, Json* root, BpeTables* tables) {
  TokenizerSax sax(root, tables);
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed JSON: ", e.what()));
  }
  if (!ok) {
    return absl::InvalidArgumentError(sax.error().empty() ? "malformed JSON" : sax.error());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const Json& model, BpeTables tables) {
  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  if (!tables.has_vocab) {
    return absl::InvalidArgumentError("model.vocab is missing or not an object");
  }
  if (!tables.has_merges) {
    return absl::InvalidArgumentError("model.merges is missing or not an array");
  }
  bpe->vocab_.reserve(tables.vocab.size());
  int64_t max_id = -1;
  for (auto& [token, id] : tables.vocab) {
    if (id < 0 || id > (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab['", token, "'] has id ", id, " out of range"));
    }
    max_id = std::max(max_id, id);
    bpe->vocab_[std::move(token)] = static_cast<int32_t>(id);
  }
  tables.vocab.clear();
  tables.vocab.shrink_to_fit();
  bpe->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  bpe->has_id_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : bpe->vocab_) {
    bpe->id_to_token_[id] = token;
    bpe->has_id_[id] = true;
  }

  bpe->continuing_subword_prefix_ = OptionalString(model, "continuing_subword_prefix").value_or("");
  bpe->end_of_word_suffix_ = OptionalString(model, "end_of_word_suffix").value_or("");
  for (auto [key, flag] : {std::pair<const char*, bool*>{"byte_fallback", &bpe->byte_fallback_},
                           {"fuse_unk", &bpe->fuse_unk_},
                           {"ignore_merges", &bpe->ignore_merges_}}) {
    if (!model.contains(key) || model.at(key).is_null()) continue;
    if (!model.at(key).is_boolean()) {
      return absl::InvalidArgumentError(absl::StrCat("model.", key, " is not a boolean"));
    }
    *flag = model.at(key).get<bool>();
  }
  if (std::optional<std::string> unk = OptionalString(model, "unk_token"); unk.has_value()) {
    auto it = bpe->vocab_.find(*unk);
    if (it == bpe->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token '", *unk, "' is not in the vocab"));
    }
    bpe->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = bpe->vocab_.find(absl::StrFormat("<0x%02X>", b));
    bpe->byte_ids_[b] = it == bpe->vocab_.end() ? -1 : it->second;
  }

  bpe->merges_.reserve(tables.merges.size());
  const size_t prefix_len = bpe->continuing_subword_prefix_.size();
  std::string merged;
  for (size_t rank = 0; rank < tables.merges.size(); ++rank) {
    const BpeTables::Merge& m = tables.merges[rank];
    absl::string_view a = m.first, b = m.second;
    if (!m.is_pair) {
      const size_t space = m.first.find(' ');
      if (space == std::string::npos || m.first.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.merges[", rank, "] '", m.first, "' is not two tokens \"a b\""));
      }
      a = absl::string_view(m.first).substr(0, space);
      b = absl::string_view(m.first).substr(space + 1);
    }
    auto ia = bpe->vocab_.find(a);
    auto ib = bpe->vocab_.find(b);
    if (ia == bpe->vocab_.end() || ib == bpe->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "] ('", a, "', '", b,
                                                     "') names a token outside the vocab"));
    }
    merged.assign(a.data(), a.size());
    absl::string_view tail = b;
    if (prefix_len > 0 && absl::StartsWith(tail, bpe->continuing_subword_prefix_)) {
      tail.remove_prefix(prefix_len);
    }
    merged.append(tail.data(), tail.size());
    auto im = bpe->vocab_.find(merged);
    if (im == bpe->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("model.merges[", rank, "]: merged token '",
                                                     merged, "' is not in the vocab"));
    }
    bpe->merges_[PairKey(ia->second, ib->second)] =
        MergeInfo{static_cast<int32_t>(rank), im->second};
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

absl::Status BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids->push_back(it->second);
      return absl::OkStatus();
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return absl::OkStatus();
    }
  }
  std::vector<int32_t> word_ids;
  MergeWord(word, &word_ids);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(word_ids));
  }
  return absl::OkStatus();
}

void BpeModel::MergeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&symbols](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1, true});
  };

  // Split into characters, mapping each to its id, byte-fallback ids, or unk.
  int32_t pending_unk = -1;  // The unk symbol not yet added (fuse_unk extends it).
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    pos += std::min<size_t>(Utf8SequenceLength(static_cast<unsigned char>(word[pos])),
                            word.size() - pos);
    absl::string_view ch = word.substr(start, pos - start);
    absl::string_view key = ch;
    if ((start > 0 && !continuing_subword_prefix_.empty()) ||
        (pos == word.size() && !end_of_word_suffix_.empty())) {
      piece.clear();
      if (start > 0) piece += continuing_subword_prefix_;
      piece.append(ch.data(), ch.size());
      if (pos == word.size()) piece += end_of_word_suffix_;
      key = piece;
    }
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : key) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As in the Rust library, a pending unk is not flushed before byte-fallback tokens.
        for (char c : key) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }
    // Without an unk token the character is dropped, as in the Rust library.
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {
      // std::priority_queue pops the largest: invert so the lowest rank, then the leftmost
      // position, comes first.
      if (rank != o.rank) return rank > o.rank;
      return pos > o.pos;
    }
  };
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(storage));
  auto lookup = [this](int32_t a, int32_t b) -> const MergeInfo* {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const MergeInfo* m = lookup(symbols[i].id, symbols[i + 1].id)) {
      queue.push(Candidate{m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Skip entries made stale by earlier merges.
    const MergeInfo* m = lookup(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeInfo* pm = lookup(symbols[left.prev].id, left.id)) {
        queue.push(Candidate{pm->rank, left.prev, pm->new_id});
      }
    }
    if (left.next >= 0) {
      if (const MergeInfo* nm = lookup(left.id, symbols[left.next].id)) {
        queue.push(Candidate{nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.alive) ids->push_back(s.id);
  }
}

}  // namespace swarm::tokenizer::internal
