// Workers on other "hosts": where the test runs as root and `ip netns` works, each worker runs in
// its own network namespace, joined to the coordinator's by a veth pair, and listens only on the
// namespace's address, so hidden states really cross network interfaces (the test checks the veth
// byte counters). Elsewhere the same test runs on loopback (and says so). Either way the greedy
// ids must equal the golden ones. See docs/architecture.md, "Multi-host test".
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "tests/coordinator/test_cluster.h"
#include "tests/integration/process_util.h"

namespace swarm::testing {
namespace {

bool Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

int64_t Counter(const std::string& dev, const std::string& name) {
  std::ifstream f(absl::StrCat("/sys/class/net/", dev, "/statistics/", name));
  int64_t v = -1;
  f >> v;
  return v;
}

// Two namespaces, each with a veth pair to the root namespace:
//   root <dev_i> 10.N.i.1/24  <->  10.N.i.2/24 <peer> in namespace ns_i.
class Namespaces {
 public:
  Namespaces() {
    const int id = getpid() % 100000;
    subnet_ = 100 + getpid() % 100;
    if (geteuid() != 0) return;
    for (int i = 1; i <= 2; ++i) {
      const std::string ns = absl::StrCat("swarmtest", id, "n", i);
      const std::string dev = absl::StrCat("swt", id, "h", i);  // At most 15 characters.
      const std::string peer = absl::StrCat("swt", id, "p", i);
      const std::string host_ip = absl::StrCat("10.", subnet_, ".", i, ".1");
      const std::string ns_ip = absl::StrCat("10.", subnet_, ".", i, ".2");
      names_.push_back(ns);
      if (!Sh("ip netns add " + ns) ||
          !Sh(absl::StrCat("ip link add ", dev, " type veth peer name ", peer)) ||
          !Sh(absl::StrCat("ip link set ", peer, " netns ", ns)) ||
          !Sh(absl::StrCat("ip addr add ", host_ip, "/24 dev ", dev)) ||
          !Sh(absl::StrCat("ip link set ", dev, " up")) ||
          !Sh(absl::StrCat("ip netns exec ", ns, " ip addr add ", ns_ip, "/24 dev ", peer)) ||
          !Sh(absl::StrCat("ip netns exec ", ns, " ip link set ", peer, " up")) ||
          !Sh(absl::StrCat("ip netns exec ", ns, " ip link set lo up"))) {
        return;
      }
      devs_.push_back(dev);
      ips_.push_back(ns_ip);
    }
    ok_ = true;
  }
  ~Namespaces() {
    // Deleting a namespace deletes the veth pair with it.
    for (const std::string& ns : names_) Sh("ip netns del " + ns);
    for (const std::string& dev : devs_) Sh("ip link del " + dev);
  }
  bool ok() const { return ok_; }
  const std::string& ns(int i) const { return names_[i]; }
  const std::string& dev(int i) const { return devs_[i]; }
  const std::string& ip(int i) const { return ips_[i]; }

 private:
  int subnet_ = 0;
  bool ok_ = false;
  std::vector<std::string> names_, devs_, ips_;
};

TEST(MultiHostTest, WorkersInTheirOwnNetworkNamespacesGiveTheGoldenIds) {
  Namespaces hosts;
  const bool netns = hosts.ok();
  ::testing::Test::RecordProperty("network", netns ? "netns+veth" : "loopback");
  if (!netns) {
    std::fprintf(stderr, "MultiHostTest: not root or no `ip netns`: running on loopback\n");
  }
  ScratchDir scratch("multihost");
  const std::string& dir = scratch.path();
  const std::string model = ModelDir("stories260K");
  std::vector<std::unique_ptr<Process>> workers;
  std::vector<std::string> addresses;
  const std::vector<std::string> layers = {"0-2", "3-4"};
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> argv;
    if (netns) argv = {"ip", "netns", "exec", hosts.ns(i)};
    for (const std::string& a :
         {kBin + "/swarm-worker", std::string("--model"), model, std::string("--layers"), layers[i],
          std::string("--listen"), (netns ? hosts.ip(i) : std::string("127.0.0.1")) + ":0"}) {
      argv.push_back(a);
    }
    // A veth address is not loopback: plaintext there needs --insecure (rpc/server.h).
    if (netns) argv.push_back("--insecure");
    workers.push_back(std::make_unique<Process>(argv, absl::StrCat(dir, "/w", i, ".log")));
    addresses.push_back(workers.back()->WaitForLine("listening on "));
    ASSERT_FALSE(addresses.back().empty()) << workers.back()->Log();
  }
  if (netns) {
    // Only reachable through the veth pair: the worker is not listening on loopback at all.
    EXPECT_EQ(addresses[0].rfind(hosts.ip(0), 0), 0u) << addresses[0];
  }
  Process coordinator({kBin + "/swarm-coordinator", "--model", model, "--workers",
                       addresses[0] + "," + addresses[1], "--listen", "127.0.0.1:0"},
                      dir + "/c.log");
  const std::string address = coordinator.WaitForLine("listening on ");
  ASSERT_FALSE(address.empty()) << coordinator.Log();
  auto client = Client::Connect(address);
  ASSERT_TRUE((*client)->WaitUntilServing(absl::Seconds(30)).ok()) << coordinator.Log();

  std::vector<int64_t> before;
  if (netns) {
    for (int i = 0; i < 2; ++i) before.push_back(Counter(hosts.dev(i), "tx_bytes"));
  }
  GenerateRequest req;
  req.prompt_ids = GoldenIds("stories260K", "greedy.input_ids");
  req.max_new_tokens = 32;
  req.stop_at_eos = false;
  auto r = (*client)->Generate(req);
  ASSERT_TRUE(r.ok()) << r.status() << coordinator.Log();
  EXPECT_EQ(r->ids, GoldenIds("stories260K", "greedy.greedy"));
  if (netns) {
    // 32 steps (+ prefill) each sent one 64-float hidden state to each worker: > 32 * 256 bytes.
    for (int i = 0; i < 2; ++i) {
      EXPECT_GT(Counter(hosts.dev(i), "tx_bytes") - before[i], 32 * 256) << hosts.dev(i);
    }
  }
  coordinator.Signal(SIGTERM);
  EXPECT_NE(coordinator.Wait(absl::Seconds(10)), -1);
  for (auto& w : workers) {
    w->Signal(SIGTERM);
    EXPECT_NE(w->Wait(absl::Seconds(10)), -1);
  }
}

}  // namespace
}  // namespace swarm::testing
