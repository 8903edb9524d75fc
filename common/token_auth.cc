#include "common/token_auth.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"

namespace swarm::common {

namespace {

constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 512;
constexpr size_t kMaxNameBytes = 64;
constexpr int64_t kMaxFileBytes = int64_t{1} << 20;

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

bool ValidSecret(absl::string_view secret) {
  if (secret.size() < kMinTokenBytes || secret.size() > kMaxTokenBytes) return false;
  for (char c : secret) {
    if (!absl::ascii_isgraph(c) || c == ':') return false;
  }
  return true;
}

absl::Status Unauthenticated() {
  return absl::UnauthenticatedError(
      "a valid token is required: send 'authorization: Bearer TOKEN' (swarm --token-file FILE or "
      "SWARM_TOKEN)");
}

bool Stat(const std::string& path, int64_t* mtime_ns, int64_t* size) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  *mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  *size = st.st_size;
  return true;
}

// `what`: the flag and the file, as errors name them ("--auth-tokens 'tokens.txt'").
absl::StatusOr<std::string> ReadTokensFile(const std::string& path, absl::string_view what) {
  int64_t mtime = 0, size = 0;
  if (!Stat(path, &mtime, &size)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": cannot be read"));
  }
  if (size > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", size, " bytes, more than a tokens file holds"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot be read"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of the longer string is looked at whatever the contents; only the lengths (which a
  // token's format bounds) affect the time.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

TokenAuth::Lease::Lease(Lease&& other) noexcept
    : count_(std::move(other.count_)), name_(std::move(other.name_)), counted_(other.counted_) {
  other.count_ = nullptr;
  other.counted_ = false;
}

TokenAuth::Lease& TokenAuth::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (counted_) count_->fetch_sub(1);
    count_ = std::move(other.count_);
    name_ = std::move(other.name_);
    counted_ = other.counted_;
    other.count_ = nullptr;
    other.counted_ = false;
  }
  return *this;
}

TokenAuth::Lease::~Lease() {
  if (counted_) count_->fetch_sub(1);
}

absl::StatusOr<std::vector<TokenAuth::Token>> TokenAuth::Parse(absl::string_view text,
                                                               absl::string_view what) {
  std::vector<Token> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    Token t;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      t.name = absl::StrCat("token-", line_number);
      t.secret = std::string(line);
    } else {
      t.name = std::string(line.substr(0, colon));
      t.secret = std::string(line.substr(colon + 1));
      if (!ValidName(t.name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, " line ", line_number, ": a name is 1 to 64 of [A-Za-z0-9_.-] before the ':'"));
      }
    }
    if (!ValidSecret(t.secret)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " line ", line_number, ": a token is ", kMinTokenBytes, " to ",
                       kMaxTokenBytes, " printable characters without spaces or ':'"));
    }
    for (const Token& other : tokens) {
      if (other.name == t.name) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " line ", line_number, ": the name '", t.name, "' is used twice"));
      }
      if (other.secret == t.secret) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " line ", line_number, ": the same token as '", other.name, "'"));
      }
    }
    t.active = std::make_shared<std::atomic<int>>(0);
    tokens.push_back(std::move(t));
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": holds no token"));
  }
  return tokens;
}

absl::StatusOr<std::unique_ptr<TokenAuth>> TokenAuth::FromText(absl::string_view text,
                                                               const TokenAuthOptions& options) {
  absl::StatusOr<std::vector<Token>> tokens = Parse(text, "tokens");
  if (!tokens.ok()) return tokens.status();
  auto auth = std::unique_ptr<TokenAuth>(new TokenAuth(options));
  absl::MutexLock lock(&auth->mu_);
  auth->tokens_ = *std::move(tokens);
  return auth;
}

