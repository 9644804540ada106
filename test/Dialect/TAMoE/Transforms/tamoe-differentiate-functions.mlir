// RUN: tamoe-opt %s --tamoe-differentiate=functions=host -mlir-print-op-on-diagnostic=false 2>/dev/null | FileCheck %s

// functions= differentiates a function no tamoe.vjp names (for a host
// compiler that calls the two itself).
// CHECK: func.func @host_forward(%{{.*}}: tensor<4xf32>) -> tensor<4xf32>
// CHECK: func.func @host_backward(%{{.*}}: tensor<4xf32>, %[[D:.*]]: tensor<4xf32>) -> tensor<4xf32>
// CHECK: linalg.generic {{.*}} ins(%[[D]] : tensor<4xf32>)
// CHECK: arith.negf
// Without any function to differentiate the pass would fail here.
// RUN: not tamoe-opt %s --tamoe-differentiate=functions=missing 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: error: tamoe-differentiate: no function @missing to differentiate
func.func @host(%x: tensor<4xf32>) -> tensor<4xf32> {
  %n = arith.negf %x : tensor<4xf32>
  return %n : tensor<4xf32>
}
