#!/usr/bin/env bash
#===- bench/gpu/e2e.sh - A compiled MoE layer on the GPU, stage by stage --===#
#
# Compiles the example layer (bench/gpu/moe_layer.mlir.in, the shapes below)
# with --tamoe-pipeline and --tamoe-to-llvm=device-resident, runs it on the
# cpu backend (one forward: the check) and on the cuda backend
# (TAMOE_RT_BACKEND=cuda, ITERATIONS forwards), checks both against the
# serial reference (tamoe-reference), and times one layer forward per stage
# from the runtime's profile (TAMOE_RT_PROFILE=1) against the same layer
# written in PyTorch (torch_layer.py) at the same shapes. Prints a markdown
# table (also $OUT/gpu-e2e.md when OUT is set).
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
# That needs MLIR 22 (tamoe-opt, mlir-runner) where the GPU is. A GPU machine
# without LLVM runs the layer in three steps instead:
#
#   here:  bash bench/gpu/e2e.sh [--ranks N] [--dtype D] --compile-only DIR
#            DIR/layer, an executable (mlir-translate, llc, linked against
#            libtamoe_rt.so), DIR/e2e.env (its shapes) and DIR/node.json
#   there: bash bench/gpu/e2e.sh [--backend B] --prebuilt DIR
#            runs DIR/layer against the runtime built there (TAMOE_RT_LIBDIR,
#            default: the one bench/gpu/run.sh builds), the PyTorch layer and
#            the table; packs the layer's results into
#            $OUT/results.tgz.00, .01, ... (15 MiB pieces)
#   here:  bash bench/gpu/e2e.sh --check DIR RESULTS
#            the results (a folder of those pieces) against the reference
#
# Environment: TAMOE_BUILD (a configured build of this repository; default
# ROOT/build, built here when missing), OUT, TOKENS (per rank, default
# 4096), HIDDEN (1024), FFN (4096), EXPERTS (8 per rank times ranks), TOP_K
# (2), ITERATIONS (20), CHUNKS (1: tamoe-overlap's chunks, the pipeline's
# chunks=), ACTIVATION (relu, or swiglu: silu(x W1) * (x W3) W2),
# MLIR_RUNNER, TAMOE_RT_LIBDIR (--prebuilt).
#
# Exit status: 0 when every run passed its check.
#
#===----------------------------------------------------------------------===#

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/bench/gpu"
source "$HERE/layer.sh"
RANKS=1
BACKEND=cuda
DTYPE=f32
MODE=run
DIR=""
RESULTS=""
usage="expected --ranks N, --backend cuda|cpu, --dtype f32|bf16, --compile-only DIR, --prebuilt DIR or --check DIR RESULTS"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) RANKS=${2-}; shift 2 || shift ;;
    --backend) BACKEND=${2-}; shift 2 || shift ;;
    --dtype) DTYPE=${2-}; shift 2 || shift ;;
    --compile-only|--prebuilt)
      MODE=${1#--}; DIR=${2-}; shift 2 || shift ;;
    --check)
      MODE=check; DIR=${2-}; RESULTS=${3-}; shift 3 || shift $# ;;
    *) echo "e2e.sh: unknown argument '$1' ($usage)" >&2; exit 2 ;;
  esac
done
die() { echo "e2e.sh: $*" >&2; exit 1; }
[[ "$MODE" == run || -n "$DIR" ]] ||
  { echo "e2e.sh: --$MODE needs a directory ($usage)" >&2; exit 2; }
[[ "$MODE" != check || -n "$RESULTS" ]] ||
  { echo "e2e.sh: --check needs the layer's directory and the results ($usage)" >&2; exit 2; }

