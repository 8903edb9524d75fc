// The C++ SDK of a Swarm cluster: `swarm::Client` talks to a swarm-coordinator over gRPC to
// stream generated text (Generate, with a per-chunk callback) and to read the cluster's state
// (Status). It is what the `swarm generate` / `swarm status` commands use, and what other
// programs use through the installed CMake package:
//
//   find_package(swarm REQUIRED)
//   target_link_libraries(app PRIVATE swarm::swarm_client)
//   #include "client/client.h"
//
// This header uses only the standard library and Abseil; protobuf and gRPC stay inside.
// Threading: a Client is thread-safe; several threads may run Generate at once (they share one
// HTTP/2 connection). Callbacks run on the calling thread.
#ifndef SWARM_CLIENT_CLIENT_H_
#define SWARM_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace swarm {

struct ClientOptions {
  // Deadline of a Generate call that sets no timeout of its own.
  absl::Duration default_generate_timeout = absl::Minutes(10);
  // The coordinator's token (--auth-tokens there), sent as "authorization: Bearer TOKEN" on every
  // call. When empty: the first line of `token_file` if set, else the environment's SWARM_TOKEN.
  std::string token;
  std::string token_file;
  // TLS: the CA bundle that the coordinator's certificate must chain to (PEM). Empty: plaintext.
  std::string tls_ca_file;
  // A client certificate and key (PEM), for a coordinator that requires one (TLS without tokens).
  std::string tls_cert_file;
  std::string tls_key_file;
  // Other coordinators of the same cluster ("host:port"), for resuming a stream: when the
  // coordinator a Generate streams from fails (UNAVAILABLE: it died, or its connection broke),
  // Generate sends the request again to the next address in turn (these, then the first one
  // again) with the ids received so far (GenerateRequest.resume_ids), and the caller's stream
  // goes on where it stopped: the continuation is the one the first coordinator would have
  // streamed (sampling is a pure function of (seed, position)). Empty: no resume.
  std::vector<std::string> resume_addresses;
  int max_resumes = 3;  // Resumes per Generate at most.
};

// One turn of a conversation (GenerateRequest::messages).
struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

struct GenerateRequest {
  std::string prompt;               // Tokenized by the coordinator...
  std::vector<int64_t> prompt_ids;  // ...unless ids are given.
  // ...or a conversation instead of a prompt: the coordinator renders it with the model's chat
  // template (with the generation prompt; no special tokens added). INVALID_ARGUMENT with the
  // template's message when it raises, FAILED_PRECONDITION when the model has none.
  std::vector<ChatMessage> messages;
  bool add_special_tokens = true;  // BOS etc. for `prompt`.
  int64_t max_new_tokens = 64;
  float temperature = 0.0f;  // 0 = greedy.
  int64_t top_k = 0;         // 0 = off.
  float top_p = 1.0f;        // 1 = off.
  uint64_t seed = 0;
  bool stop_at_eos = true;
  // Stop strings: generation ends at the first one in the text (finish_reason "stop"); neither
  // it nor what follows is returned. At most 16, each 1..256 bytes.
  std::vector<std::string> stop;
  bool logprobs = false;       // Each token's log-probability (GenerateChunk/Result::logprobs)...
  int top_logprobs = 0;        // ...with this many most likely alternatives (0..20).
  std::string mode = "exact";  // "exact" or "sparse".
  int top_k_blocks = 0;        // Sparse mode.
  std::string combine = "sequential";  // Sparse mode: "sequential" or "parallel".
  std::string request_id;              // Optional; shows in the coordinator's logs.
  // Sparse mode with an explicit plan instead of the router's choice: these blocks of a
  // num_blocks-way even split, with these weights (empty = all 1).
  std::vector<int> blocks;
  std::vector<float> block_weights;
  int num_blocks = 0;
  absl::Duration timeout = absl::ZeroDuration();  // 0: ClientOptions::default_generate_timeout.
};

struct TokenLogprob {
  int64_t id = 0;
  float logprob = 0.0f;  // Natural log: the log softmax of the model's raw logits.
  std::string text;      // The token's text as it reads after the token before it.
};

// One generated token's log-probability report (GenerateRequest::logprobs).
struct TokenLogprobs {
  TokenLogprob chosen;            // The generated token.
  std::vector<TokenLogprob> top;  // The top_logprobs most likely tokens, descending.
};

// What arrived in one streamed message.
struct GenerateChunk {
  std::vector<int64_t> ids;             // Newly generated ids (may be empty).
  std::string text;                     // Newly final text (may be empty).
  std::vector<TokenLogprobs> logprobs;  // One per id, when asked.
};

struct GenerateResult {
  std::vector<int64_t> prompt_ids;
  std::vector<int64_t> ids;             // Generated ids only.
  std::string text;                     // Their text (cut before a stop string).
  std::string finish_reason;            // "eos", "stop", "length", "context".
  std::vector<TokenLogprobs> logprobs;  // One per id, when asked.
  std::string request_id;
  // Sparse mode: the blocks that ran (of num_blocks) and their weights.
  std::vector<int> blocks;
  std::vector<float> block_weights;
  int num_blocks = 0;
  double time_to_first_token_seconds = 0;  // As measured by the coordinator.
  double total_seconds = 0;
  int resumes = 0;  // Times the stream was resumed on another coordinator.
};

