// Safetensors reading (mmap, lazy) and writing. A `SafetensorsFile` maps one file and parses
// only its JSON header at open; tensor bytes are touched when a caller reads them, so a process
// that reads a quarter of the tensors pages in about a quarter of the file. `TensorStore` spans
// a model directory: a single model.safetensors or a sharded set listed by
// model.safetensors.index.json. Torch-free. Immutable after Open; safe to read from any thread.
#ifndef SWARM_MODEL_SAFETENSORS_H_
#define SWARM_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace swarm::model {

enum class StDType { kF32, kF16, kBF16, kI64, kI32, kI8, kU8, kBool, kF64, kI16 };

const char* StDTypeName(StDType dtype);
int StDTypeSize(StDType dtype);
// "[64,172]": a shape as the model library's error messages print it.
std::string ShapeString(const std::vector<int64_t>& shape);

struct TensorView {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // Points into the mapping; valid while the file is open.
  size_t nbytes = 0;
  std::string file;  // The file holding it, for error messages.

  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates its header: length within the file, JSON well-formed, each
  // tensor's dtype known, shape × dtype size == its byte range, ranges inside the data section
  // and not overlapping. Errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool Has(absl::string_view name) const;
  absl::StatusOr<TensorView> Get(absl::string_view name) const;
  std::vector<std::string> Names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  absl::flat_hash_map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory, sharded or not. Every shard is mapped at Open (headers
// parsed); tensor bytes are paged in only when read.
class TensorStore {
 public:
  static absl::StatusOr<std::unique_ptr<TensorStore>> Open(const std::string& model_dir);

  bool Has(absl::string_view name) const;
  // Errors: NotFound naming the tensor and the directory.
  absl::StatusOr<TensorView> Get(absl::string_view name) const;
  std::vector<std::string> Names() const;

 private:
  TensorStore() = default;
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, int> index_;  // tensor name → files_ index
};

// A tensor to write: raw bytes in `dtype`, row-major.
struct TensorToWrite {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  std::string data;
};

// Writes a safetensors file (header sorted by name, 8-byte aligned data section).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace swarm::model

#endif  // SWARM_MODEL_SAFETENSORS_H_
