#include "rpc/security.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/flags.h"

namespace swarm::rpc {

namespace {

// Reads at most a few MiB of `path` (a certificate bundle is kilobytes).
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " '", path, "': cannot be read"));
  }
  std::string text(size_t{1} << 20, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

absl::Status CheckPem(const std::string& path, const char* flag, absl::string_view kind) {
  absl::StatusOr<std::string> text = ReadPem(path, flag);
  if (!text.ok()) return text.status();
  if (!absl::StrContains(*text, "-----BEGIN ") || !absl::StrContains(*text, kind)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " '", path, "': not a PEM file holding a ", kind));
  }
  return absl::OkStatus();
}

}  // namespace

unsigned int TlsFiles::refresh_seconds() const {
  return static_cast<unsigned int>(std::max<int64_t>(1, absl::ToInt64Seconds(refresh_interval)));
}

absl::Status ValidateTlsFiles(const TlsFiles& tls, bool identity_required) {
  if (!tls.enabled()) return absl::OkStatus();
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both");
  }
  if (identity_required && tls.cert.empty()) {
    return absl::InvalidArgumentError(
        "TLS on a server needs its certificate and key: give --tls-cert FILE --tls-key FILE");
  }
  if (!tls.cert.empty()) {
    if (auto s = CheckPem(tls.cert, "--tls-cert", "CERTIFICATE"); !s.ok()) return s;
    if (auto s = CheckPem(tls.key, "--tls-key", "PRIVATE KEY"); !s.ok()) return s;
  }
  if (!tls.ca.empty()) {
    if (auto s = CheckPem(tls.ca, "--tls-ca", "CERTIFICATE"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

bool IsLoopbackHost(absl::string_view host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

void AddServerSecurityFlags(FlagSet& flags) {
  flags.Value("tls-cert", "FILE", "", "this server's certificate (PEM); reloaded when it changes")
      .Value("tls-key", "FILE", "", "its private key (PEM)")
      .Value("tls-ca", "FILE", "",
             "the CA (PEM) peers' certificates must come from: mutual TLS between nodes")
      .Bool(kInsecureFlag, "allow plaintext on an address other than loopback (warns once)");
}

absl::StatusOr<ServerSecurity> ServerSecurityFromFlags(const Flags& flags,
                                                       absl::string_view log_component) {
  ServerSecurity security;
  security.tls.cert = flags.String("tls-cert");
  security.tls.key = flags.String("tls-key");
  security.tls.ca = flags.String("tls-ca");
  security.insecure = flags.Bool(kInsecureFlag);
  security.log_component = std::string(log_component);
  if (auto s = ValidateTlsFiles(security.tls, /*identity_required=*/true); !s.ok()) return s;
  if (security.insecure && security.tls.enabled()) {
    return absl::InvalidArgumentError("--insecure and --tls-* contradict each other: give one");
  }
  return security;
}

}  // namespace swarm::rpc
