#include "coordinator/coordinator_model.h"

#include <fstream>
#include <utility>

#include "common/block_set.h"
#include "common/host_tensor.h"
#include "common/status_macros.h"
#include "common/weight_format.h"
#include "router/memory.h"
#include "router/router.h"

namespace swarm::coordinator {

absl::StatusOr<std::unique_ptr<CoordinatorModel>> CoordinatorModel::Load(
    const CoordinatorModelOptions& options) {
  auto m = std::unique_ptr<CoordinatorModel>(new CoordinatorModel());
  ASSIGN_OR_RETURN(m->checkpoint_, model::Checkpoint::Open(options.model_dir));
  const std::string tok_path = options.model_dir + "/tokenizer.json";
  if (std::ifstream(tok_path).good()) {
    ASSIGN_OR_RETURN(m->tokenizer_, tokenizer::Tokenizer::FromFile(tok_path));
  }
  // Optional: NotFound means the model has no chat template (it still serves prompts).
  absl::StatusOr<std::unique_ptr<tokenizer::ChatTemplate>> chat =
      tokenizer::ChatTemplate::FromModelDir(options.model_dir);
  if (chat.ok()) {
    m->chat_template_ = *std::move(chat);
  } else if (!absl::IsNotFound(chat.status())) {
    return chat.status();
  }
  m->render_date_ = options.render_date;
  model::LoadOptions load;
  load.device = options.device;
  ASSIGN_OR_RETURN(m->ends_, model::ModelEnds::Create(m->checkpoint_, load));
  if (!options.router_path.empty()) {
    router::RouterOptions router_options;
    router_options.expected_num_blocks = options.router_num_blocks;
    ASSIGN_OR_RETURN(m->router_,
                     router::Router::Load(options.router_path, m->checkpoint_, router_options));
  }
  m->router_path_ = options.router_path;
  const int num_layers = static_cast<int>(m->config().num_layers);
  ASSIGN_OR_RETURN(m->layout_,
                   BlockLayout::Create(
                       num_layers, m->router_ != nullptr ? m->router_->num_blocks() : num_layers));
  return m;
}

CoordinatorModel::~CoordinatorModel() = default;

absl::StatusOr<std::string> CoordinatorModel::RenderChat(
    const tokenizer::jinja::Value& messages,
    const std::optional<tokenizer::jinja::Value>& tools) const {
  if (chat_template_ == nullptr) {
    return absl::FailedPreconditionError(
        "this model has no chat template (no chat_template in tokenizer_config.json, no "
        "chat_template.jinja): send a prompt instead of messages");
  }
  tokenizer::RenderOptions render;
  render.add_generation_prompt = true;
  render.tools = tools;
  render.date = render_date_;
  return chat_template_->Render(messages, render);
}

absl::StatusOr<router::MemoryEstimate> CoordinatorModel::EstimateMemory(
    const MemoryQuery& query, int default_num_workers) const {
  router::MemoryOptions o;
  o.num_blocks = query.num_blocks != 0 ? query.num_blocks : layout_.num_blocks;
  o.top_k = query.top_k_blocks;
  o.num_workers = query.num_workers != 0 ? query.num_workers : default_num_workers;
  if (!query.dtype.empty()) {
    ASSIGN_OR_RETURN(WeightFormat f, ParseWeightFormat(query.dtype));
    if (f.quant == WeightQuant::kNone) o.dtype = f.dtype;
    o.quant = f.quant;
  }
  if (query.keep_blocks.has_value()) {
    ASSIGN_OR_RETURN(o.keep, MakeKeepMask(*query.keep_blocks, o.num_blocks));
  }
  return router::EstimateMemory(*checkpoint_, o);
}

}  // namespace swarm::coordinator
