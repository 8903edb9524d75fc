// Lazy, selective loading: a process hosting 2 of 8 layers holds about a quarter of the layer
// weights. Zero-copy mode is measured as the resident size of the checkpoint's mapping in
// /proc/self/smaps after loading and running the layers; the default (copying) mode as the growth
// of the process's anonymous RSS.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/layer_host.h"
#include "model/weights.h"
#include "tools/synth.h"

namespace swarm::model {
namespace {

// Resident bytes of every mapping of `path` in this process.
int64_t MappedRssBytes(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  int64_t kb = 0;
  while (std::getline(smaps, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
        line.find('-') != std::string::npos && line.find(' ') != std::string::npos) {
      in_mapping = line.size() >= path.size() &&
                   line.compare(line.size() - path.size(), path.size(), path) == 0;
    } else if (in_mapping && line.rfind("Rss:", 0) == 0) {
      std::istringstream in(line.substr(4));
      int64_t v = 0;
      in >> v;
      kb += v;
    }
  }
  return kb * 1024;
}

// A field of /proc/self/status in kB.
int64_t StatusKb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::atoll(line.c_str() + field.size());
  }
  return -1;
}

TEST(LazyLoad, HostingAQuarterOfTheLayersTouchesAQuarterOfTheWeights) {
  char tmpl[] = "/tmp/swarm_lazy_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  tools::SynthOptions o;
  o.layers = 8;
  o.hidden = 512;
  o.intermediate = 1408;
  o.heads = 8;
  o.kv_heads = 8;
  o.vocab = 1024;
  o.max_position = 256;
  o.seed = 7;
  o.out_dir = dir;
  ASSERT_TRUE(tools::WriteSynthModel(o).ok());
  const std::string file = std::filesystem::canonical(dir + "/model.safetensors").string();

  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  int64_t all_layers = 0;
  for (int l = 0; l < 8; ++l) all_layers += (*ckpt)->LayerBytes(l);
  const int64_t two_layers = (*ckpt)->LayerBytes(2) + (*ckpt)->LayerBytes(3);
  // Opening parsed only the header.
  EXPECT_LT(MappedRssBytes(file), 1 << 20);

  LoadOptions zero_copy;
  zero_copy.copy_weights = false;
  auto host = LayerHost::Create(*ckpt, {2, 3}, zero_copy);
  ASSERT_TRUE(host.ok()) << host.status();
  auto cache = (*host)->NewCache();
  HostTensor h = HostTensor::FromFloats({4, 512}, std::vector<float>(4 * 512, 0.01f));
  const int layers[] = {2, 3};
  ASSERT_TRUE((*host)->Forward(h, 0, layers, cache.get()).ok());
  const int64_t rss = MappedRssBytes(file);
  // All of layers 2-3 are resident, and nothing of the other six layers or the embeddings.
  EXPECT_GE(rss, two_layers * 95 / 100) << rss;
  EXPECT_LE(rss, two_layers + (2 << 20)) << rss << " vs " << two_layers;
  EXPECT_LT(rss, all_layers / 3);
  EXPECT_EQ((*host)->WeightBytes(), two_layers);

  // The default copies hosted weights into anonymous memory and releases the file pages: the
  // process grows by about two layers, and the mapping holds nothing resident afterwards.
  host->reset();
  cache.reset();
  const int64_t anon_before = StatusKb("RssAnon:") * 1024;
  auto copied = LayerHost::Create(*ckpt, {2, 3}, {});
  ASSERT_TRUE(copied.ok()) << copied.status();
  const int64_t grown = StatusKb("RssAnon:") * 1024 - anon_before;
  EXPECT_GE(grown, two_layers * 9 / 10) << grown;
  EXPECT_LE(grown, two_layers * 13 / 10 + (8 << 20)) << grown;
  EXPECT_LT(MappedRssBytes(file), 4 << 20);
  EXPECT_EQ((*copied)->WeightBytes(), two_layers);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace swarm::model
