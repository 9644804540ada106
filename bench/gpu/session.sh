#!/usr/bin/env bash
# One GPU session in one call: the layers compiled here, then everything
# run there within a time budget, the results brought back and checked here.
#
#   here:  bash bench/gpu/session.sh --prepare DIR
#          compiles the layers issue 16 and 18 measure into DIR/<name>
#          (e2e.sh --compile-only): f32, bf16, bf16 SwiGLU, bf16 in 4 chunks
#   there: OUT=... bash bench/gpu/session.sh --run DIR
#          run.sh --quick (build, every check, the operation timings and the
#          layer step eager against its graph), then each layer of DIR
#          (e2e.sh --prebuilt, next to PyTorch) while BUDGET seconds (420)
#          last: run.sh may take half of it and a minute, no layer starts
#          past it, and each step is stopped (timeout) where it would run
#          past BUDGET + 120 s, so a hang leaves the results so far. The
#          device returns at most 8 files of 16 MiB (64 MiB in all), so $OUT
#          gets two kinds: summary.md (run.sh's report and each layer's
#          table) and session.tgz.NN, everything (runtime/, <name>/) as one
#          archive in 15 MiB pieces, packed on any exit, with steps.txt,
#          each step's exit status; fails if a step failed
#   here:  bash bench/gpu/session.sh --check DIR RESULTS
#          unpacks RESULTS/session.tgz.* (what --run returns; RESULTS may
#          also be an unpacked folder), then e2e.sh --check for each layer
#          whose results came back (all of them, failing at the end if one
#          failed, if a layer of LAYERS has no results, or if steps.txt
#          records a failed step)
#
# Environment: BUDGET (--run; a layer is not started past it), LAYERS (the
# names to prepare or run, default all four), TAMOE_GPU_BUILD (run.sh's
# build folder, default /tmp/tamoe-gpu-build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
usage="usage: session.sh --prepare DIR | --run DIR | --check DIR RESULTS"
die() { echo "session.sh: $*" >&2; exit 2; }
(( $# >= 2 )) || die "$usage"
mode=$1 dir=$2
LAYERS=${LAYERS:-"f32 bf16 swiglu chunks4"}
BUDGET=${BUDGET:-420}
[[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] || die "BUDGET must be a positive number of seconds, got '$BUDGET'"

# The e2e.sh arguments and settings of each layer.
settings() {
  case $1 in
  f32) echo "--dtype f32" ;;
  bf16) echo "--dtype bf16" ;;
  swiglu) echo "--dtype bf16 ACTIVATION=swiglu" ;;
  chunks4) echo "--dtype bf16 CHUNKS=4" ;;
  *) die "unknown layer '$1' (LAYERS takes f32, bf16, swiglu, chunks4)" ;;
  esac
}
for name in $LAYERS; do settings "$name" >/dev/null; done

case $mode in
--prepare)
  mkdir -p "$dir"
  for name in $LAYERS; do
    read -r flag dtype variables <<<"$(settings "$name")"
    # shellcheck disable=SC2086
    env $variables bash "$root/bench/gpu/e2e.sh" "$flag" "$dtype" \
      --compile-only "$dir/$name"
  done
  echo "== prepared $LAYERS in $dir; where the GPU is: OUT=... bash bench/gpu/session.sh --run $dir"
  ;;
