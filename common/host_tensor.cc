#include "common/host_tensor.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace swarm {

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // Subnormal: normalise.
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t FloatToHalf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // Rounds past 65504.
  if (abs < 0x38800000u) {  // Below 2^-14: a subnormal half (or zero).
    const uint32_t e = abs >> 23;
    if (e < 102) return static_cast<uint16_t>(sign);  // Below 2^-25: rounds to zero.
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24.
    uint32_t m = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1u))) ++m;
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t h = (abs >> 13) - (112u << 10);
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 4;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "f32" || n == "float32" || n == "fp32") return DType::kF32;
  if (n == "f16" || n == "float16" || n == "fp16") return DType::kF16;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (expected f32, f16 or bf16)"));
}

int64_t HostTensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::Status HostTensor::Validate() const {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor shape [", absl::StrJoin(shape, ","), "] has a negative dimension"));
    }
  }
  const int64_t want = NumElements() * DTypeSize(dtype);
  if (static_cast<int64_t>(data.size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat("tensor of shape [", absl::StrJoin(shape, ","),
                                                   "] and dtype ", DTypeName(dtype), " needs ",
                                                   want, " bytes, got ", data.size()));
  }
  return absl::OkStatus();
}

std::vector<float> HostTensor::ToFloats() const {
  const int64_t n = std::min<int64_t>(NumElements(), data.size() / DTypeSize(dtype));
  std::vector<float> out(n);
  if (dtype == DType::kF32) {
    std::memcpy(out.data(), data.data(), n * 4);
    return out;
  }
  const auto* p = reinterpret_cast<const uint16_t*>(data.data());
  for (int64_t i = 0; i < n; ++i) {
    out[i] = dtype == DType::kBF16 ? Bf16ToFloat(p[i]) : HalfToFloat(p[i]);
  }
  return out;
}

HostTensor HostTensor::FromFloats(std::vector<int64_t> shape, const std::vector<float>& values) {
  HostTensor t;
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return t;
}

absl::Status HostTensor::CheckFinite(absl::string_view what) const {
  const int64_t rows = shape.empty() ? 1 : shape[0];
  return CheckFiniteRows(what, 0, rows);
}

absl::Status HostTensor::CheckFiniteRows(absl::string_view what, int64_t first_row,
                                         int64_t rows) const {
  // A non-finite value has every exponent bit set, in each of the three formats.
  const size_t size = static_cast<size_t>(DTypeSize(dtype));
  const size_t n = data.size() / size;
  const int64_t cols =
      shape.empty() ? 1 : std::max<int64_t>(1, NumElements() / std::max<int64_t>(1, shape[0]));
  const size_t begin = std::min(n, static_cast<size_t>(std::max<int64_t>(0, first_row) * cols));
  const size_t end = std::min(n, begin + static_cast<size_t>(std::max<int64_t>(0, rows) * cols));
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t bad = n;
  if (dtype == DType::kF32) {
    for (size_t i = begin; i < end && bad == n; ++i) {
      uint32_t bits;
      std::memcpy(&bits, p + i * 4, 4);
      if ((bits & 0x7f800000u) == 0x7f800000u) bad = i;
    }
  } else {
    const uint16_t mask = dtype == DType::kF16 ? 0x7c00 : 0x7f80;
    for (size_t i = begin; i < end && bad == n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, p + i * 2, 2);
      if ((bits & mask) == mask) bad = i;
    }
  }
  if (bad == n) return absl::OkStatus();
  const int64_t last = shape.empty() ? 1 : std::max<int64_t>(1, shape.back());
  return absl::InvalidArgumentError(absl::StrCat(
      what, ": element ", bad, " (row ", static_cast<int64_t>(bad) / last, ", column ",
      static_cast<int64_t>(bad) % last, ") is NaN or infinite; hidden states must be finite"));
}

}  // namespace swarm
