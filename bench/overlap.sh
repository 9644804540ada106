#!/usr/bin/env bash
# Regenerates docs/results/overlap.md: one MoE layer on 8 CPU ranks (2 nodes
# x 4) compiled with --tamoe-pipeline chunks=C for C = 1, 2, 4, 8, the step
# time each takes against the cost model's prediction for the calibrated
# topology (docs/results/cpu-2x4-calibrated.json), and the chunk count the
# model picks itself (chunks=0); and the same chunk counts with
# hierarchical exchanges (mode=hierarchical) and de-duplicated ones
# (mode=hierarchical dedup=true), and
# the runtime's timeline of 1 and 4 chunks (how much of the rows' time in
# flight the experts hide).
#
#   bash bench/overlap.sh     (after scripts/setup.sh; ~5 min)
#
# The layer is bench/gpu/moe_layer.mlir.in (relu experts, top-2) at TOKENS
# tokens of HIDDEN per rank, FFN, 2 experts per rank. The experts' GFLOP/s
# come from the C = 1 run's runtime profile (tamoe_rt_grouped_matmul), so
# the model is calibrated on both sides. A step's time is the difference of
# two runs of LOW and HIGH steps (the JIT's compile time cancels), over
# HIGH - LOW, the median of REPEATS such pairs.
#
# Environment: TAMOE_BUILD_DIR, TOKENS (512), HIDDEN (256), FFN (256), LOW
# (2), HIGH (22), REPEATS (3), OUT (default docs/results/overlap.md; "-" for
# stdout).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TAMOE_BUILD_DIR:-$root/build}"
bin="$build/bin"
export PATH="$bin:/usr/lib/llvm-22/bin:$PATH"
TOKENS=${TOKENS:-512}
HIDDEN=${HIDDEN:-256}
FFN=${FFN:-256}
LOW=${LOW:-2}
HIGH=${HIGH:-22}
REPEATS=${REPEATS:-3}
OUT=${OUT:-$root/docs/results/overlap.md}
cd "$root"
source bench/gpu/layer.sh
topology=docs/results/cpu-2x4-calibrated.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# 8 ranks on however many cores: oversubscribed for any user.
mpi=(mpirun -np 8 --oversubscribe)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
per_rank=2
rows=$((TOKENS * 2))
# Arithmetic on decimals, to `$2` places (6 by default).
calc() { awk "BEGIN { printf \"%.${2:-6}f\", $1 }"; }

# The layer, run `$1` times, on the 2 x 4 grid of the topology.
layer() {
  GRID=2x4 RANKS=8 EXPERTS=$((8 * per_rank)) EXPERTS_PER_RANK=$per_rank \
    TOP_K=2 DTYPE=f32 ACTIVATION=relu ITERATIONS=$1 layer_mlir
}
# Compiles the layer with pipeline options `$2` for `$3` steps into $work/$1.
compile() {
  layer "$3" | tamoe-opt --tamoe-pipeline="topology=$topology $2" \
    2>"$work/$1.remarks" | tamoe-opt --tamoe-to-llvm -o "$work/$1.llvm.mlir"
}
# Runs $work/$1 on 8 ranks (with the profile when $2 is set, recording the
# timeline to $work/$1.timeline.rank<R>.csv when $3 is); prints the wall
# seconds.
run() {
  mkdir -p "$work/$1.out"
  local start end
  start=$(date +%s.%N)
  env TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR="$work/$1.out" ${2:+TAMOE_RT_PROFILE=1} \
    ${3:+TAMOE_RT_TIMELINE="$work/$1.timeline"} \
    timeout 600 "${mpi[@]}" mlir-runner "$work/$1.llvm.mlir" -e main \
    -entry-point-result=i32 --shared-libs="$build/runtime/lib/libtamoe_rt.so" \
    >"$work/$1.log" 2>&1 ||
    { cat "$work/$1.log" >&2; echo "overlap.sh: the $1 run failed" >&2; return 1; }
  end=$(date +%s.%N)
  calc "$end - $start"
}
# Seconds per step of the layer compiled with options `$2` (named $1): the
# median over REPEATS pairs of runs.
step() {
  compile "$1-low" "$2" "$LOW"
  compile "$1-high" "$2" "$HIGH"
  local low high estimates=()
  for ((i = 0; i < REPEATS; ++i)); do
    low=$(run "$1-low")
    high=$(run "$1-high")
    estimates+=("$(calc "($high - $low) / ($HIGH - $LOW)")")
  done
  printf '%s\n' "${estimates[@]}" | sort -g | sed -n "$(((REPEATS + 1) / 2))p"
}

# The experts' throughput, from the profile of one whole-layer run: the
# median grouped_matmul call (rows x HIDDEN x FFN, or x FFN x HIDDEN).
compile profile "chunks=1" 3
run profile 1 >/dev/null
median_us=$(grep -m1 '| tamoe_rt_grouped_matmul |' "$work/profile.log" | awk -F'|' '{print $4}')
gflops=$(calc "2 * $rows * $HIDDEN * $FFN / ($median_us * 1000)" 2)

