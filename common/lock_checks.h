// Lock-order checking of absl::Mutex in the binaries. Unless it is built with NDEBUG, absl checks
// every acquisition against a process-wide graph of lock orders, and a *potential* inversion (two
// mutexes ever taken in both orders, even on paths that can never race) aborts the process.
// Debian's libabsl is built that way: each Lock then updates the graph under one process-wide lock
// that every thread shares (gRPC's included), ~3.6× the cost of an uncontended nested pair on
// this project's VMs. The servers, the CLI and the benchmarks run as absl's release builds do,
// without the check; the unit tests keep absl's default, so an order inversion still fails them.
#ifndef SWARM_COMMON_LOCK_CHECKS_H_
#define SWARM_COMMON_LOCK_CHECKS_H_

namespace swarm {

// Turns absl's lock-order (deadlock) detection off for the process. Call at the top of main(),
// before any mutex is used.
void DisableLockOrderChecks();

}  // namespace swarm

#endif  // SWARM_COMMON_LOCK_CHECKS_H_
