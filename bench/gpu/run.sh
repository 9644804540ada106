#!/usr/bin/env bash
#===- bench/gpu/run.sh - Check and time the cuda backend on this GPU -----===#
#
# On a machine with an NVIDIA GPU: builds the runtime with its cuda backend
# (standalone `cmake -S runtime`, no LLVM), checks every operation of the
# cuda backend against the serial reference and the cpu backend, times gate,
# permute and un-permute + combine against a device-to-device copy and
# against the same steps written in PyTorch as Megatron-Core and DeepSpeed
# write them, and prints one markdown report (also $OUT/gpu-runtime.md when
# OUT is set). With several GPUs and mpirun it also checks and times the
# exchanges over all of them.
#
#   bash bench/gpu/run.sh [--quick]
#
# Environment: OUT (where the report, CSVs and logs go), TAMOE_GPU_BUILD
# (build directory, default /tmp/tamoe-gpu-build), TAMOE_GPU_MODE=core|direct
# (default: core, falling back to direct when the core cannot be built, e.g.
# without MPI: then only libtamoe_rt_cuda.so is built and driven directly on
# one GPU), CUDA_ARCH (e.g. 90; default: the GPU's), NCCL_ROOT,
# TAMOE_GPU_DRY_RUN=1 (build everything, run nothing: for machines without
# a GPU).
#
# Exit status: 0 when everything ran and every check passed.
#
#===----------------------------------------------------------------------===#

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/bench/gpu"
BUILD=${TAMOE_GPU_BUILD:-/tmp/tamoe-gpu-build}
WORK=${OUT:-$BUILD/out}
QUICK=""
# Anything but --quick is refused: a misspelt flag would otherwise run the
# full timings, several times longer, on a GPU lent for minutes.
case "$*" in
  "") ;;
  --quick) QUICK="--quick" ;;
  *) echo "bench/gpu/run.sh: unknown arguments '$*' (usage: run.sh [--quick])" >&2
     exit 2 ;;
esac
mkdir -p "$BUILD" "$WORK"

die() {
  echo "" >&2
  echo "bench/gpu/run.sh: ERROR: $*" >&2
  exit 1
}
note() { echo "== $*"; }

# OpenMPI refuses root without these; the container has no ptrace for CMA.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
PYTHON=$(command -v python3 || command -v python || true)

#--- A GPU, or a loud stop ---------------------------------------------------
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then
  NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
if [[ "$NGPU" -eq 0 && -n "$PYTHON" ]]; then
  NGPU=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' \
           2>/dev/null || echo 0)
fi
DRY_RUN=${TAMOE_GPU_DRY_RUN:-0}
if [[ "$NGPU" -eq 0 && "$DRY_RUN" == 1 ]]; then
  note "dry run: no GPU needed, building only"
elif [[ "$NGPU" -eq 0 ]]; then
  die "no GPU: neither nvidia-smi nor PyTorch sees a CUDA device on this
machine. This script checks and times the cuda backend and needs one; the
build-only checks run anywhere (runtime/lib/cuda/test, ctest)."
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null |
             head -1 || true)
[[ -z "$GPU_NAME" && -n "$PYTHON" ]] && GPU_NAME=$("$PYTHON" -c \
  'import torch; print(torch.cuda.get_device_name(0))' 2>/dev/null || true)
note "$NGPU GPU(s): ${GPU_NAME:-unknown}"