--run)
  [[ -n "${OUT:-}" ]] || die "--run writes its results under \$OUT; set it"
  mkdir -p "$OUT"
  start=$SECONDS failed=0
  export TAMOE_GPU_BUILD=${TAMOE_GPU_BUILD:-/tmp/tamoe-gpu-build}
  # The steps write here; on exit it goes to $OUT as summary.md and the
  # archive's pieces, the runtime first, then the layers in order, so that
  # the first pieces unpack on their own.
  stage=$(mktemp -d "${TMPDIR:-/tmp}/tamoe-session.XXXXXX")
  pack() {
    local report
    for report in "$stage/runtime/gpu-runtime.md" "$stage"/*/gpu-e2e.md; do
      [[ -f "$report" ]] && { echo "<!-- ${report#"$stage"/} -->"; cat "$report"; echo; }
    done >"$OUT/summary.md"
    local parts=()
    local part pieces=()
    for part in steps.txt runtime $LAYERS; do [[ -e "$stage/$part" ]] && parts+=("$part"); done
    if (( ${#parts[@]} > 0 )); then
      tar -czf - -C "$stage" "${parts[@]}" | split -b 15M -d - "$OUT/session.tgz."
      pieces=("$OUT"/session.tgz.*)
    fi
    (( ${#pieces[@]} <= 4 )) ||
      echo "session.sh: the results take ${#pieces[@]} pieces of 15 MiB; the device returns 64 MiB, so the last ones may not come back" >&2
    echo "== results in $OUT: summary.md and ${#pieces[@]} piece(s) of session.tgz"
  }
  trap pack EXIT
  # Seconds a step may take: what is left of BUDGET, plus 120.
  left() { echo $((BUDGET + 120 - (SECONDS - start))); }
  # Each step's exit status goes into the archive (steps.txt), so that
  # --check sees a failed step, not only the missing results it leaves.
  step() { echo "$1 $2" >>"$stage/steps.txt"; [[ "$2" == 0 ]] || failed=1; }
  # The runtime (which the layers link against), its checks and timings,
  # within half the budget: the layers are what is measured.
  rc=0
  OUT="$stage/runtime" timeout $((BUDGET / 2 + 60)) bash "$root/bench/gpu/run.sh" --quick ||
    { rc=$?; echo "session.sh: run.sh failed; its report is in runtime/" >&2; }
  step runtime "$rc"
  for name in $LAYERS; do
    if (( SECONDS - start > BUDGET )); then
      echo "session.sh: $((SECONDS - start)) s spent (BUDGET $BUDGET): $name not started" >&2
      step "$name" not-started
      continue
    fi
    [[ -d "$dir/$name" ]] ||
      { echo "session.sh: $dir/$name is missing (--prepare)" >&2; step "$name" not-prepared; continue; }
    rc=0
    OUT="$stage/$name" timeout "$(left)" bash "$root/bench/gpu/e2e.sh" --prebuilt "$dir/$name" ||
      { rc=$?; echo "session.sh: the $name layer failed; see $name/" >&2; }
    step "$name" "$rc"
  done
  echo "== session done in $((SECONDS - start)) s"
  exit "$failed"
  ;;
--check)
  (( $# == 3 )) || die "$usage"
  results=$3 failed=0
  [[ -d "$results" ]] || die "no results folder '$results'"
  if compgen -G "$results/session.tgz.*" >/dev/null; then
    # Kept, and named, for reading the raw results after the check.
    unpacked=$(mktemp -d "${TMPDIR:-/tmp}/tamoe-results.XXXXXX")
    echo "session.sh: unpacking $results/session.tgz.* into $unpacked"
    cat "$results"/session.tgz.* | tar -xzf - -C "$unpacked" ||
      { echo "session.sh: $results/session.tgz.* is incomplete; checking what unpacked" >&2; failed=1; }
    results=$unpacked
  fi
  # The steps that failed there (a layer may have packed its results and
  # then failed, e.g. in its report or past its timeout).
  if [[ -f "$results/steps.txt" ]]; then
    while read -r what rc; do
      [[ "$rc" == 0 ]] ||
        { echo "session.sh: the $what step failed there ($rc)"; failed=1; }
    done <"$results/steps.txt"
  fi
  for name in $LAYERS; do
    if compgen -G "$results/$name/results.tgz.*" >/dev/null; then
      bash "$root/bench/gpu/e2e.sh" --check "$dir/$name" "$results/$name" ||
        { echo "session.sh: the check of $name failed" >&2; failed=1; }
    else
      # A layer that was to run and brought nothing back is not a pass
      # (LAYERS names the layers the session ran).
      echo "session.sh: no results for $name in $results/$name"
      failed=1
    fi
  done
  exit "$failed"
  ;;
*) die "$usage" ;;
esac
