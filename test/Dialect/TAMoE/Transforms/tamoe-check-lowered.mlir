// tamoe-to-llvm names an op its partial conversions left (a vector op: no
// vector lowering in the pipeline) rather than printing a module that
// mlir-translate refuses; ops of other dialects are left alone.
// RUN: not tamoe-opt %s --split-input-file --tamoe-to-llvm 2>&1 | FileCheck %s
// RUN: not tamoe-opt %s --split-input-file --tamoe-check-lowered 2>&1 | FileCheck %s --check-prefix=ALONE
// RUN: not tamoe-opt %s --split-input-file --allow-unregistered-dialect --tamoe-check-lowered 2>&1 | FileCheck %s --check-prefix=UNREGISTERED

// CHECK: :[[@LINE+3]]:3: error: tamoe-to-llvm left 'vector.transfer_write' unconverted (and {{[0-9]+}} more op(s) left): lower it before tamoe-to-llvm, or to ops the pipeline converts
func.func @f(%m: memref<8xf32>, %v: vector<8xf32>) {
  %c0 = arith.constant 0 : index
  vector.transfer_write %v, %m[%c0] : vector<8xf32>, memref<8xf32>
  vector.transfer_write %v, %m[%c0] : vector<8xf32>, memref<8xf32>
  return
}

// -----

// The LLVM dialect and a dialect with its own translation (omp) pass (the
// first module, not lowered, fails at its first op).
// ALONE: error: tamoe-to-llvm left 'arith.constant' unconverted
// ALONE: llvm.func @g
// ALONE-NEXT: omp.barrier
llvm.func @g() {
  omp.barrier
  llvm.return
}

// -----

// An op of no registered dialect has no translation to LLVM IR either.
// UNREGISTERED: :[[@LINE+2]]:3: error: tamoe-to-llvm left 'foo.bar' unconverted: lower it before tamoe-to-llvm, or to ops the pipeline converts
llvm.func @h() {
  "foo.bar"() : () -> ()
  llvm.return
}
