// RUN: tamoe-opt %s -split-input-file --tamoe-finalize-device-resident -verify-diagnostics | FileCheck %s

// The deallocation lowering's alias-check buffers (index, i1) are the host's
// bookkeeping: they move to the stack at the function's entry, loops or not.
// Data buffers stay where the runtime allocates them.
module {
  // CHECK-LABEL: func.func @bookkeeping
  func.func @bookkeeping(%n: index, %p: index) -> memref<4xf32> {
    // CHECK-DAG: %[[BASES:.*]] = memref.alloca() : memref<2xindex>
    // CHECK-DAG: %[[CONDS:.*]] = memref.alloca() : memref<2xi1>
    // CHECK: %[[DATA:.*]] = memref.alloc() : memref<4xf32>
    // CHECK: scf.for
    // CHECK:   memref.store %{{.*}}, %[[BASES]]
    // CHECK:   memref.store %{{.*}}, %[[CONDS]]
    // CHECK-NOT: memref.dealloc %[[BASES]]
    // CHECK-NOT: memref.dealloc %[[CONDS]]
    // CHECK: return %[[DATA]]
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %true = arith.constant true
    %data = memref.alloc() : memref<4xf32>
    scf.for %i = %c0 to %n step %c1 {
      %bases = memref.alloc() : memref<2xindex>
      %conds = memref.alloc() : memref<2xi1>
      memref.store %p, %bases[%c0] : memref<2xindex>
      memref.store %true, %conds[%c0] : memref<2xi1>
      memref.dealloc %bases : memref<2xindex>
      memref.dealloc %conds : memref<2xi1>
    }
    return %data : memref<4xf32>
  }
}

// -----

// Index buffers that may outlive the function or a loop iteration (returned
// through a cast, yielded) stay heap buffers.
module {
  // CHECK-LABEL: func.func @escapes
  func.func @escapes(%n: index) -> memref<?xindex> {
    // CHECK: %[[KEPT:.*]] = memref.alloc() : memref<2xindex>
    // CHECK: memref.cast %[[KEPT]]
    %kept = memref.alloc() : memref<2xindex>
    %cast = memref.cast %kept : memref<2xindex> to memref<?xindex>
    return %cast : memref<?xindex>
  }
  // CHECK-LABEL: func.func @yielded
  func.func @yielded(%n: index) -> memref<2xi1> {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %init = memref.alloc() : memref<2xi1>
    // CHECK: scf.for
    // CHECK:   memref.alloc() : memref<2xi1>
    %last = scf.for %i = %c0 to %n step %c1 iter_args(%prev = %init) -> memref<2xi1> {
      %next = memref.alloc() : memref<2xi1>
      scf.yield %next : memref<2xi1>
    }
    return %last : memref<2xi1>
  }
}

// -----

module {
  func.func @clone(%a: memref<4xf32>) -> memref<4xf32> {
    // expected-error @+1 {{'bufferization.clone' op copies a buffer on the host, which a device-resident program cannot do (a tensor written in place while still read?)}}
    %b = bufferization.clone %a : memref<4xf32> to memref<4xf32>
    return %b : memref<4xf32>
  }
}

// -----

module {
  func.func @copy(%a: memref<4xf32>, %b: memref<4xf32>) {
    // expected-error @+1 {{'memref.copy' op copies a buffer on the host, which a device-resident program cannot do (a tensor written in place while still read?)}}
    memref.copy %a, %b : memref<4xf32> to memref<4xf32>
    return
  }
}

// -----

module {
  func.func @loop(%a: memref<4xf32>) {
    %zero = arith.constant 0.0 : f32
    // expected-error @+1 {{'linalg.fill' op would run on the host in a device-resident program}}
    linalg.fill ins(%zero : f32) outs(%a : memref<4xf32>)
    return
  }
}

// -----

// What bufferization makes of a function that returns its argument.
module {
  func.func @returns_argument(%a: memref<4xf32>) -> memref<4xf32> {
    %b = memref.alloc() : memref<4xf32>
    // expected-error @+1 {{'memref.copy' op copies argument #0 on the host to return it, which a device-resident program cannot do: return values the function computes}}
    memref.copy %a, %b : memref<4xf32> to memref<4xf32>
    return %b : memref<4xf32>
  }
}

// -----

// A reshape's shape (a collapse_shape's gradient, as tensor.reshape) is
// sizes the host writes and reads to build the view: it moves to the
// stack; the data it views stays.
module {
  // CHECK-LABEL: func.func @reshape_shape
  func.func @reshape_shape(%data: memref<12xf32>, %m: index, %n: index) -> memref<?x?xf32> {
    // CHECK: %[[SHAPE:.*]] = memref.alloca() : memref<2xindex>
    // CHECK: memref.reshape %{{.*}}(%[[SHAPE]])
    // CHECK-NOT: memref.dealloc %[[SHAPE]]
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %shape = memref.alloc() : memref<2xindex>
    memref.store %m, %shape[%c0] : memref<2xindex>
    memref.store %n, %shape[%c1] : memref<2xindex>
    %view = memref.reshape %data(%shape) : (memref<12xf32>, memref<2xindex>) -> memref<?x?xf32>
    memref.dealloc %shape : memref<2xindex>
    return %view : memref<?x?xf32>
  }
}
