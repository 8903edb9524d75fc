// Throwaway certificate authorities for the TLS tests, made with the `openssl` command line (a
// Debian package, scripts/setup.sh): a CA, and certificates it signs for 127.0.0.1/localhost that
// serve as both server and client identities. Files live in a directory the object owns and
// removes. Header-only; not thread-safe.
#ifndef SWARM_TESTS_UTIL_TEST_CA_H_
#define SWARM_TESTS_UTIL_TEST_CA_H_

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace swarm::test_util {

// True when `openssl` runs.
inline bool HaveOpenssl() { return std::system("openssl version >/dev/null 2>&1") == 0; }

struct CertFiles {
  std::string cert;
  std::string key;
};

class TestCa {
 public:
  // Makes the CA `name` under a fresh temporary directory; ok() says whether openssl succeeded.
  explicit TestCa(const std::string& name) {
    static std::atomic<int> counter{0};
    dir_ = absl::StrCat(::testing::TempDir(), "swarm-ca-", name, "-", getpid(), "-", counter++);
    ok_ = Run(absl::StrCat("rm -rf '", dir_, "' && mkdir -p '", dir_, "'")) &&
          Run(absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                           "-nodes -days 2 -subj /CN=",
                           name, " -keyout '", dir_, "/ca.key' -out '", ca_path(), "'"));
  }
  ~TestCa() { Run(absl::StrCat("rm -rf '", dir_, "'")); }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  bool ok() const { return ok_; }
  const std::string& dir() const { return dir_; }
  std::string ca_path() const { return dir_ + "/ca.pem"; }

  // Signs a new key's certificate with common name `cn` (SAN IP:127.0.0.1, DNS:localhost; server
  // and client use) and writes it to `<dir>/<file>.pem` and `<dir>/<file>.key`. Empty paths when
  // openssl failed.
  CertFiles Issue(const std::string& cn, const std::string& file) const {
    const std::string base = absl::StrCat(dir_, "/", file);
    const std::string ext = base + ".ext";
    {
      std::ofstream out(ext);
      out << "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
             "extendedKeyUsage=serverAuth,clientAuth\n";
    }
    const bool ok =
        Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                         "-subj /CN=",
                         cn, " -keyout '", base, ".key' -out '", base, ".csr'")) &&
        Run(absl::StrCat("openssl x509 -req -days 2 -in '", base, ".csr' -CA '", ca_path(),
                         "' -CAkey '", dir_, "/ca.key' -set_serial 0x$(openssl rand -hex 8) -out '",
                         base, ".pem' -extfile '", ext, "'"));
    if (!ok) return {};
    return {base + ".pem", base + ".key"};
  }

 private:
  static bool Run(const std::string& command) {
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
  }

  std::string dir_;
  bool ok_ = false;
};

}  // namespace swarm::test_util

#endif  // SWARM_TESTS_UTIL_TEST_CA_H_
