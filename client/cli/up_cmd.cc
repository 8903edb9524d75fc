// `swarm up`: a local cluster of processes — W swarm-workers with an even layer split and a
// swarm-coordinator — for trying Swarm on one machine. Prints "serving on HOST:PORT" on stdout
// once the coordinator serves; child output goes to stderr prefixed with the child's name.
// SIGINT/SIGTERM (Ctrl-C) stops every child (coordinator first). A child that dies once the
// cluster serves is restarted with the same flags on the same address, after a backoff (0.2 s,
// doubling to 5 s); a child that dies more than --max-restarts times within a minute, or before
// the cluster first serves, stops the cluster. Children are in their own process group and get
// SIGTERM if `swarm up` itself dies (PR_SET_PDEATHSIG), so no process is left behind.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/cli/command.h"
#include "client/client.h"
#include "common/block_layout.h"
#include "common/flags.h"
#include "model/config.h"

namespace swarm::cli {
namespace {

struct Child {
  std::string name;               // "worker 0", "coordinator"
  std::vector<std::string> argv;  // How it was started (restarts replace its --listen value).
  pid_t pid = -1;
  int fd = -1;  // Read end of the child's stdout+stderr.
  std::string buffer;
  std::string address;  // From its "listening on" line.
  bool exited = false;
  int wait_status = 0;
  // Supervision: the restarts of the last minute, and when the next one is due (after it
  // exited; InfiniteFuture while it runs).
  std::deque<absl::Time> restarts;
  int restarts_total = 0;
  absl::Time restart_at = absl::InfiniteFuture();
};

// The restart window (--max-restarts counts restarts within it) and the backoff bounds.
constexpr absl::Duration kRestartWindow = absl::Minutes(1);
constexpr absl::Duration kMinRestartDelay = absl::Milliseconds(200);
constexpr absl::Duration kMaxRestartDelay = absl::Seconds(5);

std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

// `name` in `dir`, or (no --bin-dir: `dir` is this binary's) in ../../bin beside the installed
// libexec/swarm/swarm-tools.
absl::StatusOr<std::string> FindBinary(const std::string& dir, const std::string& name,
                                       bool installed_layout) {
  std::string path = absl::StrCat(dir, "/", name);
  if (access(path.c_str(), X_OK) == 0) return path;
  if (installed_layout) {
    std::string bin = absl::StrCat(dir, "/../../bin/", name);
    if (access(bin.c_str(), X_OK) == 0) return bin;
  }
  return absl::NotFoundError(
      absl::StrCat("cannot find ", name, " in ", dir, " (build it, or pass --bin-dir)"));
}

// Forks and execs `argv` with stdout and stderr on a pipe; the child leaves our process group and
// is killed with SIGTERM when we die.
absl::StatusOr<Child> Spawn(const std::string& name, const std::vector<std::string>& argv,
                            const sigset_t& original_mask) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    // The workers of one machine take turns (a pipeline): OpenBLAS threads that spin-wait after
    // each call (for up to ~0.1 s by default) would steal the cores from the worker whose turn
    // it is. A user's own setting wins.
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", /*overwrite=*/0);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  Child child;
  child.name = name;
  child.argv = argv;
  child.pid = pid;
  child.fd = fds[0];
  return child;
}

class Cluster {
 public:
  Cluster(int signal_fd, const sigset_t& original_mask, int max_restarts)
      : signal_fd_(signal_fd), original_mask_(original_mask), max_restarts_(max_restarts) {}

  std::vector<Child>& children() { return children_; }

  // From now on a child that exits is restarted (Restart) instead of stopping the cluster.
  void Supervise() { supervising_ = true; }

