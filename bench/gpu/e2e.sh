#!/usr/bin/env bash
#===- bench/gpu/e2e.sh - A compiled MoE layer on the GPU, stage by stage --===#
#
# Compiles the example layer (bench/gpu/moe_layer.mlir.in, the shapes below)
# with --tamoe-pipeline and --tamoe-to-llvm=device-resident, runs it with
# upstream mlir-runner on the cpu backend (one forward: the check) and on the
# cuda backend (TAMOE_RT_BACKEND=cuda, ITERATIONS forwards), checks both
# against the serial reference (tamoe-reference), and times one layer
# forward per stage from the
# runtime's profile (TAMOE_RT_PROFILE=1) against the same layer written in
# PyTorch (torch_layer.py) at the same shapes. Prints a markdown table (also
# $OUT/gpu-e2e.md when OUT is set).
#
#   bash bench/gpu/e2e.sh [--ranks N] [--backend cuda|cpu] [--dtype f32|bf16]
#
# --ranks N: N processes (one per GPU) under mpirun, one node; the PyTorch
# layer then runs under torchrun with NCCL all_to_all_single (when torchrun
# is there). --backend cpu: the cpu backend only (no GPU needed; what CI
# runs at small shapes to keep this script working). --dtype bf16: the rows
# (tokens, weights, activations) in bf16, logits and gate weights in f32, as
# mixed-precision training runs it; the PyTorch layer likewise.
#
# Needs MLIR 22 (tamoe-opt is built against it; mlir-runner) and, for
# --ranks, mpirun.
#
# Environment: TAMOE_BUILD (a configured build of this repository with the
# cuda backend; default ROOT/build, built here when missing), OUT, TOKENS
# (per rank, default 4096), HIDDEN (1024), FFN (4096), EXPERTS (8 per rank
# times ranks), TOP_K (2), ITERATIONS (20), MLIR_RUNNER.
#
# Exit status: 0 when every run passed its check.
#
#===----------------------------------------------------------------------===#

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/bench/gpu"
RANKS=1
BACKEND=cuda
DTYPE=f32
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) RANKS=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --dtype) DTYPE=$2; shift 2 ;;
    *) echo "e2e.sh: unknown argument '$1' (expected --ranks N, --backend cuda|cpu, --dtype f32|bf16)" >&2; exit 2 ;;
  esac
done
[[ "$DTYPE" == f32 || "$DTYPE" == bf16 ]] ||
  { echo "e2e.sh: --dtype must be f32 or bf16, got '$DTYPE'" >&2; exit 2; }
# The program's helpers for rows of that type (tamoe_rt/program.h).
ROWS_NAME=F32
ROWS_DECLS=""
if [[ "$DTYPE" == bf16 ]]; then
  ROWS_NAME=BF16
  ROWS_DECLS='  func.func private @tamoeRandomBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}\n  func.func private @tamoeOutputBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}'
fi
[[ "$BACKEND" == cuda || "$BACKEND" == cpu ]] ||
  { echo "e2e.sh: --backend must be cuda or cpu, got '$BACKEND'" >&2; exit 2; }
[[ "$RANKS" =~ ^[1-9][0-9]*$ ]] ||
  { echo "e2e.sh: --ranks must be a positive integer, got '$RANKS'" >&2; exit 2; }

TOKENS=${TOKENS:-4096}
HIDDEN=${HIDDEN:-1024}
FFN=${FFN:-4096}
EXPERTS=${EXPERTS:-$((8 * RANKS))}
TOP_K=${TOP_K:-2}
ITERATIONS=${ITERATIONS:-20}
BUILD=${TAMOE_BUILD:-$ROOT/build}
WORK=${OUT:-$BUILD/gpu-e2e}
RUNNER=${MLIR_RUNNER:-$(command -v mlir-runner || echo /usr/lib/llvm-22/bin/mlir-runner)}
mkdir -p "$WORK"

die() { echo "e2e.sh: $*" >&2; exit 1; }
(( EXPERTS % RANKS == 0 )) || die "EXPERTS ($EXPERTS) must be a multiple of the ranks ($RANKS)"
(( ITERATIONS >= 1 )) || die "ITERATIONS must be >= 1"

if [[ ! -x "$BUILD/bin/tamoe-opt" || ! -f "$BUILD/runtime/lib/libtamoe_rt.so" ]]; then
  echo "== building tamoe in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null
  targets=(tamoe-opt tamoe-reference tamoe_rt)
  [[ "$BACKEND" == cuda ]] && targets+=(tamoe_rt_cuda)
  cmake --build "$BUILD" --target "${targets[@]}"
fi
RT="$BUILD/runtime/lib/libtamoe_rt.so"
[[ -x "$RUNNER" ]] || die "no mlir-runner (set MLIR_RUNNER)"
if [[ "$BACKEND" == cuda && ! -f "$BUILD/runtime/lib/libtamoe_rt_cuda.so" ]]; then
  die "$BUILD has no cuda backend (libtamoe_rt_cuda.so): configure it with CUDA"
fi
launch=()
if (( RANKS > 1 )); then
  command -v mpirun >/dev/null || die "--ranks $RANKS needs mpirun"
  launch=(mpirun -np "$RANKS" --oversubscribe)
  [[ $(id -u) == 0 ]] && launch+=(--allow-run-as-root)
fi

