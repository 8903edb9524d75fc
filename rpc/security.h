// What a Swarm node needs to know about its transport security, without gRPC's headers: its TLS
// files (--tls-cert, --tls-key, --tls-ca), what its server asks of peers, and whether plaintext
// off loopback is allowed (--insecure). rpc/channel.h builds channel credentials from it and
// rpc/server.h server credentials; the servers' options and flags carry it. Pure values and
// functions; thread-safe.
#ifndef SWARM_RPC_SECURITY_H_
#define SWARM_RPC_SECURITY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace swarm {
class Flags;
class FlagSet;
}  // namespace swarm

namespace swarm::rpc {

// A node's TLS files, PEM each: its certificate chain, its private key, and the CA bundle its
// peers' certificates must chain to. gRPC re-reads all three every `refresh_interval` and uses
// new contents for new connections (cert-manager rotation without a restart); replace them
// atomically (rename, or a symlinked directory as Kubernetes Secrets do). All empty = plaintext.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
  absl::Duration refresh_interval = absl::Seconds(60);
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
  bool has_identity() const { return !cert.empty(); }
  // refresh_interval in whole seconds, at least 1 (what gRPC's file watcher takes).
  unsigned int refresh_seconds() const;
};

// Checks `tls` before anything listens or dials: --tls-cert and --tls-key come together, every
// file given is readable and holds a PEM block of the right kind. `identity_required`: a server
// needs its certificate and key. InvalidArgument naming the flag and the file.
absl::Status ValidateTlsFiles(const TlsFiles& tls, bool identity_required);

// What a server asks of its peers and what it will hold for them.
struct ServerSecurity {
  TlsFiles tls;  // Empty: plaintext.
  // With tls.ca: true = a client without a certificate from that CA cannot connect (workers);
  // false = a client certificate is verified when presented but not required (the coordinator
  // with --auth-tokens, whose clients authenticate with tokens).
  bool require_client_certs = true;
  // --insecure: plaintext is allowed on an address other than loopback (with a warning).
  bool insecure = false;
  std::string log_component = "swarm";  // Names the process in the warning.
};

// True for a host that only this machine can reach: 127.0.0.0/8, ::1, "localhost".
bool IsLoopbackHost(absl::string_view host);

// The servers' flags: --tls-cert FILE --tls-key FILE --tls-ca FILE (value flags) and --insecure
// (boolean), declared by AddServerSecurityFlags.
inline constexpr char kInsecureFlag[] = "insecure";
void AddServerSecurityFlags(FlagSet& flags);
// The ServerSecurity those flags give, the files checked (ValidateTlsFiles). `log_component`
// names the process in the --insecure warning.
absl::StatusOr<ServerSecurity> ServerSecurityFromFlags(const Flags& flags,
                                                       absl::string_view log_component);

}  // namespace swarm::rpc

#endif  // SWARM_RPC_SECURITY_H_
