#include "common/metrics_server.h"

#include <sys/socket.h>

#include <chrono>
#include <exception>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/host_port.h"
#include "common/status_macros.h"
#include "common/token_auth.h"
#include "httplib.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace swarm::common {
namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

absl::StatusOr<std::string> SerializeRegistry(const prometheus::Registry& registry) {
  // prometheus-cpp may throw (std::bad_alloc, or from a user collectable); keep it here.
  try {
    return prometheus::TextSerializer().Serialize(registry.Collect());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serializing metrics: ", e.what()));
  } catch (...) {
    return absl::InternalError("serializing metrics: unknown exception");
  }
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const Options& options) {
  if (options.registry == nullptr) {
    return absl::InvalidArgumentError("MetricsServer::Options::registry is null");
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("MetricsServer::Options::threads must be >= 1, got ", options.threads));
  }
  absl::StatusOr<HostPort> hp = ParseHostPort(options.listen, "--metrics-listen");
  if (!hp.ok()) return hp.status();

  auto server = std::make_unique<httplib::Server>();
  const size_t threads = static_cast<size_t>(options.threads);
  // The pool's threads belong to the server and are joined when it shuts down.
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Prometheus scrapes every few seconds; holding idle connections longer only ties up threads.
  server->set_keep_alive_timeout(2);
  server->set_read_timeout(5, 0);
  server->set_write_timeout(5, 0);
  std::shared_ptr<TokenAuth> auth;
  if (!options.auth_tokens_file.empty()) {
    TokenAuthOptions ao;
    ao.path = options.auth_tokens_file;
    ao.flag = "--metrics-auth-tokens";
    ao.log_name = options.log_name;
    ASSIGN_OR_RETURN(auth, TokenAuth::Load(ao));
  }
  std::shared_ptr<prometheus::Registry> registry = options.registry;
  server->Get("/metrics", [registry, auth](const httplib::Request& req, httplib::Response& res) {
    if (auth != nullptr && !auth->Authenticate(req.get_header_value("Authorization")).ok()) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer");
      res.set_content("a valid token is required: send 'Authorization: Bearer TOKEN'\n",
                      "text/plain");
      return;
    }
    absl::StatusOr<std::string> text = SerializeRegistry(*registry);
    if (!text.ok()) {
      res.status = 500;
      res.set_content(std::string(text.status().message()) + "\n", "text/plain");
      return;
    }
    res.set_content(*std::move(text), kContentType);
  });
  std::function<bool()> healthy = options.healthy;
  server->Get("/healthz", [healthy](const httplib::Request&, httplib::Response& res) {
    bool ok = true;
    if (healthy) {
      try {
        ok = healthy();
      } catch (...) {
        ok = false;
      }
    }
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ok\n" : "not ready\n", "text/plain");
  });

  std::thread thread;
  ASSIGN_OR_RETURN(int port,
                   BindAndServe(server.get(), hp->host, hp->port, "metrics server", &thread));
  std::unique_ptr<MetricsServer> out(new MetricsServer(std::move(server), hp->host, port));
  absl::MutexLock lock(&out->mu_);
  out->thread_ = std::move(thread);
  return out;
}

absl::StatusOr<int> BindAndServe(httplib::Server* server, const std::string& host, int port,
                                 absl::string_view what, std::thread* thread) {
  // httplib sets SO_REUSEPORT, which lets a second process bind the same port and silently take
  // half the requests; turn it off again. SO_REUSEADDR alone still allows a quick restart.
  server->set_socket_options([](socket_t sock) {
    int yes = 1, no = 0;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
#ifdef SO_REUSEPORT
    setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &no, sizeof(no));
#endif
  });
  const std::string address = absl::StrCat(host, ":", port);
  if (port == 0) {
    port = server->bind_to_any_port(host);  // The bound port, or -1.
  } else if (!server->bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot bind ", address, " (address in use or no such interface)"));
  }
  *thread = std::thread([server] { server->listen_after_bind(); });
  // stop() before the accept loop has started would be lost (httplib only stops a running
  // server), so wait until it runs. The socket is already bound, so this takes microseconds.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!server->is_running() && absl::Now() < deadline) absl::SleepFor(absl::Microseconds(100));
  if (!server->is_running()) {
    server->stop();
    thread->join();
    return absl::InternalError(absl::StrCat(what, " on ", address, " did not start within 10 s"));
  }
  return port;
}

MetricsServer::MetricsServer(std::unique_ptr<httplib::Server> server, std::string host, int port)
    : host_(std::move(host)), port_(port), server_(std::move(server)) {}

MetricsServer::~MetricsServer() { Stop(); }

std::string MetricsServer::address() const {
  if (host_.find(':') != std::string::npos) return absl::StrCat("[", host_, "]:", port_);
  return absl::StrCat(host_, ":", port_);
}

void MetricsServer::Stop() {
  absl::MutexLock lock(&mu_);
  if (server_ == nullptr) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace swarm::common