absl::StatusOr<std::unique_ptr<TokenAuth>> TokenAuth::Load(const TokenAuthOptions& options) {
  int64_t mtime = 0, size = 0;
  const bool have_stat = Stat(options.path, &mtime, &size);
  const std::string what = absl::StrCat(options.flag, " '", options.path, "'");
  absl::StatusOr<std::string> text = ReadTokensFile(options.path, what);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<Token>> tokens = Parse(*text, what);
  if (!tokens.ok()) return tokens.status();
  auto auth = std::unique_ptr<TokenAuth>(new TokenAuth(options));
  absl::MutexLock lock(&auth->mu_);
  auth->tokens_ = *std::move(tokens);
  if (have_stat) {
    auth->mtime_ns_ = mtime;
    auth->size_ = size;
  }
  auth->next_check_ = absl::Now() + options.reload_interval;
  return auth;
}

void TokenAuth::MaybeReload() {
  {
    absl::ReaderMutexLock lock(&mu_);
    if (absl::Now() < next_check_) return;
  }
  absl::MutexLock lock(&mu_);
  if (absl::Now() < next_check_) return;  // Another caller checked meanwhile.
  next_check_ = absl::Now() + options_.reload_interval;
  int64_t mtime = 0, size = 0;
  if (!Stat(options_.path, &mtime, &size) || (mtime == mtime_ns_ && size == size_)) return;
  mtime_ns_ = mtime;
  size_ = size;
  const std::string what = absl::StrCat(options_.flag, " '", options_.path, "'");
  absl::StatusOr<std::string> text = ReadTokensFile(options_.path, what);
  absl::StatusOr<std::vector<Token>> tokens =
      text.ok() ? Parse(*text, what) : absl::StatusOr<std::vector<Token>>(text.status());
  if (!tokens.ok()) {
    LogLine(options_.log_name,
            absl::StrCat("keeping the tokens in force: ", tokens.status().message()));
    return;
  }
  // A token that stays keeps its running requests' count.
  for (Token& t : *tokens) {
    for (const Token& old : tokens_) {
      if (old.name == t.name && old.secret == t.secret) t.active = old.active;
    }
  }
  tokens_ = *std::move(tokens);
  LogLine(options_.log_name, absl::StrCat("reloaded ", what, ": ", tokens_.size(), " tokens"));
}

int TokenAuth::Match(absl::string_view secret) const {
  int found = -1;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (ConstantTimeEquals(tokens_[i].secret, secret) && found < 0) found = static_cast<int>(i);
  }
  return found;
}

absl::StatusOr<TokenAuth::Lease> TokenAuth::Find(absl::string_view authorization) {
  if (!options_.path.empty()) MaybeReload();
  absl::string_view value = absl::StripAsciiWhitespace(authorization);
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return Unauthenticated();
  }
  absl::string_view secret = absl::StripAsciiWhitespace(value.substr(7));
  if (secret.empty() || secret.size() > kMaxTokenBytes) return Unauthenticated();
  absl::ReaderMutexLock lock(&mu_);
  const int i = Match(secret);
  if (i < 0) return Unauthenticated();
  return Lease(tokens_[i].active, tokens_[i].name, /*counted=*/false);
}

absl::StatusOr<std::string> TokenAuth::Authenticate(absl::string_view authorization) {
  absl::StatusOr<Lease> found = Find(authorization);
  if (!found.ok()) return found.status();
  return found->name();
}

absl::StatusOr<TokenAuth::Lease> TokenAuth::Acquire(absl::string_view authorization) {
  absl::StatusOr<Lease> found = Find(authorization);
  if (!found.ok()) return found.status();
  std::shared_ptr<std::atomic<int>> count = found->count_;
  if (count->fetch_add(1) >= options_.max_requests_per_token) {
    count->fetch_sub(1);
    return absl::ResourceExhaustedError(
        absl::StrCat("client '", found->name(), "' already has ", options_.max_requests_per_token,
                     " requests running or queued (the per-token limit)"));
  }
  return Lease(std::move(count), found->name(), /*counted=*/true);
}

int TokenAuth::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<int>(tokens_.size());
}

}  // namespace swarm::common
