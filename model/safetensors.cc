#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/quote.h"
#include "nlohmann/json.hpp"

namespace swarm::model {
namespace {

using json = nlohmann::json;

// The safetensors spec caps the header at 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

absl::StatusOr<StDType> ParseStDType(const std::string& s) {
  if (s == "F32") return StDType::kF32;
  if (s == "F16") return StDType::kF16;
  if (s == "BF16") return StDType::kBF16;
  if (s == "I64") return StDType::kI64;
  if (s == "I32") return StDType::kI32;
  if (s == "I16") return StDType::kI16;
  if (s == "I8") return StDType::kI8;
  if (s == "U8") return StDType::kU8;
  if (s == "BOOL") return StDType::kBool;
  if (s == "F64") return StDType::kF64;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", s, "'"));
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

const char* StDTypeName(StDType dtype) {
  switch (dtype) {
    case StDType::kF32:
      return "F32";
    case StDType::kF16:
      return "F16";
    case StDType::kBF16:
      return "BF16";
    case StDType::kI64:
      return "I64";
    case StDType::kI32:
      return "I32";
    case StDType::kI16:
      return "I16";
    case StDType::kI8:
      return "I8";
    case StDType::kU8:
      return "U8";
    case StDType::kBool:
      return "BOOL";
    case StDType::kF64:
      return "F64";
  }
  return "?";
}

int StDTypeSize(StDType dtype) {
  switch (dtype) {
    case StDType::kF64:
    case StDType::kI64:
      return 8;
    case StDType::kF32:
    case StDType::kI32:
      return 4;
    case StDType::kF16:
    case StDType::kBF16:
    case StDType::kI16:
      return 2;
    case StDType::kI8:
    case StDType::kU8:
    case StDType::kBool:
      return 1;
  }
  return 1;
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr && size_ > 0) munmap(const_cast<uint8_t*>(base_), size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(err)));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ < 8) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": truncated safetensors file (",
                                                   file->size_, " bytes, need at least 8)"));
  }
  void* p = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(errno)));
  }
  file->base_ = static_cast<const uint8_t*>(p);

  uint64_t header_len = 0;
  std::memcpy(&header_len, file->base_, 8);  // Little-endian, as on every supported host.
  if (header_len > kMaxHeaderBytes || header_len > file->size_ - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " runs past the end of the file (", file->size_,
                                                   " bytes)"));
  }
  const char* hdr = reinterpret_cast<const char*>(file->base_ + 8);
  json j = json::parse(hdr, hdr + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed safetensors JSON header"));
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file->size_ - data_start;
  // Names by value: pointers into tensors_ would not survive its rehashing.
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (entry.is_object()) {
        for (auto m = entry.begin(); m != entry.end(); ++m) {
          if (m.value().is_string()) file->metadata_[m.key()] = m.value().get<std::string>();
        }
      }
      continue;
    }
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", QuoteInput(name), ": ", what));
    };
    if (!entry.is_object()) return bad("header entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) return bad("missing dtype");
    if (sh == entry.end() || !sh->is_array()) return bad("missing shape");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      return bad("data_offsets must be two non-negative integers");
    }
    TensorView view;
    view.name = name;
    view.file = path;
    auto dtype = ParseStDType(dt->get<std::string>());
    if (!dtype.ok()) return bad(dtype.status().message());
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) return bad("shape has a non-integer or negative dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 62) / dim) return bad("shape overflows");
      numel *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    // Bytes = numel x element size must not wrap around either ([2^31, 2^31] of F32 is 2^64).
    if (numel > (uint64_t{1} << 62) / StDTypeSize(view.dtype)) {
      return bad(absl::StrCat("shape ", ShapeString(view.shape), " x ", StDTypeName(view.dtype),
                              " overflows a 64-bit byte count"));
    }
    uint64_t begin = (*off)[0].get<uint64_t>();
    uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end,
                              ") out of range of the data section (", data_size, " bytes)"));
    }
    if (numel * StDTypeSize(view.dtype) != end - begin) {
      return bad(absl::StrCat("shape ", ShapeString(view.shape), " x ", StDTypeName(view.dtype),
                              " needs ", numel * StDTypeSize(view.dtype), " bytes, offsets give ",
                              end - begin));
    }
    view.data = file->base_ + data_start + begin;
    view.nbytes = end - begin;
    auto [slot, inserted] = file->tensors_.emplace(name, std::move(view));
    ranges.push_back({begin, end, slot->first});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", QuoteInput(ranges[i].name), " (bytes ", ranges[i].begin, "..",
          ranges[i].end, ") overlaps tensor ", QuoteInput(ranges[i - 1].name), " (bytes ",
          ranges[i - 1].begin, "..", ranges[i - 1].end, ") in the data section"));
    }
  }
  return file;
}

bool SafetensorsFile::Has(absl::string_view name) const { return tensors_.contains(name); }

absl::StatusOr<TensorView> SafetensorsFile::Get(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  }
  return it->second;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, view] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::unique_ptr<TensorStore>> TensorStore::Open(const std::string& model_dir) {
  auto store = std::unique_ptr<TensorStore>(new TensorStore());
  store->dir_ = model_dir;
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  std::ifstream index_in(index_path, std::ios::binary);
  if (index_in) {
    std::stringstream buf;
    buf << index_in.rdbuf();
    json j = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
    auto wm = j.is_object() ? j.find("weight_map") : j.end();
    if (j.is_discarded() || !j.is_object() || wm == j.end() || !wm->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": malformed index (expected an object with 'weight_map')"));
    }
    std::map<std::string, int> shard_ids;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry '", it.key(), "' is not a file name"));
      }
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": shard name '", shard, "' must be a plain file name"));
      }
      auto [sit, inserted] = shard_ids.emplace(shard, static_cast<int>(shard_ids.size()));
      if (inserted) {
        auto file = SafetensorsFile::Open(model_dir + "/" + shard);
        if (!file.ok()) return file.status();
        store->files_.push_back(std::move(*file));
      }
      const auto& f = *store->files_[sit->second];
      if (!f.Has(it.key())) {
        return absl::NotFoundError(absl::StrCat(index_path, ": tensor '", it.key(),
                                                "' is listed in shard ", shard,
                                                " but that file does not hold it"));
      }
      store->index_[it.key()] = sit->second;
    }
    return store;
  }
  auto file = SafetensorsFile::Open(model_dir + "/model.safetensors");
  if (!file.ok()) return file.status();
  for (const std::string& name : (*file)->Names()) store->index_[name] = 0;
  store->files_.push_back(std::move(*file));
  return store;
}

bool TensorStore::Has(absl::string_view name) const { return index_.contains(name); }

absl::StatusOr<TensorView> TensorStore::Get(absl::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat("missing tensor '", name, "' in ", dir_));
  }
  return files_[it->second]->Get(name);
}

std::vector<std::string> TensorStore::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, idx] : index_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite* t : sorted) {
    int64_t numel = 1;
    for (int64_t d : t->shape) numel *= d;
    if (static_cast<uint64_t>(numel) * StDTypeSize(t->dtype) != t->data.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor '", t->name, "' shape ", ShapeString(t->shape),
                       " does not match its ", t->data.size(), " bytes"));
    }
    header[t->name] = {{"dtype", StDTypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  uint64_t len = text.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), text.size());
  for (const TensorToWrite* t : sorted) out.write(t->data.data(), t->data.size());
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

}  // namespace swarm::model
