#include "common/lock_checks.h"

#include "absl/synchronization/mutex.h"

namespace swarm {

void DisableLockOrderChecks() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace swarm
