#include "common/signals.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>

#include "absl/time/clock.h"

namespace swarm {
namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  sigset_t set = ShutdownSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

int WaitForShutdownSignalFor(absl::Duration timeout) {
  sigset_t set = ShutdownSignals();
  const absl::Time end = absl::Now() + timeout;
  while (true) {
    const absl::Duration left = std::max(end - absl::Now(), absl::ZeroDuration());
    timespec ts = absl::ToTimespec(left);
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig > 0) return sig;
    if (errno != EINTR || left == absl::ZeroDuration()) return 0;
  }
}

}  // namespace swarm
