#!/usr/bin/env bash
# The seed corpus of every fuzz target (tests/fuzz/*_fuzz.cc), made from ../shared's fixtures and
# written under OUT/TARGET/ (never into the repository). Used by `make fuzz` (scripts/fuzz.sh) and
# by the ctest smoke runs (tests/fuzz/CMakeLists.txt).
#   tests/fuzz/seeds.sh OUT SHARED_DIR
# Needs python3 and protoc (the protobuf seeds are encoded from text format with the .proto files).
set -euo pipefail
out="${1:?usage: seeds.sh OUT SHARED_DIR}"
shared="${2:?usage: seeds.sh OUT SHARED_DIR}"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rm -rf "$out"
mkdir -p "$out"

seed() {  # seed TARGET FILE...: copies readable files into TARGET's corpus.
  local dir="$out/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    if [[ -r "$f" ]]; then cp "$f" "$dir/$(echo "$f" | tr '/' '_')"; fi
  done
}
put() {  # put TARGET NAME: stdin into TARGET's corpus as NAME.
  mkdir -p "$out/$1"
  cat >"$out/$1/$2"
}
encode() {  # encode TARGET NAME MESSAGE [PREFIX_BYTE_OCTAL]: text-format stdin, encoded.
  local prefix="${4:-}"
  mkdir -p "$out/$1"
  {
    if [[ -n "$prefix" ]]; then printf "\\$prefix"; fi
    protoc -I"$src/proto" --encode="$3" swarm/v1/worker.proto swarm/v1/coordinator.proto
  } >"$out/$1/$2"
}

# Safetensors headers (the 8-byte length and the JSON, no data) of every fixture model, and the
# sharded index a directory of two of them would have.
python3 - "$shared" "$out" <<'PY'
import glob, json, os, struct, sys
shared, out = sys.argv[1], sys.argv[2]
models = sorted(glob.glob(shared + "/fixtures/hf-random/*")) + [shared + "/models/stories260K"]
os.makedirs(out + "/safetensors_fuzz", exist_ok=True)
os.makedirs(out + "/router_file_fuzz", exist_ok=True)
os.makedirs(out + "/safetensors_index_fuzz", exist_ok=True)
for m in models:
    path = m + "/model.safetensors"
    if not os.path.exists(path):
        continue
    data = open(path, "rb").read(1 << 20)
    n = struct.unpack("<Q", data[:8])[0]
    for target in ("safetensors_fuzz", "router_file_fuzz"):  # A router file is a safetensors file.
        open(out + "/" + target + "/" + os.path.basename(m) + ".st", "wb").write(data[:8 + n])
# safetensors_index_fuzz serves two shards: stories260K's file and hf-random/llama-gqa's.
def names(path):
    data = open(path, "rb").read(1 << 20)
    n = struct.unpack("<Q", data[:8])[0]
    return sorted(k for k in json.loads(data[8:8 + n]) if k != "__metadata__")
