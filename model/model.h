// The model library's public API in one include, for code that uses most of it (the
// coordinator). Prefer the specific headers:
//  - model/checkpoint.h: Checkpoint, a model directory opened lazily (config, safetensors, the
//    architecture family's tensor names);
//  - model/weights.h: LoadOptions (device, dtype, copy or map);
//  - model/layer_host.h: LayerHost, a set of layers on a device; model/kv_cache.h: KvCache;
//  - model/model_ends.h: ModelEnds, embeddings, final norm and LM head;
//  - model/combine.h: the one residual/gate combine rule of sparse execution;
//  - model/sampler.h, model/generate.h: sampling, the generation loop and the in-process Engine.
// LibTorch stays inside model/*.cc (and the internal model/*_torch.h headers they include).
// A *block* (the unit the router and scheduler work with) is a contiguous range of layers; see
// common/block_layout.h.
#ifndef SWARM_MODEL_MODEL_H_
#define SWARM_MODEL_MODEL_H_

#include "model/checkpoint.h"
#include "model/combine.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/layer_host.h"
#include "model/model_ends.h"
#include "model/safetensors.h"
#include "model/weights.h"

#endif  // SWARM_MODEL_MODEL_H_