# --prebuilt and --check take the shapes the layer was compiled with.
if [[ "$MODE" == prebuilt || "$MODE" == check ]]; then
  # A copy of the working tree may not keep the executable bit.
  if [[ -f "$DIR/layer" && ! -x "$DIR/layer" ]]; then
    chmod u+x "$DIR/layer" 2>/dev/null || true
  fi
  [[ -x "$DIR/layer" && -f "$DIR/e2e.env" && -f "$DIR/node.json" ]] ||
    die "$DIR is not what --compile-only writes (layer, e2e.env, node.json)"
  while IFS='=' read -r key value; do
    [[ "$value" =~ ^[A-Za-z0-9]+$ ]] || die "$DIR/e2e.env: bad line '$key=$value'"
    case "$key" in
      RANKS|TOKENS|HIDDEN|FFN|EXPERTS|TOP_K|ITERATIONS|DTYPE|CHUNKS|ACTIVATION) printf -v "$key" '%s' "$value" ;;
      *) die "$DIR/e2e.env: unknown key '$key'" ;;
    esac
  done < "$DIR/e2e.env"
fi
[[ "$DTYPE" == f32 || "$DTYPE" == bf16 ]] ||
  { echo "e2e.sh: --dtype must be f32 or bf16, got '$DTYPE'" >&2; exit 2; }
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
CHUNKS=${CHUNKS:-1}
ACTIVATION=${ACTIVATION:-relu}
BUILD=${TAMOE_BUILD:-$ROOT/build}
case "$MODE" in
  run) WORK=${OUT:-$BUILD/gpu-e2e} ;;
  compile-only) WORK=$DIR ;;
  prebuilt) WORK=${OUT:-$DIR/run} ;;
  check)
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/tamoe-e2e-check.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT ;;
esac
RUNNER=${MLIR_RUNNER:-$(command -v mlir-runner || echo /usr/lib/llvm-22/bin/mlir-runner)}
mkdir -p "$WORK"
(( EXPERTS % RANKS == 0 )) || die "EXPERTS ($EXPERTS) must be a multiple of the ranks ($RANKS)"
(( ITERATIONS >= 1 )) || die "ITERATIONS must be >= 1"
[[ "$CHUNKS" =~ ^[1-9][0-9]*$ ]] || die "CHUNKS must be a positive integer, got '$CHUNKS'"
[[ "$ACTIVATION" == relu || "$ACTIVATION" == swiglu ]] ||
  die "ACTIVATION must be relu or swiglu, got '$ACTIVATION'"
LAYER="$TOKENS tokens x $HIDDEN ($DTYPE) per rank, $EXPERTS experts, top-$TOP_K, FFN $FFN"
[[ "$ACTIVATION" == swiglu ]] && LAYER+=", SwiGLU"
(( CHUNKS > 1 )) && LAYER+=", $CHUNKS chunks"
TITLE="One MoE layer forward on $RANKS rank(s), $BACKEND backend: $LAYER"

# Where tamoe is built: every mode but --prebuilt, which runs without LLVM.
if [[ "$MODE" != prebuilt ]] &&
   [[ ! -x "$BUILD/bin/tamoe-opt" || ! -x "$BUILD/bin/tamoe-reference" ||
      ! -f "$BUILD/runtime/lib/libtamoe_rt.so" ]]; then
  echo "== building tamoe in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null
  targets=(tamoe-opt tamoe-reference tamoe_rt)
  [[ "$BACKEND" == cuda && "$MODE" == run ]] && targets+=(tamoe_rt_cuda)
  cmake --build "$BUILD" --target "${targets[@]}"
fi
# The runtime the layer runs against.
if [[ "$MODE" == prebuilt ]]; then
  if [[ -z "${TAMOE_RT_LIBDIR:-}" ]]; then
    found=$(find "${TAMOE_GPU_BUILD:-/tmp/tamoe-gpu-build}/runtime" -name libtamoe_rt.so 2>/dev/null | head -1 || true)
    [[ -n "$found" ]] ||
      die "no runtime to run against: build it with 'TAMOE_GPU_DRY_RUN=1 bash bench/gpu/run.sh' (no LLVM needed) or set TAMOE_RT_LIBDIR"
    TAMOE_RT_LIBDIR=$(dirname "$found")
  fi
  RTDIR=$TAMOE_RT_LIBDIR