#--- Toolchain -----------------------------------------------------------------
NVCC=${CUDACXX:-$(command -v nvcc || true)}
[[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
[[ -n "$NVCC" && -x "$NVCC" ]] ||
  die "nvcc not found (set CUDACXX or put nvcc on PATH)"
CUDA_HOME=$(cd "$(dirname "$NVCC")/.." && pwd)
command -v cmake >/dev/null || die "cmake not found"
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
if [[ -z "${CUDA_ARCH:-}" ]]; then
  CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader \
                2>/dev/null | head -1 | tr -d '. ')
  [[ -z "$CUDA_ARCH" && -n "$PYTHON" ]] && CUDA_ARCH=$("$PYTHON" -c \
    'import torch; print("%d%d" % torch.cuda.get_device_capability(0))' \
    2>/dev/null || true)
  CUDA_ARCH=${CUDA_ARCH:-90}
fi
note "nvcc $NVCC, sm_$CUDA_ARCH"

# NCCL from the toolkit, NCCL_ROOT, or the nvidia-nccl-cu1x wheel.
if [[ -z "${NCCL_ROOT:-}" && ! -e "$CUDA_HOME/include/nccl.h" && -n "$PYTHON" ]]; then
  WHEEL=$("$PYTHON" -c \
    'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  [[ -n "$WHEEL" && -e "$WHEEL/include/nccl.h" ]] && export NCCL_ROOT="$WHEEL"
fi
note "NCCL_ROOT=${NCCL_ROOT:-<from the CUDA toolkit>}"
if [[ -n "${NCCL_ROOT:-}" ]]; then
  export LD_LIBRARY_PATH="$NCCL_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
CUDA_LIBDIR="$CUDA_HOME/lib64"
[[ -e "$CUDA_LIBDIR/libcudart.so" ]] || CUDA_LIBDIR="$CUDA_HOME/lib"
NPROC=$(nproc 2>/dev/null || echo 4)

#--- Build -------------------------------------------------------------------
MODE=${TAMOE_GPU_MODE:-core}
BENCH="$BUILD/tamoe_gpu_bench"
CXX_BIN=${CXX:-c++}
if [[ "$MODE" == "core" ]]; then
  note "building the runtime (cmake -S runtime) with the cuda backend"
  if cmake -S "$ROOT/runtime" -B "$BUILD/runtime" "${GENERATOR[@]}" \
       -DCMAKE_BUILD_TYPE=Release -DTAMOE_RUNTIME_CUDA=ON \
       -DTAMOE_RUNTIME_TESTS=OFF -DTAMOE_RUNTIME_BENCH=OFF \
       -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
       > "$WORK/cmake-runtime.log" 2>&1; then
    cmake --build "$BUILD/runtime" -j "$NPROC" > "$WORK/build-runtime.log" 2>&1 ||
      { tail -40 "$WORK/build-runtime.log"; die "building the runtime failed"; }
  else
    tail -25 "$WORK/cmake-runtime.log"
    echo ""
    echo "bench/gpu/run.sh: the core runtime cannot be configured here (see"
    echo "CMake's error above: the core needs MPI, and the cuda backend NCCL"
    echo "from NCCL_ROOT, the toolkit or the nvidia-nccl-cu13 wheel). Falling"
    echo "back to the direct mode: only libtamoe_rt_cuda.so, checked against"
    echo "the serial reference on one GPU (no comparison with the cpu backend,"
    echo "no composed schedules); without NCCL it fails too."
    MODE=direct
  fi
fi
if [[ "$MODE" == "core" ]]; then
  LIBDIR=$(dirname "$(find "$BUILD/runtime" -name libtamoe_rt.so | head -1)")
  [[ -e "$LIBDIR/libtamoe_rt_cuda.so" ]] ||
    die "the build has no libtamoe_rt_cuda.so next to libtamoe_rt.so ($LIBDIR):
was the cuda backend enabled (TAMOE_RUNTIME_CUDA)? See $WORK/cmake-runtime.log"
  "$CXX_BIN" -O2 -std=c++17 "$HERE/tamoe_gpu_bench.cpp" \
    -I "$ROOT/runtime/include" -I "$ROOT/runtime/test" -I "$CUDA_HOME/include" \
    -L "$LIBDIR" -ltamoe_rt -L "$CUDA_LIBDIR" -lcudart -lcublas -lcublasLt \
    -Wl,-rpath,"$LIBDIR:$CUDA_LIBDIR" -o "$BENCH" ||
    die "compiling tamoe_gpu_bench failed"
  BENCH_ARGS=()
else
  note "building libtamoe_rt_cuda.so alone (cmake -S runtime/lib/cuda)"
  cmake -S "$ROOT/runtime/lib/cuda" -B "$BUILD/cuda" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" > "$WORK/cmake-cuda.log" 2>&1 ||
    { tail -30 "$WORK/cmake-cuda.log"; die "configuring the cuda backend failed"; }
  cmake --build "$BUILD/cuda" -j "$NPROC" > "$WORK/build-cuda.log" 2>&1 ||
    { tail -40 "$WORK/build-cuda.log"; die "building the cuda backend failed"; }
  LIBRARY=$(find "$BUILD/cuda" -name libtamoe_rt_cuda.so | head -1)
  "$CXX_BIN" -O2 -std=c++17 -DTAMOE_GPU_BENCH_DIRECT "$HERE/tamoe_gpu_bench.cpp" \
    -I "$ROOT/runtime/include" -I "$ROOT/runtime/lib" -I "$ROOT/runtime/test" \
    -I "$CUDA_HOME/include" -L "$CUDA_LIBDIR" -lcudart -lcublas -lcublasLt -ldl \
    -Wl,-rpath,"$CUDA_LIBDIR" -o "$BENCH" ||
    die "compiling tamoe_gpu_bench (direct) failed"
  BENCH_ARGS=(--library "$LIBRARY")
  NOGPU_TEST=$(find "$BUILD/cuda" -name tamoe_rt_cuda_nogpu_test | head -1)
  [[ -n "$NOGPU_TEST" && "$DRY_RUN" != 1 ]] &&
    "$NOGPU_TEST" "$LIBRARY" --expect-gpu
fi
if [[ "$DRY_RUN" == 1 ]]; then
  note "dry run: built $BENCH ($MODE mode); nothing run"
  exit 0
fi

STATUS=0
#--- Correctness ---------------------------------------------------------------
note "checking every operation (tamoe_gpu_bench check)"
timeout 600 "$BENCH" check "${BENCH_ARGS[@]}" 2>&1 | tee "$WORK/check.log"
CHECK=${PIPESTATUS[0]}
if [[ "$CHECK" -ne 0 ]]; then
  echo "bench/gpu/run.sh: the checks FAILED (exit $CHECK), see $WORK/check.log" >&2
  STATUS=1
fi
if [[ "$CHECK" -eq 2 ]]; then
  die "the cuda backend could not be created (see above)"
fi

#--- Timing --------------------------------------------------------------------
note "timing gate, permute, un-permute + combine (tamoe_gpu_bench bench)"
timeout 600 "$BENCH" bench --csv "$WORK/tamoe.csv" $QUICK "${BENCH_ARGS[@]}" ||
  { echo "bench/gpu/run.sh: tamoe_gpu_bench bench failed" >&2; STATUS=1; }

TORCH_CSV=""
if [[ -n "$PYTHON" ]] && "$PYTHON" -c 'import torch' 2>/dev/null; then
  note "timing the PyTorch versions (torch_reference.py)"
  if timeout 900 "$PYTHON" "$HERE/torch_reference.py" --csv "$WORK/torch.csv" \
       $QUICK; then
    TORCH_CSV="$WORK/torch.csv"
  else
    echo "bench/gpu/run.sh: torch_reference.py failed" >&2
    STATUS=1
  fi
else
  echo "bench/gpu/run.sh: no PyTorch here: the table has no torch columns" >&2
fi

#--- Several GPUs ----------------------------------------------------------------
EXCHANGE_CSV=""
if [[ "$NGPU" -gt 1 && "$MODE" == "core" ]]; then
  if command -v mpirun >/dev/null 2>&1; then
    # Two logical nodes where possible, so that all three groups have peers.
    PER_NODE=$(( NGPU >= 4 ? NGPU / 2 : 1 ))
    note "$NGPU ranks (mpirun), $PER_NODE per node: checks and exchanges"
    timeout 900 mpirun -np "$NGPU" --oversubscribe \
      -x TAMOE_RANKS_PER_NODE="$PER_NODE" -x LD_LIBRARY_PATH \
      "$BENCH" check 2>&1 | tee "$WORK/check-mpi.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "multi-GPU checks FAILED" >&2; STATUS=1; }
    timeout 900 mpirun -np "$NGPU" --oversubscribe \
      -x TAMOE_RANKS_PER_NODE="$PER_NODE" -x LD_LIBRARY_PATH \
      "$BENCH" exchange --csv "$WORK/exchange.csv" &&
      EXCHANGE_CSV="$WORK/exchange.csv" ||
      { echo "multi-GPU exchange timing failed" >&2; STATUS=1; }
    cat "$WORK/check-mpi.log" >> "$WORK/check.log"
  else
    echo "bench/gpu/run.sh: $NGPU GPUs but no mpirun: multi-GPU mode skipped" >&2
  fi
fi

#--- Report --------------------------------------------------------------------
REPORT_ARGS=(--tamoe "$WORK/tamoe.csv" --check "$WORK/check.log"
             --title "tamoe cuda backend on ${GPU_NAME:-GPU} ($MODE build)")
[[ -n "$TORCH_CSV" ]] && REPORT_ARGS+=(--torch "$TORCH_CSV")
[[ -n "$EXCHANGE_CSV" ]] && REPORT_ARGS+=(--exchange "$EXCHANGE_CSV")
[[ -n "${OUT:-}" ]] && REPORT_ARGS+=(--out "$OUT/gpu-runtime.md")
if [[ -e "$WORK/tamoe.csv" && -n "$PYTHON" ]]; then
  echo ""
  "$PYTHON" "$HERE/report.py" "${REPORT_ARGS[@]}" || STATUS=1
fi
[[ "$STATUS" -eq 0 ]] && note "done: all checks passed" ||
  echo "bench/gpu/run.sh: finished with FAILURES (see above)" >&2
exit "$STATUS"
