#!/usr/bin/env bash
# Trains examples/moe_train.mlir (a teacher-student MoE, 16 experts over 8
# CPU ranks as 2 nodes x 4) three ways, with the same model, data and seeds:
#   (a) the switch load-balancing loss,
#   (b) tamoe's topology-aware loss (--tamoe-pipeline),
#   (c) no auxiliary loss,
# and writes docs/results/training.md and docs/results/training.svg: final
# task loss, realised per-level shares against the plan's target, bytes sent
# across nodes per step and the all-to-all time the cost model predicts for
# the realised pattern on a full-size dgx1-v100.
#
#   bash bench/training.sh [STEPS]     (default 4000; about 50 ms a step)
#
# Environment: TAMOE_AUX_WEIGHT (the auxiliary loss's weight in the training
# loss, default 0.02), TAMOE_BUILD_DIR, TAMOE_TRAINING_OUT (where the runs
# go, default build/training).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TAMOE_BUILD_DIR:-$root/build}"
steps="${1:-4000}"
weight="${TAMOE_AUX_WEIGHT:-0.02}"
work="${TAMOE_TRAINING_OUT:-$build/training}"
"$root/scripts/setup.sh" >/dev/null
bin="$build/bin"
export PATH="$bin:/usr/lib/llvm-22/bin:$PATH"
rm -rf "$work" && mkdir -p "$work"

# The program with this run's steps and auxiliary-loss weight.
variant() {
  sed -e "s/%steps = arith.constant [0-9]* : index/%steps = arith.constant $steps : index/" \
      -e "s/%d_aux = arith.constant dense<[^>]*>/%d_aux = arith.constant dense<$1>/" \
      "$root/examples/moe_train.mlir"
}
tamoe-topo to-json "$root/examples/moe_train.mlir" > "$work/cluster.json"
# (a) and (c) keep the switch loss: the same hierarchical exchanges and
# differentiation as the pipeline, without the plan and the loss rewrite.
variant "$weight" | tamoe-opt --tamoe-hierarchical-all-to-all --tamoe-differentiate 2>/dev/null |
  tamoe-opt --tamoe-to-llvm -o "$work/switch.llvm.mlir"
variant "$weight" | tamoe-opt --tamoe-pipeline 2>/dev/null > "$work/topology.mlir"
tamoe-opt "$work/topology.mlir" --tamoe-to-llvm -o "$work/topology.llvm.mlir"
variant 0.0 | tamoe-opt --tamoe-hierarchical-all-to-all --tamoe-differentiate 2>/dev/null |
  tamoe-opt --tamoe-to-llvm -o "$work/none.llvm.mlir"

mpirun=(mpirun -np 8 --oversubscribe)
[[ $(id -u) -ne 0 ]] || mpirun+=(--allow-run-as-root)
for run in switch topology none; do
  echo "== training ($run), $steps steps on 8 ranks"
  mkdir -p "$work/$run"
  TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR="$work/$run" timeout 3600 \
    "${mpirun[@]}" mlir-runner "$work/$run.llvm.mlir" -e main \
    -entry-point-result=void --shared-libs="$build/runtime/lib/libtamoe_rt.so"
done

# The plan's per-destination shares, as the pipeline attached them.
shares=$(grep -o 'dispatch_plan<tamoe, shares = \[[^]]*\]' "$work/topology.mlir" |
         head -1 | sed 's/.*\[\(.*\)\]/\1/; s/ //g')
header="# Training with the topology-aware loss

\`bash bench/training.sh $steps\` with TAMOE_AUX_WEIGHT=$weight: examples/moe_train.mlir on 8 CPU ranks (2 nodes x 4, cluster \`$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['name'])" "$work/cluster.json")\`), the same model, data and seeds for every run. Plot: [training.svg](training.svg)."
python3 "$root/bench/training_report.py" --out "$root/docs/results/training.md" \
  --svg "$root/docs/results/training.svg" --target-shares "$shares" --header "$header" \
  --predict "tamoe-topo evaluate $root/configs/clusters/dgx1-v100.json --tokens 4096 --hidden 4096 --dtype bf16 --topk 2 --level-fractions" \
  "(a) switch=$work/switch" "(b) topology=$work/topology" "(c) none=$work/none"
echo "report: docs/results/training.md, plot: docs/results/training.svg"
