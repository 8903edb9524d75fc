#include "common/weight_format.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace swarm {

const char* WeightQuantName(WeightQuant quant) {
  switch (quant) {
    case WeightQuant::kNone:
      return "none";
    case WeightQuant::kQ8:
      return "q8";
    case WeightQuant::kQ4:
      return "q4";
  }
  return "?";
}

absl::StatusOr<WeightQuant> ParseWeightQuant(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "q8") return WeightQuant::kQ8;
  if (n == "q4") return WeightQuant::kQ4;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quantized format '", name, "' (expected q8 or q4)"));
}

absl::StatusOr<WeightFormat> ParseWeightFormat(absl::string_view name) {
  WeightFormat f;
  auto quant = ParseWeightQuant(name);
  if (quant.ok()) {
    f.quant = *quant;
    return f;
  }
  auto dtype = ParseDType(name);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dtype '", name, "' (expected f32, f16, bf16, q8 or q4)"));
  }
  f.dtype = *dtype;
  return f;
}

const char* WeightFormatName(const WeightFormat& format) {
  return format.quant == WeightQuant::kNone ? DTypeName(format.dtype)
                                            : WeightQuantName(format.quant);
}

int64_t QuantGroups(int64_t in) { return (in + kQuantGroup - 1) / kQuantGroup; }

int64_t QuantRowBytes(WeightQuant quant, int64_t in) {
  const int64_t padded = QuantGroups(in) * kQuantGroup;
  switch (quant) {
    case WeightQuant::kQ8:
      return padded;
    case WeightQuant::kQ4:
      return padded / 2;
    case WeightQuant::kNone:
      break;
  }
  return 0;
}

int64_t QuantizedBytes(WeightQuant quant, int64_t out, int64_t in) {
  return out * (QuantRowBytes(quant, in) + 2 * QuantGroups(in));
}

}  // namespace swarm
