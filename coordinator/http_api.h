// swarm-coordinator's OpenAI-compatible HTTP API (`--http-listen HOST:PORT`): POST
// /v1/completions, POST /v1/chat/completions, GET /v1/models (and /v1/models/{id}), GET /health,
// over cpp-httplib. A thin adapter, like the gRPC service (coordinator_service.h): the JSON
// (openai_api.h) becomes a GenerationRequest that runs on the same CoordinatorServer request pool,
// with the same limits (CoordinatorServer::Schedule: 429 when it is full, 503 while shutting down,
// every refusal counted by GenerationPipeline::Refuse), the same pipeline and the same errors;
// `stream: true` answers with server-sent events in OpenAI's chunk shape, ending `data: [DONE]`.
// A client that disconnects mid-stream cancels its request, which frees its worker sessions.
// With the coordinator's --auth-tokens (CoordinatorServer::auth()) every /v1/ request needs
// `Authorization: Bearer TOKEN` (401 otherwise), and a generation holds one of its token's
// request slots until it ends, the same per-token limit as gRPC's (429 beyond it).
//
// Threading: httplib's own bounded pool of connection threads reads requests and writes replies;
// each generation runs on the coordinator's request pool and hands its tokens to the connection
// thread through the call's queue. Stop() (and the destructor) cancels the requests under way,
// stops accepting and joins every thread. All public methods are thread-safe.
#ifndef SWARM_COORDINATOR_HTTP_API_H_
#define SWARM_COORDINATOR_HTTP_API_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace httplib {
class Server;
}

namespace swarm::coordinator {

class CoordinatorServer;

struct HttpApiOptions {
  std::string listen = "127.0.0.1:0";  // HOST:PORT; port 0 picks a free one.
  // The model's name in /v1/models and the responses; requests naming another model get 404.
  // "" = the model directory's last component.
  std::string model_name;
  int64_t max_body_bytes = 1 << 20;  // Larger bodies get 413.
  // Connection threads. Each open connection (keep-alive included) holds one, so this should
  // exceed the request pool (max concurrent + queued) for the pool to be the limit that answers
  // 429. 0 = that pool's size + 8.
  int threads = 0;
};

class HttpApi {
 public:
  // Binds and serves over `server` (not owned; must outlive the API). InvalidArgument for a
  // malformed address, Unavailable naming it when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(CoordinatorServer* server,
                                                        const HttpApiOptions& options);
  ~HttpApi();  // Stop().
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "HOST:PORT" with the bound port.

  // Cancels the requests under way, stops accepting and joins every thread. Idempotent.
  void Stop();

  struct Calls;  // The requests under way (http_api.cc).

 private:
  HttpApi(std::unique_ptr<httplib::Server> server, std::shared_ptr<Calls> calls, std::string host,
          int port);

  const std::string host_;
  const int port_;
  const std::shared_ptr<Calls> calls_;
  absl::Mutex mu_;
  std::unique_ptr<httplib::Server> server_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_HTTP_API_H_