  // Reads what the children wrote, forwards whole lines to stderr with their name, records
  // "listening on" addresses, reaps exited children, restarts those due when supervising;
  // handles signals. Waits up to `timeout`. Returns false once a stop was requested (signal) or
  // the cluster failed (a child exited before supervision, or past its restart budget).
  bool Pump(absl::Duration timeout) {
    std::vector<pollfd> pfds;
    pfds.push_back({signal_fd_, POLLIN, 0});
    for (Child& c : children_) {
      if (c.fd >= 0) pfds.push_back({c.fd, POLLIN, 0});
    }
    poll(pfds.data(), pfds.size(), static_cast<int>(absl::ToInt64Milliseconds(timeout)));
    if (pfds[0].revents & POLLIN) {
      signalfd_siginfo info;
      while (read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
        if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) stop_requested_ = true;
      }
    }
    for (Child& c : children_) Drain(&c);
    Reap();
    const absl::Time now = absl::Now();
    for (Child& c : children_) {
      if (!c.exited || stopping_ || failed_ || stop_requested_) continue;
      if (!supervising_) {
        std::fprintf(stderr, "swarm up: %s (pid %d) exited (%s); stopping the cluster\n",
                     c.name.c_str(), c.pid, Describe(c.wait_status).c_str());
        failed_ = true;
        continue;
      }
      if (c.restart_at == absl::InfiniteFuture()) {
        while (!c.restarts.empty() && c.restarts.front() < now - kRestartWindow) {
          c.restarts.pop_front();
        }
        if (static_cast<int>(c.restarts.size()) >= max_restarts_) {
          std::fprintf(stderr,
                       "swarm up: %s (pid %d) exited (%s) after %d restarts within %s; stopping "
                       "the cluster\n",
                       c.name.c_str(), c.pid, Describe(c.wait_status).c_str(), max_restarts_,
                       absl::FormatDuration(kRestartWindow).c_str());
          failed_ = true;
          continue;
        }
        absl::Duration delay = kMinRestartDelay;
        for (size_t i = 0; i < c.restarts.size() && delay < kMaxRestartDelay; ++i) delay *= 2;
        delay = std::min(delay, kMaxRestartDelay);
        c.restart_at = now + delay;
        std::fprintf(stderr, "swarm up: %s (pid %d) exited (%s); restarting it on %s in %s\n",
                     c.name.c_str(), c.pid, Describe(c.wait_status).c_str(), c.address.c_str(),
                     absl::FormatDuration(delay).c_str());
      } else if (now >= c.restart_at) {
        Restart(&c, now);
      }
    }
    return !stop_requested_ && !failed_;
  }

  bool failed() const { return failed_; }

  // SIGTERM to the coordinator, then the workers; SIGKILL to whatever is left after `grace`.
  void StopAll(absl::Duration grace) {
    stopping_ = true;
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
      if (!it->exited) kill(it->pid, SIGTERM);
      if (it->name == "coordinator") WaitExited(&*it, grace / 2);
    }
    const absl::Time end = absl::Now() + grace;
    while (!AllExited() && absl::Now() < end) Pump(absl::Milliseconds(50));
    for (Child& c : children_) {
      if (!c.exited) {
        std::fprintf(stderr, "swarm up: %s (pid %d) did not stop; killing it\n", c.name.c_str(),
                     c.pid);
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &c.wait_status, 0);
        c.exited = true;
      }
      Drain(&c);
      if (c.fd >= 0) close(c.fd);
      c.fd = -1;
    }
  }

  void Add(Child child) { children_.push_back(std::move(child)); }

  // Restarts of each child so far, in children() order.
  int restarts_total() const {
    int n = 0;
    for (const Child& c : children_) n += c.restarts_total;
    return n;
  }

 private:
  static std::string Describe(int status) {
    if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return absl::StrCat("signal ", WTERMSIG(status));
    return "unknown";
  }

  // Starts `c` again with its flags, on the address it had (a port chosen by the first start is
  // kept: the coordinator, and the workers' coordinator, find it there).
  void Restart(Child* c, absl::Time now) {
    std::vector<std::string> argv = c->argv;
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "--listen" && !c->address.empty()) argv[i + 1] = c->address;
    }
    c->restarts.push_back(now);
    ++c->restarts_total;
    c->restart_at = absl::InfiniteFuture();
    if (c->fd >= 0) close(c->fd);
    absl::StatusOr<Child> started = Spawn(c->name, argv, original_mask_);
    if (!started.ok()) {
      std::fprintf(stderr, "swarm up: restarting %s: %s\n", c->name.c_str(),
                   started.status().ToString().c_str());
      c->fd = -1;
      return;  // Still exited: the next Pump schedules another attempt, within the budget.
    }
    const std::string address = c->address;
    std::deque<absl::Time> restarts = std::move(c->restarts);
    const int total = c->restarts_total;
    *c = *std::move(started);
    c->argv = std::move(argv);
    c->address = address;  // Its "listening on" line repeats it.
    c->restarts = std::move(restarts);
    c->restarts_total = total;
    std::fprintf(stderr, "swarm up: restarted %s (pid %d, restart %d)\n", c->name.c_str(), c->pid,
                 total);
  }

  void WaitExited(Child* c, absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (!c->exited && absl::Now() < end) Pump(absl::Milliseconds(50));
  }

  bool AllExited() const {
    for (const Child& c : children_) {
      if (!c.exited) return false;
    }
    return true;
  }

  void Reap() {
    for (Child& c : children_) {
      if (c.exited) continue;
      if (waitpid(c.pid, &c.wait_status, WNOHANG) == c.pid) c.exited = true;
    }
  }

  void Drain(Child* c) {
    if (c->fd < 0) return;
    char buf[4096];
    while (true) {
      ssize_t n = read(c->fd, buf, sizeof(buf));
      if (n > 0) {
        c->buffer.append(buf, n);
        continue;
      }
      if (n == 0) {  // EOF: the child closed its output (exited).
        if (!c->buffer.empty()) c->buffer.push_back('\n');
        close(c->fd);
        c->fd = -1;
      }
      break;
    }
    size_t nl;
    while ((nl = c->buffer.find('\n')) != std::string::npos) {
      std::string line = c->buffer.substr(0, nl);
      c->buffer.erase(0, nl + 1);
      absl::string_view rest = line;
      if (absl::ConsumePrefix(&rest, "listening on ")) {
        c->address = std::string(absl::StripAsciiWhitespace(rest));
        continue;
      }
      std::fprintf(stderr, "[%s] %s\n", c->name.c_str(), line.c_str());
    }
  }

  const int signal_fd_;
  const sigset_t original_mask_;
  const int max_restarts_;
  std::vector<Child> children_;
  bool supervising_ = false;
  bool stop_requested_ = false;
  bool stopping_ = false;
  bool failed_ = false;
};