else
  RTDIR=$BUILD/runtime/lib
fi
[[ -f "$RTDIR/libtamoe_rt.so" ]] || die "$RTDIR has no libtamoe_rt.so"
if [[ "$BACKEND" == cuda && "$MODE" != compile-only && "$MODE" != check &&
      ! -f "$RTDIR/libtamoe_rt_cuda.so" ]]; then
  die "$RTDIR has no cuda backend (libtamoe_rt_cuda.so): configure it with CUDA"
fi
launch=()
if (( RANKS > 1 )) && [[ "$MODE" == run || "$MODE" == prebuilt ]]; then
  command -v mpirun >/dev/null || die "--ranks $RANKS needs mpirun"
  launch=(mpirun -np "$RANKS" --oversubscribe)
  [[ $(id -u) == 0 ]] && launch+=(--allow-run-as-root)
fi

# check BACKEND RESULTS: RESULTS (the files tamoeOutput* wrote) against the
# serial reference, into $WORK/BACKEND.check.
check() {
  "$BUILD/bin/tamoe-reference" --outputs="$2" --topology="$NODE" \
      --policy=tamoe --ranks="$RANKS" --ranks-per-node="$RANKS" --tokens="$TOKENS" \
      --hidden="$HIDDEN" --ffn="$FFN" --experts="$EXPERTS" --top-k="$TOP_K" \
      --dtype="$DTYPE" --activation="$ACTIVATION" > "$WORK/$1.check" ||
    { cat "$WORK/$1.check" >&2; die "the $1 results differ from the reference"; }
  grep '^check:' "$WORK/$1.check"
}

if [[ "$MODE" == check ]]; then
  NODE=$DIR/node.json
  [[ -d "$RESULTS" ]] || die "no results folder '$RESULTS'"
  pieces=("$RESULTS"/results.tgz.*)
  [[ -e "${pieces[0]}" ]] || die "$RESULTS has no results.tgz.* (what --prebuilt packs)"
  cat "${pieces[@]}" | tar -xzf - -C "$WORK" ||
    die "the results in $RESULTS do not unpack (a piece missing?)"
  echo "== checking the results of $DIR/layer: $RANKS rank(s), $LAYER"
  check results "$WORK/results"
  exit 0
fi

NODE=$WORK/node.json
if [[ "$MODE" == prebuilt ]]; then
  NODE=$DIR/node.json
else
  # One node of RANKS GPUs on NVLink.
  cat > "$NODE" <<JSON
{"name": "gpu-node", "description": "$RANKS GPUs of one node", "levels": [
  {"name": "node", "fanout": $RANKS, "up_GBps": 450, "down_GBps": 450, "latency_us": 3, "uplink": "per-rank"}
]}
JSON
  PER_RANK=$((EXPERTS / RANKS))
  echo "== compiling: $RANKS rank(s), $TOKENS tokens x $HIDDEN per rank ($DTYPE), $EXPERTS experts, top-$TOP_K, FFN $FFN$( ((CHUNKS > 1)) && echo ", $CHUNKS chunks")$( [[ "$ACTIVATION" == swiglu ]] && echo ", SwiGLU")"
fi
# compile NAME FORWARDS: the layer with a main running it FORWARDS times, as
# $WORK/NAME.llvm.mlir.
compile() {
  GRID=1x$RANKS EXPERTS_PER_RANK=$PER_RANK ITERATIONS=$2 layer_mlir > "$WORK/$1.mlir"
  "$BUILD/bin/tamoe-opt" "$WORK/$1.mlir" --tamoe-pipeline="topology=$NODE chunks=$CHUNKS" \
      -o "$WORK/$1.planned.mlir" 2> "$WORK/$1.remarks" ||
    { cat "$WORK/$1.remarks" >&2; die "tamoe-pipeline failed on $WORK/$1.mlir"; }
  "$BUILD/bin/tamoe-opt" "$WORK/$1.planned.mlir" --tamoe-to-llvm=device-resident \
      -o "$WORK/$1.llvm.mlir" || die "tamoe-to-llvm failed on $WORK/$1.planned.mlir"
}

