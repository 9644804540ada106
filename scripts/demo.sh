#!/usr/bin/env bash
# Sets up and builds tamoe, then compiles the example MoE layer with
# tamoe-opt (parse, verify, print) and checks that it prints back unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TAMOE_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh" >/dev/null

example="$root/examples/moe_layer.mlir"
echo "== tamoe-opt $example"
"$build/bin/tamoe-opt" "$example" | tee "$build/moe_layer.out.mlir"
echo "== round trip: printed form parses, verifies and prints identically"
"$build/bin/tamoe-opt" "$build/moe_layer.out.mlir" |
  diff -u "$build/moe_layer.out.mlir" - && echo "identical"
echo "== tamoe-opt --tamoe-pipeline: plan for the module's cluster, topology-aware loss, hierarchical exchanges"
"$build/bin/tamoe-opt" "$example" --tamoe-pipeline -mlir-print-op-on-diagnostic=false
