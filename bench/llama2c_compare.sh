#!/usr/bin/env bash
# Swarm's batch-1 decode against llama2.c's run.c on the same weights, in one command: builds
# run.c (gcc -Ofast -fopenmp -march=native, as llama2.c's `make runomp`) from the llama2.c sources
# at LLAMA2C (a checkout, or a bare git directory such as the `fetch` tool's mirror), converts
# MODEL's f32 weights to run.c's format (bench/hf_to_llama2c.py), then runs REPS rounds, each of:
# build/model_bench (decode tokens/s, and the machine's read bandwidth measured in the same run)
# and run.c at 1 and 2 threads (OMP_NUM_THREADS). Prints every round and the medians: Swarm's
# tokens/s, its fraction of the read-bandwidth roofline, run.c's tokens/s at each thread count,
# and Swarm / run.c at run.c's best thread count.
#
#   bench/llama2c_compare.sh MODEL LLAMA2C [REPS=3] [TOKENS=128]
set -euo pipefail
model="${1:?usage: llama2c_compare.sh MODEL LLAMA2C [REPS] [TOKENS]}"
src="${2:?usage: llama2c_compare.sh MODEL LLAMA2C [REPS] [TOKENS]}"
reps="${3:-3}"
tokens="${4:-128}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="${MODEL_BENCH:-$root/build/model_bench}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -f "$src/run.c" ]]; then
  cp "$src/run.c" "$work/run.c"
else
  git --git-dir="$src" show HEAD:run.c >"$work/run.c"
fi
gcc -Ofast -fopenmp -march=native "$work/run.c" -lm -o "$work/runomp"
python3 "$root/bench/hf_to_llama2c.py" "$model" "$work/model.bin" "$work/tok.bin"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
: >"$work/swarm" ; : >"$work/roof" ; : >"$work/run1" ; : >"$work/run2"
for ((r = 1; r <= reps; r++)); do
  out="$("$bench" --model "$model" --prompt-tokens 16 --decode-tokens "$tokens")"
  tps=$(awk '/^decode/ {print $2}' <<<"$out")
  frac=$(awk '/^achieved/ {print $5}' <<<"$out")
  echo "$tps" >>"$work/swarm"
  echo "$frac" >>"$work/roof"
  line="round $r: swarm $tps tokens/s ($frac % of the roofline; $(awk '/^read bandwidth/ {print $3, $4}' <<<"$out"))"
  for t in 1 2; do
    rc=$(OMP_NUM_THREADS=$t "$work/runomp" "$work/model.bin" -z "$work/tok.bin" -t 0 \
      -n $((tokens + 16)) -s 1 2>&1 >/dev/null | awk '/achieved tok\/s/ {print $3}')
    echo "$rc" >>"$work/run$t"
    line="$line, run.c ${t}t $rc tokens/s"
  done
  echo "$line"
done
s=$(median <"$work/swarm"); f=$(median <"$work/roof")
r1=$(median <"$work/run1"); r2=$(median <"$work/run2")
best=$(awk -v a="$r1" -v b="$r2" 'BEGIN {print (a > b) ? a : b}')
echo "median of $reps: swarm $s tokens/s = $f % of the read-bandwidth roofline;" \
  "run.c 1 thread $r1, 2 threads $r2 tokens/s"
awk -v s="$s" -v b="$best" 'BEGIN {printf "swarm / run.c at its best thread count = %.3f\n", s / b}'
