// The flags of every command that talks to a coordinator (`--server`): --tls-ca FILE (verify the
// coordinator's certificate), --tls-cert FILE --tls-key FILE (a client certificate, for a
// coordinator without tokens), --token-file FILE (else SWARM_TOKEN), declared and turned into
// ClientOptions in one place.
#ifndef SWARM_CLIENT_CLI_CONNECT_FLAGS_H_
#define SWARM_CLIENT_CLI_CONNECT_FLAGS_H_

#include "client/client.h"
#include "common/flags.h"

namespace swarm::cli {

// Declares --tls-ca, --tls-cert, --tls-key and --token-file.
void AddConnectFlags(FlagSet& flags);
// Declares --servers A,B (the coordinators a broken stream resumes on), for commands that stream.
void AddResumeFlags(FlagSet& flags);
// The ClientOptions those flags give (files are read by Client::Connect; --servers, when given,
// becomes resume_addresses).
ClientOptions ConnectOptions(const Flags& flags);

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_CONNECT_FLAGS_H_
