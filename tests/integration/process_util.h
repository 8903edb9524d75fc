// Child processes for the integration tests: spawn a binary with its stdout on a pipe (stderr to
// a log file), wait for a line, run a command to completion, list a process's children.
// Header-only (the integration tests are one binary; this keeps each test file short).
// Not thread-safe.
#ifndef SWARM_TESTS_INTEGRATION_PROCESS_UTIL_H_
#define SWARM_TESTS_INTEGRATION_PROCESS_UTIL_H_

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace swarm::testing {

inline const std::string kBin = SWARM_BINARY_DIR;

class Process {
 public:
  // Starts argv[0] (a path) with stdout on a pipe and stderr appended to `log`.
  Process(const std::vector<std::string>& argv, const std::string& log) : log_(log) {
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      int err = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (err >= 0) dup2(err, STDERR_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
  }
  ~Process() {
    Kill(SIGKILL);
    if (fd_ >= 0) close(fd_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // Reads stdout until a line starting with `prefix`; returns the rest of it ("" on timeout or
  // EOF).
  std::string WaitForLine(const std::string& prefix, absl::Duration timeout = absl::Seconds(60)) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      size_t nl;
      while ((nl = buffer_.find('\n')) != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        absl::string_view rest = line;
        if (absl::ConsumePrefix(&rest, prefix))
          return std::string(absl::StripAsciiWhitespace(rest));
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        char buf[4096];
        ssize_t n = read(fd_, buf, sizeof(buf));
        if (n <= 0) return "";
        buffer_.append(buf, n);
      }
    }
    return "";
  }

  // Everything left on stdout until the child closes it (or `timeout`).
  std::string ReadAll(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) break;
      buffer_.append(buf, n);
    }
    std::string out;
    out.swap(buffer_);
    return out;
  }

  void Signal(int sig) {
    if (pid_ > 0 && !exited_) kill(pid_, sig);
  }

  // Waits for the exit; returns the wait status, or -1 on timeout.
  int Wait(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (!exited_ && absl::Now() < end) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) {
        exited_ = true;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return exited_ ? status_ : -1;
  }

  void Kill(int sig) {
    if (pid_ <= 0 || exited_) return;
    kill(pid_, sig);
    Wait(absl::Seconds(10));
  }

  std::string Log() const {
    std::ifstream f(log_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_;
  std::string log_;
  bool exited_ = false;
  int status_ = 0;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

// Runs argv to completion (stderr to `log`), returns its exit code and stdout.
inline CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& log,
                                absl::Duration timeout = absl::Seconds(60)) {
  Process p(argv, log);
  CommandResult r;
  r.out = p.ReadAll(timeout);
  const int status = p.Wait(timeout);
  r.exit_code = (status >= 0 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return r;
}

// A fresh directory under the test temp dir, removed with everything in it at destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(absl::StrCat(::testing::TempDir(), "swarm-", name, "-", getpid())) {
    Remove();
    std::system(absl::StrCat("mkdir -p '", path_, "'").c_str());
  }
  ~ScratchDir() { Remove(); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  void Remove() { std::system(absl::StrCat("rm -rf '", path_, "'").c_str()); }
  std::string path_;
};

// The whole text of `path` ("" when it cannot be read): a child's log, for its error lines.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Pids whose parent is `pid`.
inline std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    int p = atoi(e->d_name);
    if (p <= 0) continue;
    std::ifstream stat(absl::StrCat("/proc/", p, "/stat"));
    std::string content;
    std::getline(stat, content);
    // pid (comm) state ppid ...: comm may hold spaces; parse after the last ')'.
    size_t close_paren = content.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(content.substr(close_paren + 2), ' ');
    if (fields.size() > 1 && atoi(fields[1].c_str()) == pid) out.push_back(p);
  }
  closedir(d);
  return out;
}

inline bool Alive(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string content;
  if (!std::getline(stat, content)) return false;
  size_t close_paren = content.rfind(')');
  return close_paren != std::string::npos && content[close_paren + 2] != 'Z';
}

}  // namespace swarm::testing

#endif  // SWARM_TESTS_INTEGRATION_PROCESS_UTIL_H_