declare -A measured predicted hierarchical deduplicated
for chunks in 1 2 4 8; do
  seconds=$(step "c$chunks" "chunks=$chunks device-gflops=$gflops")
  measured[$chunks]=$(calc "$seconds * 1000" 2)
  seconds=$(step "h$chunks" "mode=hierarchical chunks=$chunks device-gflops=$gflops")
  hierarchical[$chunks]=$(calc "$seconds * 1000" 2)
  seconds=$(step "d$chunks" "mode=hierarchical dedup=true chunks=$chunks device-gflops=$gflops")
  deduplicated[$chunks]=$(calc "$seconds * 1000" 2)
  # tamoe-overlap's prediction for this chunk count and for one chunk (us);
  # with chunks=1 the pass does not run.
  if ((chunks > 1)); then
    remark=$(grep -m1 'remark: cut into' "$work/c$chunks-low.remarks")
    us=$(sed -nE 's/.*chunks along the tokens: ([0-9.]+) us predicted.*/\1/p' <<<"$remark")
    one=$(sed -nE 's/.* vs ([0-9.]+) us in one chunk.*/\1/p' <<<"$remark")
    [[ -n "$us" && -n "$one" ]] || { echo "overlap.sh: no prediction in: $remark" >&2; exit 1; }
    predicted[$chunks]=$(calc "$us / 1000" 2)
    predicted[1]=$(calc "$one / 1000" 2)
  fi
done
compile model "chunks=0 device-gflops=$gflops" "$LOW"
choice=$(grep -m1 -E 'remark: (cut into|kept in one chunk)' "$work/model.remarks" | sed 's/.*remark: //')
# What each chunk costs on this machine: the least-squares slope of the
# measured step over the extra chunks (through the one-chunk step), in us,
# at least 0; then the model's choice with it as chunk-overhead-us.
overhead_us=$(awk -v m1="${measured[1]}" -v m2="${measured[2]}" \
  -v m4="${measured[4]}" -v m8="${measured[8]}" 'BEGIN {
    s = (1 * (m2 - m1) + 3 * (m4 - m1) + 7 * (m8 - m1)) / (1 + 9 + 49) * 1000
    printf "%.1f", (s > 0 ? s : 0) }')
compile calibrated "chunks=0 device-gflops=$gflops chunk-overhead-us=$overhead_us" "$LOW"
calibrated=$(grep -m1 -E 'remark: (cut into|kept in one chunk)' "$work/calibrated.remarks" | sed 's/.*remark: //')

# Where each step's time goes with 1 and 4 chunks: the runtime's timeline
# of a run of LOW steps (bench/timeline.py), rank 0 charted for 4.
for chunks in 1 4; do
  compile "t$chunks" "chunks=$chunks device-gflops=$gflops" "$LOW"
  run "t$chunks" "" 1 >/dev/null
done
timeline1=$(python3 bench/timeline.py "$work"/t1.timeline.rank*.csv | sed -n '1,/^$/p')
timeline4=$(python3 bench/timeline.py "$work"/t4.timeline.rank*.csv)

ratio() { calc "$1 / $2" 2; }
report() {
  echo "# Overlapping the exchanges with the experts on 8 CPU ranks"
  echo
  echo "Generated by \`REPEATS=$REPEATS bash bench/overlap.sh\` on $(nproc) cores"
  echo "($(lscpu | sed -n 's/^Model name: *//p' | head -1)), 8 MPI ranks as 2 nodes"
  echo "x 4. The layer: bench/gpu/moe_layer.mlir.in, $TOKENS tokens of $HIDDEN f32"
  echo "per rank, top-2 over 16 experts (2 per rank), relu FFN $HIDDEN -> $FFN -> $HIDDEN,"
  echo "dropless ($rows rows per rank). Compiled with"
  echo "\`--tamoe-pipeline=\"topology=$topology chunks=C device-gflops=$gflops\"\`:"
  echo "$gflops GFLOP/s is the experts' rate in the profile of a whole-layer run"
  echo "(median tamoe_rt_grouped_matmul call). Measured: the wall time of $HIGH"
  echo "steps minus that of $LOW, over $((HIGH - LOW)) (median of $REPEATS), the whole layer (router,"
  echo "dispatch, combine and loss included). Predicted: the cost model's"
  echo "exchanges and experts (docs/cost-model.md, \"Overlap\"), what chunking"
  echo "changes. Hierarchical: the same layer with \`mode=hierarchical\`"
  echo "added, each part's exchanges in two stages (node, then peers) and one"
  echo "counts round for all of them. De-duplicated: with"
  echo "\`mode=hierarchical dedup=true\` added, each part's exchange out"
  echo "de-duplicated alone (docs/passes.md, \"De-duplicated parts\")."
  echo
  echo "| chunks | measured step (ms) | vs 1 chunk | predicted exchanges + experts (ms) | vs 1 chunk | hierarchical step (ms) | vs 1 chunk | de-duplicated step (ms) | vs 1 chunk |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for chunks in 1 2 4 8; do
    echo "| $chunks | ${measured[$chunks]} | $(ratio "${measured[$chunks]}" "${measured[1]}")x | ${predicted[$chunks]} | $(ratio "${predicted[$chunks]}" "${predicted[1]}")x | ${hierarchical[$chunks]} | $(ratio "${hierarchical[$chunks]}" "${hierarchical[1]}")x | ${deduplicated[$chunks]} | $(ratio "${deduplicated[$chunks]}" "${deduplicated[1]}")x |"
  done
  echo
  echo "The model's own choice (\`chunks=0\`): $choice"
  echo
  echo "With the per-chunk overhead measured here ($overhead_us us: the slope of the"
  echo "measured step over the extra chunks) as \`chunk-overhead-us\`: $calibrated"
  echo
  echo "## Where the time goes"
  echo
  echo "The runtime's timeline (\`TAMOE_RT_TIMELINE\`, docs/runtime.md) of a run"
  echo "of $LOW steps, start-up included, summarised by \`bench/timeline.py\`:"
  echo "compute is every operation but the exchange calls, rows in flight run"
  echo "from when a rank posted an exchange's rows until it saw them in (it"
  echo "sees them at its next call into the runtime). One chunk:"
  echo
  echo "$timeline1"
  echo
  echo "Four chunks:"
  echo
  echo "$timeline4"
}
if [[ "$OUT" == - ]]; then
  report
else
  report >"$OUT"
  cat "$OUT"
fi
