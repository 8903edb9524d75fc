#include "common/host_port.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace swarm {

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", port);
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, absl::string_view what) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", text, "' is not HOST:PORT (e.g. 127.0.0.1:7001): ", why));
  };
  const size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) return bad("no ':'");
  absl::string_view host = text.substr(0, colon);
  const absl::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // "[::1]" → "::1".
  } else if (host.find_first_of(":[]") != absl::string_view::npos) {
    return bad("an IPv6 host must be in brackets, e.g. [::1]:9100");
  }
  int port = 0;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return bad("the port must be a number in [0, 65535]");
  }
  HostPort out;
  out.host = host.empty() ? "0.0.0.0" : std::string(host);
  out.port = port;
  return out;
}

absl::Status ValidateHostPort(absl::string_view text, absl::string_view what) {
  return ParseHostPort(text, what).status();
}

}  // namespace swarm
