// How the torch-free `swarm` front binary hands a command it does not hold to `swarm-tools`, the
// binary with every command (which links LibTorch). Only the front binary links this.
#ifndef SWARM_CLIENT_CLI_TOOLS_EXEC_H_
#define SWARM_CLIENT_CLI_TOOLS_EXEC_H_

#include <string>
#include <vector>

namespace swarm::cli {

// Replaces this process by swarm-tools with `argv` (argv[0] is kept, so messages still say
// "swarm"). swarm-tools is $SWARM_TOOLS when set, else the first of DIR/swarm-tools and
// DIR/../libexec/swarm/swarm-tools that exists, DIR being this executable's directory (the build
// tree and `cmake --install`'s layout). Returns only on failure: 127, after one line on stderr
// naming the paths tried.
int ExecTools(const std::vector<std::string>& argv);

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_TOOLS_EXEC_H_
