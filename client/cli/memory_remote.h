// `swarm memory`'s flags and its --server half (the coordinator's EstimateMemory answer, printed
// as `swarm memory --model` prints its own): torch-free, so that the front binary answers
// `swarm memory --server` without swarm-tools. memory_cmd.cc (swarm-tools) and
// memory_front_cmd.cc (the front) register the command.
#ifndef SWARM_CLIENT_CLI_MEMORY_REMOTE_H_
#define SWARM_CLIENT_CLI_MEMORY_REMOTE_H_

#include "absl/status/status.h"
#include "client/cli/command.h"

namespace swarm::cli {

const FlagSet& MemoryFlags();
// --server HOST:PORT given: asks that coordinator and prints the table (or --json).
// InvalidArgument with --model too.
absl::Status RemoteMemory(const Flags& flags);

}  // namespace swarm::cli

#endif  // SWARM_CLIENT_CLI_MEMORY_REMOTE_H_