a = names(shared + "/models/stories260K/model.safetensors")
b = names(shared + "/fixtures/hf-random/llama-gqa/model.safetensors")
index = {"metadata": {"total_size": 0}, "weight_map": {}}
for k in a[: len(a) // 2]:
    index["weight_map"][k] = "model-00001-of-00002.safetensors"
for k in b[:8]:
    index["weight_map"][k] = "model-00002-of-00002.safetensors"
open(out + "/safetensors_index_fuzz/two_shards.json", "w").write(json.dumps(index, indent=2))
one = {"weight_map": {k: "model-00001-of-00002.safetensors" for k in a}}
open(out + "/safetensors_index_fuzz/one_shard.json", "w").write(json.dumps(one))
PY

seed config_fuzz "$shared"/fixtures/hf-random/*/config.json "$shared"/models/stories260K/config.json
seed tokenizer_load_fuzz "$shared"/models/stories260K/tokenizer.json
# tokenizer_encode_fuzz: the first byte picks the tokenizer.
printf '\x00Once upon a time' | put tokenizer_encode_fuzz once
printf '\x03Hello, world! <|begin_of_text|> 123' | put tokenizer_encode_fuzz hello
printf 'alice:alice-0123456789abcdef\n\x00Bearer alice-0123456789abcdef' | put auth_tokens_fuzz alice

# Hidden states of stories260K (hidden size 64) in text format: ROWS rows of 0.5f.
hidden() {
  python3 -c "import sys; r=int(sys.argv[1]); print('dtype: DTYPE_F32 shape: %d shape: 64 data: \"%s\"' % (r, '\\\\000\\\\000\\\\000?' * 64 * r))" "$1"
}
# worker_forward_fuzz and worker_stream_fuzz: the first byte's low bit opens a fresh session.
echo "step_id: 1 start_position: 0 layers: 0 layers: 1 hidden { $(hidden 2) }" |
  encode worker_forward_fuzz two_rows swarm.v1.ForwardRequest 001
echo "step_id: 1 start_position: 0 layers: 1 gate: 0.5 hidden { $(hidden 1) }" |
  encode worker_forward_fuzz gated swarm.v1.ForwardRequest 001
echo "session_id: \"none\" step_id: 1 layers: 0 hidden { $(hidden 1) }" |
  encode worker_forward_fuzz unknown_session swarm.v1.ForwardRequest 000
# worker_stream_fuzz: byte 0 as above; byte 1 picks the call (0 ForwardStream, 1 ForwardBatch,
# 2 ForwardBatchStream) and the size of the pieces the message is cut into.
{ printf '\001\000'; tail -c +2 "$out/worker_forward_fuzz/two_rows"; } | put worker_stream_fuzz stream
{ printf '\001\024'; tail -c +2 "$out/worker_forward_fuzz/two_rows"; } | put worker_stream_fuzz stream_cut
echo "steps { step_id: 1 start_position: 0 positions: 2 } layers: 0 layers: 1 hidden { $(hidden 2) }" |
  encode worker_stream_fuzz batch swarm.v1.ForwardBatchRequest 001
{ printf '\001\001'; tail -c +2 "$out/worker_stream_fuzz/batch"; } >"$out/worker_stream_fuzz/batch1"
{ printf '\001\002'; tail -c +2 "$out/worker_stream_fuzz/batch"; } >"$out/worker_stream_fuzz/batch2"
rm "$out/worker_stream_fuzz/batch"

echo 'prompt: "Once upon a time" sampling { max_new_tokens: 4 temperature: 0 }' |
  encode coordinator_generate_fuzz greedy swarm.v1.GenerateRequest
echo 'prompt_ids: 1 prompt_ids: 403 sampling { max_new_tokens: 3 temperature: 0.8 top_k: 5 seed: 7 stop: "." logprobs: true top_logprobs: 2 } request_id: "r1"' |
  encode coordinator_generate_fuzz sampled swarm.v1.GenerateRequest
echo 'prompt: "Lily" mode: MODE_SPARSE top_k_blocks: 2 sampling { max_new_tokens: 2 }' |
  encode coordinator_generate_fuzz sparse swarm.v1.GenerateRequest

# http_request_fuzz: byte 0 picks the endpoint (bit 0: chat) and the chat template (bit 1:
# llama-3.1's, else llama-2-chat's); the rest is the body.
printf '\000{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "stop": ["."], "logprobs": 2, "stream": true, "stream_options": {"include_usage": true}}' |
  put http_request_fuzz completion
printf '\000{"prompt": [1, 403, 407], "max_tokens": 4, "top_p": 0.9, "seed": 3, "return_token_ids": true, "ignore_eos": true}' |
  put http_request_fuzz completion_ids
printf '\001{"model": "stories260K", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_completion_tokens": 8, "logprobs": true, "top_logprobs": 2}' |
  put http_request_fuzz chat
printf '\003{"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}' |
  put http_request_fuzz chat_tools
