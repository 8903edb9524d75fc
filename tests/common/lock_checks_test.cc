#include "common/lock_checks.h"

#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace swarm {
namespace {

// Two mutexes taken in both orders: absl's lock-order check (on where libabsl is built without
// NDEBUG, as Debian's is) aborts on the second order; after DisableLockOrderChecks it does not.
void TakeInBothOrders() {
  absl::Mutex a, b;
  {
    absl::MutexLock la(&a);
    absl::MutexLock lb(&b);
  }
  {
    absl::MutexLock lb(&b);
    absl::MutexLock la(&a);
  }
}

TEST(LockChecks, DisabledChecksLetAnInversionPass) {
  // In a child process: the mode is process-wide, and the rest of this binary keeps the check.
  EXPECT_EXIT(
      {
        DisableLockOrderChecks();
        TakeInBothOrders();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace swarm
