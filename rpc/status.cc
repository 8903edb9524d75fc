#include "rpc/status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace swarm::rpc {

absl::StatusCode CanonicalCode(int code) {
  return (code >= 0 && code <= 16) ? static_cast<absl::StatusCode>(code)
                                   : absl::StatusCode::kUnknown;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(CanonicalCode(static_cast<int>(status.code()))),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view context) {
  if (status.ok()) return absl::OkStatus();
  // gRPC codes 0..16 are the canonical codes absl uses; anything else is UNKNOWN on both sides.
  const absl::StatusCode absl_code = CanonicalCode(static_cast<int>(status.error_code()));
  if (context.empty()) return absl::Status(absl_code, status.error_message());
  return absl::Status(absl_code, absl::StrCat(context, ": ", status.error_message()));
}

}  // namespace swarm::rpc
