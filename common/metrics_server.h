// MetricsServer: serves a prometheus::Registry as Prometheus text on `GET /metrics`, plus
// `GET /healthz`, over cpp-httplib on one HOST:PORT; /metrics optionally only for bearer tokens.
// Used by swarm-worker and swarm-coordinator for their `--metrics-listen` flag (the same server can
// later carry an HTTP API).
//
// Why not prometheus-cpp's own Exposer: its civetweb threads have ~100 KB stacks, smaller than the
// static TLS of LibTorch's dependency tree, so pthread_create fails inside a LibTorch process
// (see DESIGN.md). cpp-httplib uses std::thread with the default stack size.
//
// Threading: Start() binds the socket and returns once the server thread accepts connections; the
// server owns that thread and a small fixed pool of request threads, all joined by Stop() or the
// destructor (no detached threads). Scrapes run concurrently with metric updates; prometheus-cpp
// metrics are thread-safe. All public methods are thread-safe; Stop() is idempotent.
#ifndef SWARM_COMMON_METRICS_SERVER_H_
#define SWARM_COMMON_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace httplib {
class Server;
}  // namespace httplib
namespace prometheus {
class Registry;
}  // namespace prometheus

namespace swarm::common {

class MetricsServer {
 public:
  struct Options {
    // HOST:PORT to bind; port 0 picks a free port (read it back with port()).
    std::string listen = "127.0.0.1:0";
    // The registry to serve. Required; the server holds a reference while it runs.
    std::shared_ptr<prometheus::Registry> registry;
    // Optional: /healthz answers 200 "ok" when this returns true (or when unset), 503 otherwise.
    std::function<bool()> healthy;
    // Request-handling threads (connections are keep-alive; Prometheus uses one per target).
    int threads = 4;
    // --metrics-auth-tokens: a tokens file (common/token_auth.h, the format of --auth-tokens,
    // re-read when it changes); /metrics then answers only requests with `Authorization: Bearer
    // TOKEN` of one of its tokens, 401 otherwise (/healthz stays open). "" = no check.
    std::string auth_tokens_file;
    std::string log_name = "swarm";  // The process, in the tokens file's reload log lines.
  };

  // Binds and starts serving. InvalidArgument for a malformed address, a missing registry or a
  // tokens file that cannot be read or parsed (naming --metrics-auth-tokens and the line),
  // Unavailable naming the address when it cannot be bound (in use, no such interface).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const Options& options);

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  ~MetricsServer();  // Stop()s.

  // The bound port (the real one when Options::listen asked for port 0).
  int port() const { return port_; }
  // "HOST:PORT" with the bound port, e.g. "127.0.0.1:41234".
  std::string address() const;

  // Stops accepting, finishes in-flight requests and joins every thread. Idempotent.
  void Stop();

 private:
  MetricsServer(std::unique_ptr<httplib::Server> server, std::string host, int port);

  const std::string host_;
  const int port_;
  absl::Mutex mu_;
  std::unique_ptr<httplib::Server> server_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

// Serves `server` (routes set) on HOST:PORT for MetricsServer and the coordinator's HTTP API:
// turns SO_REUSEPORT off (a second process must not share the port), binds (port 0: a free
// one), runs the accept loop on `*thread` and returns the bound port once it accepts
// connections. `what` names the server in errors: Unavailable when the address cannot be bound,
// Internal when the loop does not start within 10 s (nothing is left running then).
absl::StatusOr<int> BindAndServe(httplib::Server* server, const std::string& host, int port,
                                 absl::string_view what, std::thread* thread);

// The text exposition of `registry` ("# HELP ...\n# TYPE ...\n..."). Never throws: a failing
// serializer yields Internal. Used by the server and by tests that check metric output directly.
absl::StatusOr<std::string> SerializeRegistry(const prometheus::Registry& registry);

}  // namespace swarm::common

#endif  // SWARM_COMMON_METRICS_SERVER_H_
