// libFuzzer: a tokens file and an authorization header through common/token_auth.h. The input is
// the file, a 0 byte, then the header value.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/token_auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t split = in.find('\0');
  absl::string_view file = in.substr(0, split);
  absl::string_view header = split == absl::string_view::npos ? "" : in.substr(split + 1);
  swarm::common::TokenAuthOptions options;
  options.max_requests_per_token = 1;
  auto auth = swarm::common::TokenAuth::FromText(file, options);
  if (!auth.ok()) return 0;
  auto lease = (*auth)->Acquire(header);
  (void)(*auth)->Acquire(header);  // Over the limit when the first one got in.
  (void)(*auth)->Authenticate(header);
  return 0;
}
