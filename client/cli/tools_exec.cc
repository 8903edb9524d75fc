#include "client/cli/tools_exec.h"

#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace swarm::cli {

namespace {

std::string ExecutableDir() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

}  // namespace

int ExecTools(const std::vector<std::string>& argv) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("SWARM_TOOLS"); env != nullptr && *env != '\0') {
    candidates.push_back(env);
  } else {
    const std::string dir = ExecutableDir();
    candidates.push_back(dir + "/swarm-tools");
    candidates.push_back(dir + "/../libexec/swarm/swarm-tools");
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::string errors;
  for (const std::string& path : candidates) {
    execv(path.c_str(), args.data());
    absl::StrAppend(&errors, errors.empty() ? "" : ", ", path, ": ", std::strerror(errno));
  }
  std::fprintf(stderr,
               "swarm: '%s' is a command of swarm-tools, which could not be started (%s); set "
               "SWARM_TOOLS to its path\n",
               argv.size() > 1 ? argv[1].c_str() : "help", errors.c_str());
  return 127;
}

}  // namespace swarm::cli
