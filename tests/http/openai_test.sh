#!/usr/bin/env bash
# swarm-coordinator's OpenAI-compatible HTTP API through the official `openai` npm client
# (openai_test.mjs, node's test runner) on a local stories260K cluster the script starts.
#   openai_test.sh SOURCE_DIR WORK_DIR SWARM SWARM_WORKER SWARM_COORDINATOR [MODEL_DIR]
# The npm package comes from the lock file (`npm ci` into WORK_DIR, again only when the lock file
# changes), as tests/deploy/manifests_test.sh does: from npm's cache once it has been installed
# once. Exit 0 pass, 1 fail, 77 skip (node or npm missing, or no model: `make test-integration`
# installs them; with CI=true a missing tool fails: tests/deploy/lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"
if [[ $# -lt 5 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
src="$(cd "$1" && pwd)"
work="$2"
here="$src/tests/http"
model="${6:-$src/../shared/models/stories260K}"

require_tools node npm
[[ -f "$model/config.json" ]] || skip_or_fail "no model at $model"
golden="$src/../shared/fixtures/golden/stories260K"
[[ -f "$golden/golden.safetensors" ]] || skip_or_fail "no golden ids at $golden"

mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/openai_test.mjs" "$work/"
if ! cmp -s "$here/package-lock.json" "$work/node_modules/.swarm-lock" 2>/dev/null; then
  (cd "$work" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$work/node_modules/.swarm-lock"
fi

# The cluster serves stories260K with a chat template: a scratch directory of symlinks to the
# model's files plus a real model's tokenizer_config.json (llama-2-chat, from the chat-template
# fixtures), named stories260K so the served model name stays the same.
chat_dir="$work/chat-model/stories260K"
template="$src/../shared/fixtures/chat_templates/templates/llama-2-chat.json"
[[ -f "$template" ]] || skip_or_fail "no chat template fixture at $template"
rm -rf "$work/chat-model"
mkdir -p "$chat_dir"
for f in config.json generation_config.json model.safetensors tokenizer.json; do
  [[ -e "$model/$f" ]] && ln -s "$(realpath "$model/$f")" "$chat_dir/$f"
done
ln -s "$(realpath "$template")" "$chat_dir/tokenizer_config.json"
model="$chat_dir"

bins=()
for bin in "$3" "$4" "$5"; do
  [[ -x "$bin" ]] || skip_or_fail "no binary at $bin (build it first)"
  bins+=("$(realpath "$bin")")
done
cd "$work"
SWARM="${bins[0]}" SWARM_WORKER="${bins[1]}" SWARM_COORDINATOR="${bins[2]}" MODEL="$model" GOLDEN="$golden" \
  node --test openai_test.mjs