# One node of RANKS GPUs on NVLink.
cat > "$WORK/node.json" <<JSON
{"name": "gpu-node", "description": "$RANKS GPUs of one node", "levels": [
  {"name": "node", "fanout": $RANKS, "up_GBps": 450, "down_GBps": 450, "latency_us": 3, "uplink": "per-rank"}
]}
JSON
PER_RANK=$((EXPERTS / RANKS))
echo "== compiling: $RANKS rank(s), $TOKENS tokens x $HIDDEN per rank ($DTYPE), $EXPERTS experts, top-$TOP_K, FFN $FFN"
# compile NAME FORWARDS: the layer with a main running it FORWARDS times, as
# $WORK/NAME.llvm.mlir.
compile() {
  sed -e "s/@RANKS@/$RANKS/g" -e "s/@EXPERTS_PER_RANK@/$PER_RANK/g" \
      -e "s/@EXPERTS@/$EXPERTS/g" -e "s/@TOP_K@/$TOP_K/g" \
      -e "s/@TOKENS@/$TOKENS/g" -e "s/@HIDDEN@/$HIDDEN/g" -e "s/@FFN@/$FFN/g" \
      -e "s/@ROWS@/$((TOKENS * TOP_K))/g" \
      -e "s/@ITERATIONS@/$2/g" -e "s/@WARM_ITERATIONS@/$(($2 - 1))/g" \
      -e "s/@DTYPE@/$DTYPE/g" -e "s/@ROWS_NAME@/$ROWS_NAME/g" \
      -e "s|@ROWS_DECLS@|$ROWS_DECLS|" \
      "$HERE/moe_layer.mlir.in" > "$WORK/$1.mlir"
  "$BUILD/bin/tamoe-opt" "$WORK/$1.mlir" --tamoe-pipeline="topology=$WORK/node.json" \
      -o "$WORK/$1.planned.mlir" 2> "$WORK/$1.remarks" ||
    { cat "$WORK/$1.remarks" >&2; die "tamoe-pipeline failed on $WORK/$1.mlir"; }
  "$BUILD/bin/tamoe-opt" "$WORK/$1.planned.mlir" --tamoe-to-llvm=device-resident \
      -o "$WORK/$1.llvm.mlir" || die "tamoe-to-llvm failed on $WORK/$1.planned.mlir"
}
# The cpu run is the check, not the benchmark (its GEMMs are plain loops):
# one forward when the GPU is what is measured.
compile layer "$ITERATIONS"
[[ "$BACKEND" == cuda ]] && compile layer-once 1

# run BACKEND PROGRAM FORWARDS: results in $WORK/<backend>, the profile in
# $WORK/<backend>.profile.md; then the check against the serial reference.
run() {
  local backend=$1
  rm -rf "$WORK/$backend" && mkdir -p "$WORK/$backend"
  echo "== running on the $backend backend ($3 layer forwards)"
  env TAMOE_RT_BACKEND="$backend" TAMOE_RT_PROFILE=1 TAMOE_RANKS_PER_NODE="$RANKS" \
      TAMOE_RT_OUTPUT_DIR="$WORK/$backend" \
      "${launch[@]}" "$RUNNER" "$WORK/$2.llvm.mlir" -e main -entry-point-result=void \
      --shared-libs="$RT" 2> "$WORK/$backend.log" ||
    { cat "$WORK/$backend.log" >&2; die "the $backend run failed"; }
  grep -A100 '^tamoe_rt profile' "$WORK/$backend.log" | grep -v '^tamoe_rt profile' > "$WORK/$backend.profile.md" || true
  "$BUILD/bin/tamoe-reference" --outputs="$WORK/$backend" --topology="$WORK/node.json" \
      --policy=tamoe --ranks="$RANKS" --ranks-per-node="$RANKS" --tokens="$TOKENS" \
      --hidden="$HIDDEN" --ffn="$FFN" --experts="$EXPERTS" --top-k="$TOP_K" \
      --dtype="$DTYPE" > "$WORK/$backend.check" ||
    { cat "$WORK/$backend.check" >&2; die "the $backend results differ from the reference"; }
  grep '^check:' "$WORK/$backend.check"
}
if [[ "$BACKEND" == cuda ]]; then
  run cpu layer-once 1
  run cuda layer "$ITERATIONS"
else
  run cpu layer "$ITERATIONS"
fi

# The same layer in PyTorch (one process per GPU), when torch is there.
TORCH_CSV=""
if [[ "$BACKEND" == cuda ]] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "== the same layer in PyTorch"
  args=(--tokens "$TOKENS" --hidden "$HIDDEN" --ffn "$FFN" --experts "$EXPERTS"
        --top-k "$TOP_K" --iterations "$ITERATIONS" --dtype "$DTYPE"
        --csv "$WORK/torch.csv")
  if (( RANKS == 1 )); then
    python3 "$HERE/torch_layer.py" "${args[@]}" && TORCH_CSV="$WORK/torch.csv"
  elif command -v torchrun >/dev/null; then
    torchrun --standalone --nproc-per-node "$RANKS" "$HERE/torch_layer.py" "${args[@]}" &&
      TORCH_CSV="$WORK/torch.csv"
  else
    echo "   (no torchrun: no PyTorch column for $RANKS ranks)"
  fi
  [[ -n "$TORCH_CSV" ]] || echo "   (no PyTorch results; see above)"
else
  echo "== no PyTorch with CUDA here: the table has no PyTorch column"
fi

python3 "$HERE/e2e_report.py" --profile "$WORK/$BACKEND.profile.md" \
    --iterations "$ITERATIONS" ${TORCH_CSV:+--torch "$TORCH_CSV"} \
    --title "One MoE layer forward on $RANKS rank(s), $BACKEND backend: $TOKENS tokens x $HIDDEN ($DTYPE) per rank, $EXPERTS experts, top-$TOP_K, FFN $FFN" \
    | tee "$WORK/gpu-e2e.md"
