// Bearer-token authentication: the coordinator's clients (--auth-tokens FILE) and the scrapers of
// both servers' /metrics (--metrics-auth-tokens FILE, common/metrics_server.h). Tokens are
// checked in constant time, each with a name for logs and a limit on the requests it may have
// running or queued at once. Transport-free: the gRPC service passes the value of the
// `authorization` metadata, an HTTP adapter the value of its `Authorization` header, and both get
// the same verdicts (UNAUTHENTICATED for a missing or wrong token, RESOURCE_EXHAUSTED over the
// limit).
//
// The tokens file: one token per line, as `name:token` or a bare `token` (then named
// "token-<line>"); blank lines and lines starting with '#' are ignored. A token is 16 to 512
// printable ASCII characters without spaces or ':'; names are [A-Za-z0-9_.-], 1 to 64 characters.
// The file is re-read when its modification time or size changes (checked at most once per
// `reload_interval`), so tokens rotate without a restart; a file that no longer parses keeps the
// tokens in force and is logged.
//
// Threading: thread-safe.
#ifndef SWARM_COMMON_TOKEN_AUTH_H_
#define SWARM_COMMON_TOKEN_AUTH_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace swarm::common {

struct TokenAuthOptions {
  std::string path;                            // The tokens file.
  std::string flag = "--auth-tokens";          // Names the file in errors and log lines.
  std::string log_name = "swarm-coordinator";  // The process, in log lines (common/logging.h).
  int max_requests_per_token = 8;              // Running or queued at once, per token.
  absl::Duration reload_interval = absl::Seconds(5);
};

class TokenAuth {
 public:
  // A slot of one token's concurrent-request limit, held for the life of a request; movable.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();
    const std::string& name() const { return name_; }

   private:
    friend class TokenAuth;
    Lease(std::shared_ptr<std::atomic<int>> count, std::string name, bool counted)
        : count_(std::move(count)), name_(std::move(name)), counted_(counted) {}
    std::shared_ptr<std::atomic<int>> count_;
    std::string name_;
    bool counted_ = false;  // Holds one of the token's slots.
  };

  // Reads the tokens file. InvalidArgument naming the file and line for a malformed one (the
  // token itself is never quoted), or for a file without any token.
  static absl::StatusOr<std::unique_ptr<TokenAuth>> Load(const TokenAuthOptions& options);
  // The same over the text of a tokens file (no reloading); for tests and fuzzing.
  static absl::StatusOr<std::unique_ptr<TokenAuth>> FromText(absl::string_view text,
                                                             const TokenAuthOptions& options);

  // The name of the client whose token `authorization` carries ("Bearer TOKEN", the scheme in any
  // case). UNAUTHENTICATED when it is missing (empty), malformed, or no token matches; the
  // message never repeats what was sent.
  absl::StatusOr<std::string> Authenticate(absl::string_view authorization);
  // Authenticate, then one of the token's request slots: RESOURCE_EXHAUSTED when all
  // max_requests_per_token are taken.
  absl::StatusOr<Lease> Acquire(absl::string_view authorization);

  int size() const;  // Tokens in force.

 private:
  struct Token {
    std::string name;
    std::string secret;
    std::shared_ptr<std::atomic<int>> active;
  };
  TokenAuth(TokenAuthOptions options) : options_(std::move(options)) {}
  static absl::StatusOr<std::vector<Token>> Parse(absl::string_view text, absl::string_view what);
  void MaybeReload();
  // The token `authorization` carries, as a lease that holds no slot yet; UNAUTHENTICATED.
  absl::StatusOr<Lease> Find(absl::string_view authorization);
  // The index of the token matching `secret` (compared with every token, in constant time for
  // each), or -1.
  int Match(absl::string_view secret) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const TokenAuthOptions options_;
  mutable absl::Mutex mu_;
  std::vector<Token> tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time next_check_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
};

// True when `a` and `b` are equal, in time that depends only on their lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace swarm::common

#endif  // SWARM_COMMON_TOKEN_AUTH_H_