const FlagSet& UpFlags() {
  static const FlagSet flags = [] {
    FlagSet f("swarm up",
              "a local cluster of processes: W workers with an even split and a coordinator; "
              "Ctrl-C stops all");
    f.Required("model", "DIR", "the model directory")
        .Value("workers", "W", "2", "worker processes (each hosts a contiguous block of layers)")
        .Value("port", "P", "0", "the coordinator's port; 0 = a free one (printed)")
        .Value("host", "HOST", "127.0.0.1", "the address every process listens on")
        .Value("device", "cpu|cuda:N", "cpu", "the workers' device")
        .Value("dtype", "f32|bf16|f16|q8|q4", "f32",
               "the workers' weight dtype or quantized format")
        .Value("kv-budget", "BYTES", "", "each worker's KV-cache budget (required on cuda)")
        .Value("bin-dir", "DIR", "",
               "where swarm-worker and swarm-coordinator are (default: "
               "beside this binary)")
        .Value("startup-timeout", "SECONDS", "120", "how long the cluster may take to serve")
        .Value("max-restarts", "N", "5",
               "restarts of one child within a minute before the cluster is stopped (0 = a child "
               "that dies stops the cluster)")
        .Value("max-batch-tokens", "N", "", "passed to the coordinator (its default when unset)")
        .Value("max-batch-sequences", "N", "", "passed to the coordinator")
        .Value("max-micro-batches", "N", "", "passed to the coordinator")
        .Value("max-waiting-requests", "N", "", "passed to the coordinator")
        .Bool("metrics", "every process serves /metrics on a free port")
        .Bool("insecure", "plaintext on a --host other than loopback (passed to every server)");
    return f;
  }();
  return flags;
}

