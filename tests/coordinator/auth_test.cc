// coordinator/auth.h: the tokens file format, bearer parsing, UNAUTHENTICATED for missing or
// wrong tokens, the per-token limit, reloading on change, constant-time comparison's verdicts.
#include "coordinator/auth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "absl/time/clock.h"

namespace swarm::coordinator {
namespace {

constexpr char kTokens[] =
    "# clients\n"
    "alice:alice-0123456789abcdef\n"
    "\n"
    "bare-token-0123456789\n";

TEST(TokenAuthTest, AcceptsOnlyItsTokens) {
  TokenAuthOptions options;
  auto auth = TokenAuth::FromText(kTokens, options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->size(), 2);
  EXPECT_EQ(*(*auth)->Authenticate("Bearer alice-0123456789abcdef"), "alice");
  EXPECT_EQ(*(*auth)->Authenticate("bearer   alice-0123456789abcdef "), "alice");
  EXPECT_EQ(*(*auth)->Authenticate("Bearer bare-token-0123456789"), "token-4");
  for (const char* bad : {"", "Bearer", "Bearer ", "alice-0123456789abcdef",
                          "Basic alice-0123456789abcdef", "Bearer alice-0123456789abcdeF",
                          "Bearer alice-0123456789abcde", "Bearer alice-0123456789abcdefg"}) {
    absl::StatusOr<std::string> r = (*auth)->Authenticate(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_EQ(r.status().message().find("alice-"), std::string::npos);
  }
}

TEST(TokenAuthTest, MalformedFilesNameTheLineNotTheToken) {
  TokenAuthOptions options;
  for (const char* bad : {"", "# only a comment\n", "short\n", "al ice:alice-0123456789abcdef\n",
                          "a:alice-0123456789abcdef\na:bob-0123456789abcdefgh\n",
                          "a:alice-0123456789abcdef\nb:alice-0123456789abcdef\n"}) {
    absl::StatusOr<std::unique_ptr<TokenAuth>> auth = TokenAuth::FromText(bad, options);
    EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(auth.status().message().find("0123456789"), std::string::npos) << auth.status();
  }
}

TEST(TokenAuthTest, ATokenHasAtMostItsLimitOfRequests) {
  TokenAuthOptions options;
  options.max_requests_per_token = 2;
  auto auth = TokenAuth::FromText(kTokens, options);
  ASSERT_TRUE(auth.ok());
  auto a = (*auth)->Acquire("Bearer alice-0123456789abcdef");
  auto b = (*auth)->Acquire("Bearer alice-0123456789abcdef");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*auth)->Acquire("Bearer alice-0123456789abcdef").status().code(),
            absl::StatusCode::kResourceExhausted);
  // Another token is not affected, and authentication alone takes no slot.
  EXPECT_TRUE((*auth)->Acquire("Bearer bare-token-0123456789").ok());
  EXPECT_TRUE((*auth)->Authenticate("Bearer alice-0123456789abcdef").ok());
  { TokenAuth::Lease freed = *std::move(a); }
  EXPECT_TRUE((*auth)->Acquire("Bearer alice-0123456789abcdef").ok());
}

TEST(TokenAuthTest, TheFileIsReloadedWhenItChanges) {
  const std::string path = ::testing::TempDir() + "/swarm-tokens-" + std::to_string(getpid());
  { std::ofstream(path) << "alice:alice-0123456789abcdef\n"; }
  TokenAuthOptions options;
  options.path = path;
  options.reload_interval = absl::ZeroDuration();
  auto auth = TokenAuth::Load(options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->Authenticate("Bearer alice-0123456789abcdef").ok());
  // Rotation: a new file (another size) replaces the old token.
  { std::ofstream(path) << "alice:alice-rotated-0123456789abcdef\n"; }
  EXPECT_EQ((*auth)->Authenticate("Bearer alice-0123456789abcdef").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE((*auth)->Authenticate("Bearer alice-rotated-0123456789abcdef").ok());
  // A broken file keeps the tokens in force.
  { std::ofstream(path) << "broken\n"; }
  EXPECT_TRUE((*auth)->Authenticate("Bearer alice-rotated-0123456789abcdef").ok());
  std::remove(path.c_str());
  EXPECT_EQ(TokenAuth::Load(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenAuthTest, ConstantTimeEqualsIsEquality) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0", 2), "a"));
}

}  // namespace
}  // namespace swarm::coordinator