if [[ "$MODE" == compile-only ]]; then
  LLVM_BIN=/usr/lib/llvm-22/bin
  compile layer "$ITERATIONS"
  "$LLVM_BIN/mlir-translate" --mlir-to-llvmir "$WORK/layer.llvm.mlir" -o "$WORK/layer.ll" ||
    die "mlir-translate failed on $WORK/layer.llvm.mlir"
  "$LLVM_BIN/llc" -O2 -filetype=obj -relocation-model=pic "$WORK/layer.ll" -o "$WORK/layer.o" ||
    die "llc failed on $WORK/layer.ll"
  # Every symbol it needs is libtamoe_rt's (the C ABI, tamoe_rt/program.h);
  # the loader finds the runtime where it runs (TAMOE_RT_LIBDIR).
  ${CC:-cc} "$WORK/layer.o" -o "$WORK/layer" -L"$RTDIR" -ltamoe_rt ||
    die "linking $WORK/layer.o against $RTDIR/libtamoe_rt.so failed"
  for key in RANKS TOKENS HIDDEN FFN EXPERTS TOP_K ITERATIONS DTYPE CHUNKS ACTIVATION; do
    echo "$key=${!key}"
  done > "$WORK/e2e.env"
  echo "== $WORK/layer: $ITERATIONS layer forwards; run it where the GPU is with"
  echo "   bash bench/gpu/e2e.sh --prebuilt $WORK"
  exit 0
fi

# run BACKEND FORWARDS COMMAND...: results in $WORK/<backend>, the profile
# in $WORK/<backend>.profile.md, the timeline (TAMOE_RT_TIMELINE: on cuda,
# CUDA events on the compute and communication streams) in
# $WORK/<backend>.timeline.rank<R>.csv.
run() {
  local backend=$1 forwards=$2
  shift 2
  rm -rf "$WORK/$backend" && mkdir -p "$WORK/$backend"
  echo "== running on the $backend backend ($forwards layer forwards)"
  rm -f "$WORK/$backend.timeline".rank*.csv
  env TAMOE_RT_BACKEND="$backend" TAMOE_RT_PROFILE=1 TAMOE_RANKS_PER_NODE="$RANKS" \
      TAMOE_RT_TIMELINE="$WORK/$backend.timeline" \
      TAMOE_RT_OUTPUT_DIR="$WORK/$backend" "${launch[@]}" "$@" \
      > "$WORK/$backend.log" 2>&1 ||
    { cat "$WORK/$backend.log" >&2; die "the $backend run failed"; }
  # Rank 0's table; the launcher may put another rank's unfinished line
  # in front of its heading, so the heading is found anywhere in a line,
  # and the table ends at its first line that is not a row (other ranks'
  # tables follow).
  awk '/tamoe_rt profile, rank 0 of/ { on = 1; next }
       on && /^\|/ { print; next }
       on { exit }' "$WORK/$backend.log" > "$WORK/$backend.profile.md" || true
}
# The layer's main under mlir-runner: its arguments but the program.
JIT=(-e main -entry-point-result=i32 --shared-libs="$RTDIR/libtamoe_rt.so")

