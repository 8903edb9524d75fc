// Shutdown signals of the server binaries: main() blocks SIGINT and SIGTERM before it starts any
// thread (every thread inherits the mask), then waits for one of them on its own thread.
// BlockShutdownSignals must run first, single-threaded; WaitForShutdownSignal is thread-safe.
#ifndef SWARM_COMMON_SIGNALS_H_
#define SWARM_COMMON_SIGNALS_H_

#include "absl/time/time.h"

namespace swarm {

// Blocks SIGINT and SIGTERM in the calling thread and in every thread it starts afterwards, so
// that WaitForShutdownSignal() receives them. Call at the top of main(), before any thread exists.
void BlockShutdownSignals();
// Waits for SIGINT or SIGTERM and returns its number.
int WaitForShutdownSignal();
// Waits up to `timeout` for SIGINT or SIGTERM: its number, or 0 when none came.
int WaitForShutdownSignalFor(absl::Duration timeout);

}  // namespace swarm

#endif  // SWARM_COMMON_SIGNALS_H_
