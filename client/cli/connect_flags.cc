#include "client/cli/connect_flags.h"

#include "absl/strings/str_split.h"

namespace swarm::cli {

void AddConnectFlags(FlagSet& flags) {
  flags.Value("tls-ca", "FILE", "", "verify the coordinator's certificate with this CA (PEM)")
      .Value("tls-cert", "FILE", "", "a client certificate (PEM), for a coordinator without tokens")
      .Value("tls-key", "FILE", "", "the client certificate's key (PEM)")
      .Value("token-file", "FILE", "", "the bearer token to send (default: $SWARM_TOKEN)");
}

void AddResumeFlags(FlagSet& flags) {
  flags.Value("servers", "HOST:PORT,...", "",
              "other coordinators of the cluster: a stream whose coordinator fails resumes on "
              "them, in turn, with the tokens received so far (same output)");
}

ClientOptions ConnectOptions(const Flags& flags) {
  ClientOptions options;
  options.tls_ca_file = flags.String("tls-ca");
  options.tls_cert_file = flags.String("tls-cert");
  options.tls_key_file = flags.String("tls-key");
  options.token_file = flags.String("token-file");
  if (flags.Has("servers")) {
    options.resume_addresses = absl::StrSplit(flags.String("servers"), ',', absl::SkipWhitespace());
  }
  return options;
}

}  // namespace swarm::cli
