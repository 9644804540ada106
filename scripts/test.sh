#!/usr/bin/env bash
# Sets up and builds tamoe (scripts/setup.sh), then runs every test: the lit
# suite (IR, tools, docs) and the GoogleTest unit tests, which lit runs too.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TAMOE_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"

log="$build/check-tamoe.log"
status=0
LIT_OPTS="-sv" cmake --build "$build" --target check-tamoe 2>&1 | tee "$log" ||
  status=$?
# One closing line with the counts, whatever lit's own summary looks like.
count() { grep -oE "^ *$1 *: *[0-9]+" "$log" | grep -oE '[0-9]+' | tail -1 || true; }
passed=$(count Passed)
failed=$(count Failed)
echo "tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