int UpCommand(const std::vector<std::string>& args) {
  auto flags = UpFlags().Parse(args);
  if (!flags.ok()) return Fail("up", flags.status());
  auto model_dir = flags->Required("model");
  if (!model_dir.ok()) return Fail("up", model_dir.status());
  auto num_workers = flags->Int("workers");
  auto port = flags->Int("port");
  auto startup = flags->Double("startup-timeout");
  auto max_restarts = flags->Int("max-restarts");
  for (const absl::Status& s :
       {num_workers.status(), port.status(), startup.status(), max_restarts.status()}) {
    if (!s.ok()) return Fail("up", s);
  }
  if (*max_restarts < 0 || *max_restarts > 1000) {
    return Fail("up", absl::InvalidArgumentError(
                          absl::StrCat("--max-restarts ", *max_restarts, ": want 0..1000")));
  }
  if (*port < 0 || *port > 65535) {
    return Fail("up", absl::InvalidArgumentError(absl::StrCat("--port ", *port, " is not a port")));
  }
  auto config = model::LoadModelConfig(*model_dir);
  if (!config.ok()) return Fail("up", config.status());
  if (*num_workers < 1 || *num_workers > config->num_layers) {
    return Fail("up", absl::InvalidArgumentError(
                          absl::StrCat("--workers ", *num_workers, ": need 1..", config->num_layers,
                                       " (the model has ", config->num_layers, " layers)")));
  }
  auto layout = BlockLayout::Create(config->num_layers, *num_workers);
  if (!layout.ok()) return Fail("up", layout.status());
  const std::string bin_dir = flags->String("bin-dir", SelfDir());
  const bool installed_layout = !flags->Has("bin-dir");
  auto worker_bin = FindBinary(bin_dir, "swarm-worker", installed_layout);
  if (!worker_bin.ok()) return Fail("up", worker_bin.status());
  auto coordinator_bin = FindBinary(bin_dir, "swarm-coordinator", installed_layout);
  if (!coordinator_bin.ok()) return Fail("up", coordinator_bin.status());
  const std::string host = flags->String("host");
  // Each child serves /metrics on a free port and logs "metrics on http://HOST:PORT/metrics".
  const bool metrics = flags->Bool("metrics");

  // Signals arrive through a signalfd so that the poll loop sees them.
  sigset_t mask, original;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, &original);
  int signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) {
    return Fail("up", absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno))));
  }
  Cluster cluster(signal_fd, original, static_cast<int>(*max_restarts));
  auto finish = [&](int code) {
    cluster.StopAll(absl::Seconds(10));
    close(signal_fd);
    sigprocmask(SIG_SETMASK, &original, nullptr);
    if (code == 0) std::fprintf(stderr, "swarm up: stopped\n");
    return code;
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(*startup);
  auto wait_for_address = [&](Child* c) -> bool {
    while (c->address.empty()) {
      if (!cluster.Pump(absl::Milliseconds(100))) return false;
      if (absl::Now() > deadline) {
        std::fprintf(stderr, "swarm up: %s did not start listening in time\n", c->name.c_str());
        return false;
      }
    }
    return true;
  };

  std::vector<std::string> worker_addresses;
  for (int b = 0; b < *num_workers; ++b) {
    std::vector<std::string> argv = {*worker_bin,
                                     "--model",
                                     *model_dir,
                                     "--layers",
                                     absl::StrCat(layout->begin(b), "-", layout->end(b) - 1),
                                     "--listen",
                                     absl::StrCat(host, ":0"),
                                     "--device",
                                     flags->String("device"),
                                     "--dtype",
                                     flags->String("dtype")};
    if (metrics) argv.insert(argv.end(), {"--metrics-listen", absl::StrCat(host, ":0")});
    // Plaintext off loopback only when asked for (rpc/security.h).
    if (flags->Bool("insecure")) argv.push_back("--insecure");
    // Each worker's own budget (required on cuda; on cpu the worker sizes one itself).
    if (flags->Has("kv-budget"))
      argv.insert(argv.end(), {"--kv-budget", flags->String("kv-budget")});
    auto child = Spawn(absl::StrCat("worker ", b), argv, original);
    if (!child.ok()) return finish(Fail("up", child.status()));
    cluster.Add(*std::move(child));
  }
  for (Child& c : cluster.children()) {
    if (!wait_for_address(&c)) return finish(1);
    worker_addresses.push_back(c.address);
  }
  {
    std::vector<std::string> argv = {*coordinator_bin,
                                     "--model",
                                     *model_dir,
                                     "--workers",
                                     absl::StrJoin(worker_addresses, ","),
                                     "--listen",
                                     absl::StrCat(host, ":", *port)};
    if (metrics) argv.insert(argv.end(), {"--metrics-listen", absl::StrCat(host, ":0")});
    if (flags->Bool("insecure")) argv.push_back("--insecure");
    // The scheduler's limits, checked by the coordinator (which names a bad value).
    for (const char* name :
         {"max-batch-tokens", "max-batch-sequences", "max-micro-batches", "max-waiting-requests"}) {
      if (flags->Has(name))
        argv.insert(argv.end(), {absl::StrCat("--", name), flags->String(name)});
    }
    auto child = Spawn("coordinator", argv, original);
    if (!child.ok()) return finish(Fail("up", child.status()));
    cluster.Add(*std::move(child));
  }
  if (!wait_for_address(&cluster.children().back())) return finish(1);
  const std::string address = cluster.children().back().address;
  auto client = Client::Connect(address);
  if (!client.ok()) return finish(Fail("up", client.status()));
  while (true) {
    if (!cluster.Pump(absl::Milliseconds(100))) return finish(cluster.failed() ? 1 : 0);
    auto status = (*client)->Status(absl::Seconds(2));
    if (status.ok() && status->serving) break;
    if (absl::Now() > deadline) {
      std::fprintf(stderr, "swarm up: the coordinator is not serving: %s\n",
                   status.ok() ? status->reason.c_str() : status.status().ToString().c_str());
      return finish(1);
    }
  }
  std::printf("serving on %s\n", address.c_str());
  std::fflush(stdout);
  cluster.Supervise();
  std::fprintf(stderr,
               "swarm up: %lld workers (%s) and a coordinator on %s; try\n"
               "  swarm generate --server %s --prompt \"Once upon a time\"\n"
               "  swarm status --server %s\n"
               "A child that dies is restarted; Ctrl-C stops the cluster.\n",
               static_cast<long long>(*num_workers), absl::StrJoin(worker_addresses, ", ").c_str(),
               address.c_str(), address.c_str(), address.c_str());
  while (cluster.Pump(absl::Seconds(1))) {
  }
  return finish(cluster.failed() ? 1 : 0);
}

}  // namespace

SWARM_REGISTER_COMMAND_FLAGS(up, "up", UpCommand, UpFlags);

}  // namespace swarm::cli
