// Helpers shared by the benchmarks that start servers as child processes (distributed_bench,
// serving_bench): the directory of the running binary (the other binaries sit beside it), child
// processes whose stdout is read until a line announces their address, and percentiles.
// Header-only; single-threaded use (one driver thread starts and stops the children).
#ifndef SWARM_BENCH_BENCH_UTIL_H_
#define SWARM_BENCH_BENCH_UTIL_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"

namespace swarm::bench {

// The p-quantile (0..1) of `v` by nearest rank below; 0 for an empty vector.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * (v.size() - 1))];
}

// Appends `flag value` to argv unless `given` (flags the user passed on) has `flag` already.
inline void AddFlagUnlessGiven(std::vector<std::string>* argv,
                               const std::vector<std::string>& given, const std::string& flag,
                               const std::string& value) {
  if (std::find(given.begin(), given.end(), flag) != given.end()) return;
  argv->push_back(flag);
  argv->push_back(value);
}

// The directory holding the running executable (the build directory).
inline std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string path(buf, n > 0 ? n : 0);
  return path.substr(0, path.rfind('/'));
}

// A child process whose stdout we read; SIGINT and a wait on destruction. Dies with us.
struct Child {
  pid_t pid = -1;
  int fd = -1;
  std::string pending;  // Read from stdout, not yet consumed by WaitForLine.
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGINT);
      int status;
      waitpid(pid, &status, 0);
    }
    if (fd >= 0) close(fd);
  }
};

inline std::string WaitForLine(Child* child, const std::string& prefix);

// Starts `argv` (argv[0] looked up in PATH when it has no '/'), stderr to /dev/null (or appended
// to the file $SWARM_BENCH_CHILD_LOG names), with
// OPENBLAS_THREAD_TIMEOUT=4 unless set (as `swarm up` does: idle OpenBLAS threads spinning would
// steal the cores of the process whose turn it is). Returns what follows `prefix` on the first
// stdout line that starts with it, or "" when the child exits or 180 s pass.
inline std::string SpawnAndWait(Child* child, std::vector<std::string> argv,
                                const std::string& prefix) {
  int fds[2];
  if (pipe(fds) != 0) return "";
  child->pid = fork();
  if (child->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", /*overwrite=*/0);
    dup2(fds[1], STDOUT_FILENO);
    const char* log = std::getenv("SWARM_BENCH_CHILD_LOG");
    int err = open(log != nullptr ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(err, STDERR_FILENO);
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  child->fd = fds[0];
  return WaitForLine(child, prefix);
}

// Reads the child's stdout (after what earlier calls consumed) up to the first line that starts
// with `prefix`; returns the rest of that line, or "" when the child exits or 180 s pass.
inline std::string WaitForLine(Child* child, const std::string& prefix) {
  using Clock = std::chrono::steady_clock;
  std::string& buffer = child->pending;
  const auto end = Clock::now() + std::chrono::seconds(180);
  while (Clock::now() < end) {
    size_t nl = buffer.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      absl::string_view rest = line;
      if (absl::ConsumePrefix(&rest, prefix)) return std::string(absl::StripAsciiWhitespace(rest));
      continue;
    }
    pollfd p{child->fd, POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      char buf[1024];
      ssize_t n = read(child->fd, buf, sizeof(buf));
      if (n <= 0) return "";
      buffer.append(buf, n);
    }
  }
  return "";
}

}  // namespace swarm::bench

#endif  // SWARM_BENCH_BENCH_UTIL_H_
