// What the coordinator holds of the model, loaded once at start-up: the checkpoint (config and
// tensor index), the tokenizer when the model has a tokenizer.json, the model's ends (embeddings,
// final norm, LM head) and, with a router file, the Parisi-Nash router. No layer weights: those
// live on the workers. Shared by the generation pipeline (tokenize, embed, choose blocks, sample),
// the server (Status, EstimateMemory) and swarm-coordinator's main, which loads it before the
// metrics so that the per-block series follow block_layout() without reading the router file
// twice.
//
// Threading: immutable after Load, so every method is thread-safe; the router is internally
// synchronized (its Route updates the load tolls).
#ifndef SWARM_COORDINATOR_COORDINATOR_MODEL_H_
#define SWARM_COORDINATOR_COORDINATOR_MODEL_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/civil_time.h"
#include "common/block_layout.h"
#include "model/model.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace swarm::router {
class Router;
struct MemoryEstimate;
}  // namespace swarm::router

namespace swarm::coordinator {

struct CoordinatorModelOptions {
  std::string model_dir;
  std::string device = "cpu";  // Where the embeddings and the head run.
  // A router file (`swarm calibrate`) for sparse mode and Predict; "" = none.
  std::string router_path;
  // When > 0, the router file must have been calibrated for this many blocks (else Load fails
  // with FailedPrecondition naming the file and both N).
  int router_num_blocks = 0;
  // The day the chat template's strftime_now() renders (--date / SWARM_DATE); nullopt: the
  // clock.
  std::optional<absl::CivilDay> render_date;
};

// EstimateMemory's question. Zeros and empties mean "the coordinator's own".
struct MemoryQuery {
  int num_blocks = 0;    // 0: block_layout().num_blocks.
  int top_k_blocks = 0;  // 0: all blocks.
  int num_workers = 0;   // 0: the caller's default.
  std::string dtype;     // "" = as stored; else "f32", "bf16", "f16", "q8" or "q4".
  std::optional<std::vector<int>> keep_blocks;  // Unset: the default (first and last block).
};

class CoordinatorModel {
 public:
  // Opens the checkpoint, loads the tokenizer (if the model has one), the chat template (if
  // tokenizer_config.json holds one or chat_template.jinja exists; one that does not parse fails
  // the load, naming the file), the ends on
  // `options.device` and the router file (if given). Errors name the file at fault; a router
  // file of another model or another N is FailedPrecondition.
  static absl::StatusOr<std::unique_ptr<CoordinatorModel>> Load(
      const CoordinatorModelOptions& options);
  ~CoordinatorModel();

  const model::ModelConfig& config() const { return checkpoint_->config(); }
  const model::Checkpoint& checkpoint() const { return *checkpoint_; }
  const tokenizer::Tokenizer* tokenizer() const { return tokenizer_.get(); }  // Null: none.
  const tokenizer::ChatTemplate* chat_template() const {
    return chat_template_.get();
  }  // Null: none.

  // The prompt text of a conversation: the chat template over `messages` (a list of message
  // dicts) and `tools` (when given), with the generation prompt, strftime_now() on
  // render_date. The one place the coordinator renders chat (HTTP chat completions, gRPC
  // Generate with messages); the text is then tokenized without special tokens. Errors:
  // FailedPrecondition "this model has no chat template..." without one; InvalidArgument with
  // exactly the template's message for its raise_exception (jinja::IsRaisedException), or the
  // template's error.
  absl::StatusOr<std::string> RenderChat(const tokenizer::jinja::Value& messages,
                                         const std::optional<tokenizer::jinja::Value>& tools) const;
  const model::ModelEnds& ends() const { return *ends_; }
  router::Router* router() const { return router_.get(); }  // Null without a router file.
  const std::string& router_path() const { return router_path_; }

  // The coordinator's split of the layers into blocks: the router's N-way split, or one block
  // per layer without a router. The per-block metric series and EstimateMemory's default follow
  // it.
  BlockLayout block_layout() const { return layout_; }

  // Weight, KV and savings sizes of serving this model split as `query` says (tensor sizes
  // only; nothing is loaded). `default_num_workers` stands for query.num_workers == 0.
  // InvalidArgument for a bad dtype, block count or keep list.
  absl::StatusOr<router::MemoryEstimate> EstimateMemory(const MemoryQuery& query,
                                                        int default_num_workers) const;

 private:
  CoordinatorModel() = default;

  std::shared_ptr<const model::Checkpoint> checkpoint_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<tokenizer::ChatTemplate> chat_template_;
  std::optional<absl::CivilDay> render_date_;
  std::unique_ptr<model::ModelEnds> ends_;
  std::unique_ptr<router::Router> router_;
  std::string router_path_;
  BlockLayout layout_;
};

}  // namespace swarm::coordinator

#endif  // SWARM_COORDINATOR_COORDINATOR_MODEL_H_
