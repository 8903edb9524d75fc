// The flags of every command that talks to a coordinator (`--server`): --tls-ca FILE (verify the
// coordinator's certificate), --tls-cert FILE --tls-key FILE (a client certificate, for a
// coordinator without tokens), --token-file FILE (else SWARM_TOKEN), turned into ClientOptions in
// one place.
#ifndef SWARM_CLIENT_CLI_CONNECT_FLAGS_H_
#define SWARM_CLIENT_CLI_CONNECT_FLAGS_H_

#include <set>
#include <string>

#include "client/client.h"
#include "common/flags.h"

namespace swarm::cli {

inline const std::set<std::string> kConnectFlags = {"tls-ca", "tls-cert", "tls-key", "token-file"};
// Appended to the usage lines of those commands (a literal, for SWARM_REGISTER_COMMAND).
#define SWARM_CONNECT_USAGE \
  " [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] [--token-file FILE (else $SWARM_TOKEN)]"

// `value_flags` with kConnectFlags added.
std::set<std::string> WithConnectFlags(std::set<std::string> value_flags);
// The ClientOptions those flags give (files are read by Client::Connect).
ClientOptions ConnectOptions(const Flags& flags);

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_CONNECT_FLAGS_H_
