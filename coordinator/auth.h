// The coordinator's client tokens (--auth-tokens FILE) are common::TokenAuth
// (common/token_auth.h), which the servers' /metrics also use (--metrics-auth-tokens); these
// names keep the coordinator's code in its own namespace.
#ifndef SWARM_COORDINATOR_AUTH_H_
#define SWARM_COORDINATOR_AUTH_H_

#include "common/token_auth.h"

namespace swarm::coordinator {

using common::ConstantTimeEquals;
using common::TokenAuth;
using common::TokenAuthOptions;

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_AUTH_H_
