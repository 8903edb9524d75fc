#include "proto/server_util.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <pthread.h>
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "proto/tensor_util.h"

namespace swarm {

namespace {

sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// "host:port" → (host, port text); the port is what follows the last ':'.
bool SplitHostPort(absl::string_view address, absl::string_view* host, absl::string_view* port) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  return true;
}

}  // namespace

void LogLine(absl::string_view component, absl::string_view message) {
  // One fwrite per line keeps lines from different threads whole.
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                   component, ": ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

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

absl::StatusOr<StartedServer> StartServer(const std::string& listen,
                                          const std::vector<grpc::Service*>& services,
                                          const std::vector<std::string>& health_names) {
  if (auto s = ValidateHostPort(listen, "--listen"); !s.ok()) return s;
  // Both are process-wide switches read when a ServerBuilder is created; idempotent.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  int port = -1;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on '", listen, "' (address in use or not local?)"));
  }
  SetServing(server.get(), health_names, false);
  absl::string_view host, port_text;
  SplitHostPort(listen, &host, &port_text);
  return StartedServer{std::move(server), absl::StrCat(host, ":", port)};
}

void SetServing(grpc::Server* server, const std::vector<std::string>& health_names, bool serving) {
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // The overall status ("").
  for (const std::string& name : health_names) health->SetServingStatus(name, serving);
}

grpc::ChannelArguments InternalChannelArguments() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return args;
}

absl::Status ValidateHostPort(absl::string_view address, absl::string_view flag) {
  absl::string_view host, port_text;
  int port = 0;
  if (!SplitHostPort(address, &host, &port_text) || !absl::SimpleAtoi(port_text, &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", address, "' is not HOST:PORT (e.g. 127.0.0.1:7001)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ParseByteSize(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  struct Unit {
    const char* suffix;
    double factor;
  };
  static constexpr Unit kUnits[] = {
      {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
      {"KB", 1e3},     {"MB", 1e6},        {"GB", 1e9},           {"TB", 1e12},
      {"B", 1.0}};
  double factor = 1.0;
  for (const Unit& u : kUnits) {
    if (absl::ConsumeSuffix(&t, u.suffix)) {
      factor = u.factor;
      break;
    }
  }
  double v = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(t), &v) || v < 0 || !std::isfinite(v) ||
      v * factor > 9.2e18) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a byte size (e.g. 1073741824, 512MiB, 2GiB)"));
  }
  return static_cast<int64_t>(v * factor);
}

std::string FormatBytes(int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

absl::StatusOr<ServerFlags> ServerFlags::Parse(int argc, char** argv,
                                               const std::set<std::string>& value_flags,
                                               const std::set<std::string>& bool_flags) {
  ServerFlags flags;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name(arg);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool_flags.count(name)) {
      if (value.has_value() && *value != "true" && *value != "1") {
        if (*value == "false" || *value == "0") continue;
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " takes no value (got '", *value, "')"));
      }
      flags.bools_.insert(name);
      continue;
    }
    if (!value_flags.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!value.has_value()) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    flags.values_[name] = *value;
  }
  return flags;
}

bool ServerFlags::Has(const std::string& name) const {
  return values_.count(name) > 0 || bools_.count(name) > 0;
}

bool ServerFlags::Bool(const std::string& name) const { return bools_.count(name) > 0; }

std::string ServerFlags::String(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<std::string> ServerFlags::Required(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("missing required flag --", name));
  }
  return it->second;
}

absl::StatusOr<int64_t> ServerFlags::Int(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", it->second, "' is not an integer"));
  }
  return v;
}

absl::StatusOr<double> ServerFlags::Double(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  double v;
  if (!absl::SimpleAtod(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", it->second, "' is not a number"));
  }
  return v;
}

absl::StatusOr<int64_t> ServerFlags::Bytes(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  auto v = ParseByteSize(it->second);
  if (!v.ok())
    return absl::InvalidArgumentError(absl::StrCat("flag --", name, ": ", v.status().message()));
  return *v;
}

absl::StatusOr<absl::Duration> ServerFlags::Duration(const std::string& name,
                                                     absl::Duration fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  absl::Duration d;
  double seconds;
  if (absl::SimpleAtod(it->second, &seconds)) return absl::Seconds(seconds);
  if (!absl::ParseDuration(it->second, &d)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, ": '", it->second, "' is not a duration (e.g. 30s, 5m)"));
  }
  return d;
}

}  // namespace swarm