if [[ "$MODE" == prebuilt ]]; then
  echo "== $DIR/layer: $TITLE"
  export LD_LIBRARY_PATH="$RTDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  run "$BACKEND" "$ITERATIONS" "$DIR/layer"
  # The check needs tamoe-reference (LLVM): pack the results for it, in
  # pieces small enough to carry back (and no other copy of them, so that
  # $OUT holds a handful of files).
  rm -rf "$WORK/results" "$WORK"/results.tgz.*
  mv "$WORK/$BACKEND" "$WORK/results"
  tar -czf - -C "$WORK" results | split -b 15M -d - "$WORK/results.tgz."
  rm -rf "$WORK/results"
  echo "== results packed in $WORK/results.tgz.*; check them where tamoe is built with"
  echo "   bash bench/gpu/e2e.sh --check $DIR <folder of results.tgz.*>"
else
  [[ -x "$RUNNER" ]] || die "no mlir-runner (set MLIR_RUNNER)"
  # The cpu run is the check, not the benchmark (its GEMMs are plain loops):
  # one forward when the GPU is what is measured.
  compile layer "$ITERATIONS"
  if [[ "$BACKEND" == cuda ]]; then
    compile layer-once 1
    run cpu 1 "$RUNNER" "$WORK/layer-once.llvm.mlir" "${JIT[@]}"
    check cpu "$WORK/cpu"
  fi
  run "$BACKEND" "$ITERATIONS" "$RUNNER" "$WORK/layer.llvm.mlir" "${JIT[@]}"
  check "$BACKEND" "$WORK/$BACKEND"
fi

# The same layer in PyTorch (one process per GPU), when torch is there.
TORCH_CSV=""
TORCH_GROUPED_CSV=""
if [[ "$BACKEND" == cuda ]] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "== the same layer in PyTorch"
  args=(--tokens "$TOKENS" --hidden "$HIDDEN" --ffn "$FFN" --experts "$EXPERTS"
        --top-k "$TOP_K" --iterations "$ITERATIONS" --dtype "$DTYPE"
        --activation "$ACTIVATION" --csv "$WORK/torch.csv")
  # torch_layer.py ARGS...: one process per GPU.
  torch_layer() {
    if (( RANKS == 1 )); then
      python3 "$HERE/torch_layer.py" "$@"
    elif command -v torchrun >/dev/null; then
      torchrun --standalone --nproc-per-node "$RANKS" "$HERE/torch_layer.py" "$@"
    else
      echo "   (no torchrun: no PyTorch column for $RANKS ranks)"
      return 1
    fi
  }
  torch_layer "${args[@]}" && TORCH_CSV="$WORK/torch.csv"
  [[ -n "$TORCH_CSV" ]] || echo "   (no PyTorch results; see above)"
  # In bf16, also with the expert stage in torch._grouped_mm.
  if [[ "$DTYPE" == bf16 && -n "$TORCH_CSV" ]]; then
    echo "== the same layer in PyTorch, experts in torch._grouped_mm"
    args[${#args[@]}-1]="$WORK/torch-grouped.csv"
    torch_layer "${args[@]}" --experts-impl grouped_mm &&
      TORCH_GROUPED_CSV="$WORK/torch-grouped.csv" ||
      echo "   (no _grouped_mm column; see above)"
  fi
else
  echo "== no PyTorch with CUDA here: the table has no PyTorch column"
fi

python3 "$HERE/e2e_report.py" --profile "$WORK/$BACKEND.profile.md" \
    --iterations "$ITERATIONS" ${TORCH_CSV:+--torch "$TORCH_CSV"} \
    ${TORCH_GROUPED_CSV:+--torch-grouped-mm "$TORCH_GROUPED_CSV"} \
    --title "$TITLE" | tee "$WORK/gpu-e2e.md"
# When each operation ran and when the rows were in flight (with CHUNKS,
# how much of the exchanges the experts hide).
{
  echo
  echo "Timeline of the $BACKEND run ($ITERATIONS forwards, start-up included; bench/timeline.py):"
  echo
  python3 "$HERE/../timeline.py" "$WORK/$BACKEND.timeline".rank*.csv
} | tee -a "$WORK/gpu-e2e.md"