struct WorkerStatus {
  std::string address;
  bool reachable = false;
  bool compatible = false;                  // Same model as the coordinator.
  bool ready = false;                       // Layers loaded.
  std::string error;                        // Why it is not used, if it is not.
  std::vector<std::pair<int, int>> layers;  // Half-open ranges [begin, end).
  std::string device;
  std::string dtype;          // The compute dtype: "f32", "bf16", "f16".
  std::string weight_format;  // "q8" or "q4" when the linear weights are quantized, else "".
  int sessions = 0;
  int max_sessions = 0;
  int64_t kv_used_bytes = 0;
  int64_t kv_reserved_bytes = 0;
  int64_t kv_budget_bytes = 0;  // 0 = unlimited.
  int64_t weight_bytes = 0;
  int inflight_steps = 0;
  int active_requests = 0;  // The coordinator's requests routed through it.
  uint64_t steps_total = 0;
  double busy_fraction = 0;  // Share of the scheduler's window spent on its batch hops, 0..1.
};

// The coordinator's scheduler: occupancy now, and its steps over the last window_seconds.
struct SchedulerStatus {
  int running_requests = 0;
  int waiting_requests = 0;
  double window_seconds = 0;
  uint64_t steps = 0;
  double sequences_per_step = 0;  // Means over those steps.
  double tokens_per_step = 0;
  uint64_t admitted = 0;
  double queue_seconds_mean = 0;
};

struct ClusterStatus {
  bool serving = false;
  std::string reason;  // Why not, when not serving.
  std::string router;  // The router file sparse mode uses ("" = none).
  std::string model_fingerprint;
  std::string architecture;
  int num_layers = 0;
  int64_t max_position_embeddings = 0;
  std::vector<WorkerStatus> workers;
  int active_requests = 0;
  uint64_t requests_total = 0;
  SchedulerStatus scheduler;
};

struct BlockChoice {
  int block = 0;
  int begin_layer = 0;  // The block's layers [begin_layer, end_layer).
  int end_layer = 0;
  float weight = 1.0f;
};

struct Prediction {
  std::vector<BlockChoice> blocks;
  int num_blocks = 0;
  std::vector<int64_t> prompt_ids;
  double expected_kl = 0;  // The router's damage estimate (nats per token).
  // `blocks` are what a sparse request would run now: with `balance` (the coordinator's
  // --balance) under the load tolls of now, else the toll-free choice, given here either way.
  bool balance = false;
  std::vector<int> toll_free_blocks;
  double toll_free_expected_kl = 0;
};

// Weight memory of sparse serving (Client::EstimateMemory; router/memory.h on the coordinator).
struct MemoryRequest {
  int num_blocks = 0;    // 0: the coordinator's router N, or one block per layer.
  int top_k_blocks = 0;  // 0: all blocks.
  int num_workers = 0;   // 0: the coordinator's worker count.
  std::string dtype;     // "" = as stored; "f32", "bf16", "f16".
  bool keep_default = true;
  std::vector<int> keep_blocks;  // Used when !keep_default (negative = from the end).
};

struct MemoryEstimate {
  int num_blocks = 0;
  int top_k_blocks = 0;
  std::string dtype;
  int64_t embedding_bytes = 0;
  int64_t head_bytes = 0;
  std::vector<int64_t> layer_bytes;
  std::vector<int64_t> block_bytes;
  int64_t blocks_bytes = 0;
  int64_t total_bytes = 0;
  int64_t active_block_bytes = 0;  // Largest any admissible top-k choice keeps resident.
  int64_t active_bytes = 0;        // Ends + active_block_bytes.
  double savings_ratio = 0;        // 1 - active / total.
  double block_savings_ratio = 0;
  std::vector<int64_t> worker_bytes;
  std::vector<std::pair<int, int>> worker_blocks;  // Half-open block ranges per worker.
  int64_t kv_bytes_per_token = 0;
};

// Returning false from the callback cancels the request (the coordinator then frees its sessions
// on every worker) and Generate returns Cancelled.
using ChunkCallback = std::function<bool(const GenerateChunk&)>;

class Client {
 public:
  // Creates a channel to `address` ("host:port"), and one to each of options.resume_addresses.
  // Does not wait for the server (see WaitUntilServing). InvalidArgument for a malformed address,
  // an unreadable token file or bad TLS files.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         const ClientOptions& options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& address() const;

  // Generates, calling `on_chunk` for every streamed message that carries ids or text. Errors are
  // the coordinator's gRPC status (InvalidArgument, OutOfRange, Unavailable, ...), with the
  // address in the message. With ClientOptions::resume_addresses an UNAVAILABLE stream is
  // resumed on another coordinator (up to max_resumes times) before it counts as an error;
  // result.resumes says how often.
  absl::StatusOr<GenerateResult> Generate(const GenerateRequest& request,
                                          const ChunkCallback& on_chunk = nullptr);

  absl::StatusOr<ClusterStatus> Status(absl::Duration timeout = absl::Seconds(10));

  // The blocks the coordinator's router would run for `prompt` (or `prompt_ids` when not
  // empty), without running any. FailedPrecondition when the coordinator has no router file.
  absl::StatusOr<Prediction> Predict(const std::string& prompt,
                                     const std::vector<int64_t>& prompt_ids, int top_k_blocks,
                                     absl::Duration timeout = absl::Seconds(10));

  // Weight memory for `request`, computed by the coordinator from the model's tensor sizes.
  // InvalidArgument for N, k, workers or dtype out of range.
  absl::StatusOr<MemoryEstimate> EstimateMemory(const MemoryRequest& request,
                                                absl::Duration timeout = absl::Seconds(10));

  // Polls Status until the coordinator serves; DeadlineExceeded with the last reason otherwise.
  absl::Status WaitUntilServing(absl::Duration timeout);

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace swarm

#endif  // SWARM_CLIENT_CLIENT_H_
