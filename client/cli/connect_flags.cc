#include "client/cli/connect_flags.h"

namespace swarm::cli {

void AddConnectFlags(FlagSet& flags) {
  flags.Value("tls-ca", "FILE", "", "verify the coordinator's certificate with this CA (PEM)")
      .Value("tls-cert", "FILE", "", "a client certificate (PEM), for a coordinator without tokens")
      .Value("tls-key", "FILE", "", "the client certificate's key (PEM)")
      .Value("token-file", "FILE", "", "the bearer token to send (default: $SWARM_TOKEN)");
}

ClientOptions ConnectOptions(const Flags& flags) {
  ClientOptions options;
  options.tls_ca_file = flags.String("tls-ca");
  options.tls_cert_file = flags.String("tls-cert");
  options.tls_key_file = flags.String("tls-key");
  options.token_file = flags.String("token-file");
  return options;
}

}  // namespace swarm::cli
