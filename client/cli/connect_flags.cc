#include "client/cli/connect_flags.h"

namespace swarm::cli {

std::set<std::string> WithConnectFlags(std::set<std::string> value_flags) {
  value_flags.insert(kConnectFlags.begin(), kConnectFlags.end());
  return value_flags;
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
