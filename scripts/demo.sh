#!/usr/bin/env bash
# Sets up and builds tamoe, then compiles the example MoE layer
# (examples/moe_layer.mlir: top-2, 16 experts, 8 ranks) for a reference
# cluster, shows the plan and the predicted gain, runs the compiled layer on
# 8 CPU ranks (2 nodes x 4) under mpirun and checks every rank's result
# against a serial reference, with the dispatch pattern it measured. Then it
# trains a small MoE (examples/moe_train.mlir) with the topology-aware loss
# on the same 8 ranks for about a minute and a half, and shows the realised
# pattern before and after: the router learns to keep rows inside a node,
# toward the plan's target.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TAMOE_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh" >/dev/null
bin="$build/bin"
work="$build/demo"
rm -rf "$work" && mkdir -p "$work/out"

echo "== cluster: configs/clusters/pcie-ethernet.json with 2 servers of 4 GPUs"
"$bin/tamoe-topo" to-json "$root/configs/clusters/pcie-ethernet.json" \
  --top-fanout 2 >"$work/cluster.json"
echo "== plan for the example's sizes (16 tokens x 32 fp32 per rank, top-2)"
"$bin/tamoe-topo" plan "$work/cluster.json" --tokens 16 --hidden 32 \
  --dtype fp32 --topk 2 | sed -n '/^predicted/,/^(optimal/p'

echo "== the same cluster at training sizes (4096 tokens x 4096 bf16 per rank)"
"$bin/tamoe-topo" plan "$work/cluster.json" --tokens 4096 --hidden 4096 \
  --dtype bf16 --topk 2 | sed -n '/^predicted/,/^(optimal/p'

echo "== compile: tamoe-opt --tamoe-pipeline=topology=cluster.json --tamoe-to-llvm"
"$bin/tamoe-opt" "$root/examples/moe_layer.mlir" \
  --tamoe-pipeline="topology=$work/cluster.json" \
  -mlir-print-op-on-diagnostic=false -o "$work/layer.mlir" 2>&1 |
  grep -o 'remark: .*'
"$bin/tamoe-opt" "$work/layer.mlir" --tamoe-to-llvm -o "$work/layer.llvm.mlir"

echo "== run on 8 CPU ranks (2 nodes x 4): mpirun -np 8 mlir-runner"
mpirun=(mpirun -np 8 --oversubscribe)
[[ $(id -u) -ne 0 ]] || mpirun+=(--allow-run-as-root)
TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR="$work/out" timeout 300 \
  "${mpirun[@]}" /usr/lib/llvm-22/bin/mlir-runner "$work/layer.llvm.mlir" \
  -e main -entry-point-result=void \
  --shared-libs="$build/runtime/lib/libtamoe_rt.so"

echo "== check against the serial reference"
"$bin/tamoe-reference" --outputs="$work/out" --topology="$work/cluster.json" \
  --policy=tamoe

steps=1500
echo "== train: examples/moe_train.mlir (teacher-student, 16 experts, top-2) with"
echo "   the topology-aware loss, $steps steps of forward, backward and Adam"
sed -e "s/%steps = arith.constant [0-9]* : index/%steps = arith.constant $steps : index/" \
  "$root/examples/moe_train.mlir" > "$work/train.mlir"
"$bin/tamoe-opt" "$work/train.mlir" --tamoe-pipeline \
  -mlir-print-op-on-diagnostic=false -o "$work/train.tamoe.mlir" 2>&1 |
  grep -o 'remark: .*'
"$bin/tamoe-opt" "$work/train.tamoe.mlir" --tamoe-to-llvm -o "$work/train.llvm.mlir"
mkdir -p "$work/train"
TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR="$work/train" timeout 600 \
  "${mpirun[@]}" /usr/lib/llvm-22/bin/mlir-runner "$work/train.llvm.mlir" \
  -e main -entry-point-result=void \
  --shared-libs="$build/runtime/lib/libtamoe_rt.so"
shares=$(grep -o 'dispatch_plan<tamoe, shares = \[[^]]*\]' "$work/train.tamoe.mlir" |
         head -1 | sed 's/.*\[\(.*\)\]/\1/; s/ //g')
python3 "$root/bench/training_report.py" summary "$work/train" \
  --target-shares "$shares" --window 100
echo "(bench/training.sh compares this with the switch loss and with none:"
echo " docs/results/training.md)"
