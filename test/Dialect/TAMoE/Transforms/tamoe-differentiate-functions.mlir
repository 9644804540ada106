// RUN: tamoe-opt %s --tamoe-differentiate=functions=host -mlir-print-op-on-diagnostic=false 2>/dev/null | FileCheck %s

// functions= differentiates a function no tamoe.vjp names (for a host
// compiler that calls the two itself).
// The backward keeps the function's attributes, as the forward does: a
// host that asked for C wrappers gets one for each.
// CHECK: func.func @host_forward(%{{.*}}: tensor<4xf32>) -> tensor<4xf32> attributes {llvm.emit_c_interface}
// CHECK: func.func @host_backward(%{{.*}}: tensor<4xf32>, %[[D:.*]]: tensor<4xf32>) -> tensor<4xf32> attributes {llvm.emit_c_interface}
// CHECK: linalg.generic {{.*}} ins(%[[D]] : tensor<4xf32>)
// CHECK: arith.negf
// Without any function to differentiate the pass would fail here.
// RUN: not tamoe-opt %s --tamoe-differentiate=functions=missing 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: error: tamoe-differentiate: no function @missing to differentiate
// RUN: tamoe-opt %s --tamoe-differentiate=functions=host --tamoe-to-llvm | FileCheck %s --check-prefix=CIFACE
// CIFACE-DAG: llvm.func @_mlir_ciface_host_forward(
// CIFACE-DAG: llvm.func @_mlir_ciface_host_backward(
func.func @host(%x: tensor<4xf32>) -> tensor<4xf32> attributes {llvm.emit_c_interface} {
  %n = arith.negf %x : tensor<4xf32>
  return %n : tensor<4xf32>
}
