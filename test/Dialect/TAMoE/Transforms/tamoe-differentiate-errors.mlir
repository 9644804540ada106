// RUN: tamoe-opt %s -split-input-file --tamoe-differentiate -verify-diagnostics
// Every error of tamoe-differentiate and of the gradient rules, each on a
// function that a tamoe.vjp op names.

// An op a gradient flows through without a rule.
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'math.exp' op has no gradient rule: tamoe-differentiate covers the tamoe ops, linalg.matmul, elementwise add, sub, mul, neg, relu and silu, sums (linalg.reduce, linalg.broadcast), reshapes, casts, slices and constants}}
  %e = math.exp %x : tensor<4xf32>
  return %e : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A call: its callee would need differentiating too.
func.func private @other(tensor<4xf32>) -> tensor<4xf32>
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'func.call' op has no gradient rule}}
  %y = func.call @other(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// Control flow that a differentiated value enters.
func.func @f(%x: tensor<4xf32>, %c: i1) -> tensor<4xf32> {
  // expected-error @+1 {{'scf.if' op cannot be differentiated: tamoe-differentiate takes straight-line code (no regions, loops or branches)}}
  %y = scf.if %c -> tensor<4xf32> {
    scf.yield %x : tensor<4xf32>
  } else {
    scf.yield %x : tensor<4xf32>
  }
  return %y : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %c: i1, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x, %c) cotangents(%d) : (tensor<4xf32>, i1), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A function of several blocks.
// expected-error @+1 {{'func.func' op cannot be differentiated: tamoe-differentiate takes a function with a body of one block}}
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  cf.br ^next
^next:
  return %x : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A declaration.
// expected-error @+1 {{'func.func' op cannot be differentiated: it is a declaration, with no body}}
func.func private @f(tensor<4xf32>) -> tensor<4xf32>
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// The generated names are taken.
// expected-error @+1 {{'func.func' op cannot be differentiated: @f_forward already exists}}
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
func.func @f_forward(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A matmul with other indexing maps.
#lhs = affine_map<(d0, d1, d2) -> (d2, d0)>
#rhs = affine_map<(d0, d1, d2) -> (d2, d1)>
#out = affine_map<(d0, d1, d2) -> (d0, d1)>
func.func @f(%a: tensor<8x4xf32>, %b: tensor<8x6xf32>, %c: tensor<4x6xf32>) -> tensor<4x6xf32> {
  // expected-error @+1 {{'linalg.matmul' op cannot be differentiated: tamoe differentiates linalg.matmul with the default indexing maps}}
  %r = linalg.matmul indexing_maps = [#lhs, #rhs, #out] ins(%a, %b : tensor<8x4xf32>, tensor<8x6xf32>) outs(%c : tensor<4x6xf32>) -> tensor<4x6xf32>
  return %r : tensor<4x6xf32>
}
func.func @g(%a: tensor<8x4xf32>, %b: tensor<8x6xf32>, %c: tensor<4x6xf32>, %d: tensor<4x6xf32>) {
  %r, %da, %db, %dc = tamoe.vjp @f(%a, %b, %c) cotangents(%d) : (tensor<8x4xf32>, tensor<8x6xf32>, tensor<4x6xf32>), (tensor<4x6xf32>) -> (tensor<4x6xf32>), (tensor<8x4xf32>, tensor<8x6xf32>, tensor<4x6xf32>)
  return
}

// -----

// A generic that is not one elementwise op of the rules.
#map = affine_map<(d0) -> (d0)>
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{'linalg.generic' op has no gradient rule: tamoe differentiates a linalg.generic that is one elementwise add, sub, mul, neg, relu (max(x, 0)) or silu (x / (1 + exp(-x))) on operands of one shape}}
  %y = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel"]} ins(%x : tensor<4xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%in: f32, %out: f32):
    %s = math.sqrt %in : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A generic of two results, of which only the second is used: no rule
// (rather than a zero gradient, result 0 having none).
#map = affine_map<(d0) -> (d0)>
func.func @f(%x: tensor<4xf32>, %y: tensor<4xf32>) -> tensor<4xf32> {
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{'linalg.generic' op has no gradient rule: tamoe differentiates a linalg.generic that is one elementwise add}}
  %r:2 = linalg.generic {indexing_maps = [#map, #map, #map, #map], iterator_types = ["parallel"]} ins(%x, %y : tensor<4xf32>, tensor<4xf32>) outs(%e, %e : tensor<4xf32>, tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32, %o0: f32, %o1: f32):
    %s = arith.addf %a, %b : f32
    %m = arith.mulf %a, %b : f32
    linalg.yield %s, %m : f32, f32
  } -> (tensor<4xf32>, tensor<4xf32>)
  return %r#1 : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %y: tensor<4xf32>, %d: tensor<4xf32>) {
  %r, %dx, %dy = tamoe.vjp @f(%x, %y) cotangents(%d) : (tensor<4xf32>, tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

// Second derivatives: relu's gradient is not differentiated.
#map = affine_map<(d0) -> (d0)>
func.func @f(%x: tensor<4xf32>, %dy: tensor<4xf32>) -> tensor<4xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{an activation's gradient has no gradient rule: tamoe takes first derivatives only}}
  %y = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel"]} ins(%x, %dy : tensor<4xf32>, tensor<4xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32, %out: f32):
    %c = arith.cmpf ogt, %a, %zero : f32
    %s = arith.select %c, %b, %zero : f32
    linalg.yield %s : f32
  } -> tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %dy: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx, %ddy = tamoe.vjp @f(%x, %dy) cotangents(%d) : (tensor<4xf32>, tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

// A reduction that is not a sum.
func.func @f(%x: tensor<4xf32>, %init: tensor<f32>) -> tensor<f32> {
  // expected-error @+1 {{'linalg.reduce' op has no gradient rule: tamoe differentiates a linalg.reduce that sums one input (arith.addf)}}
  %m = linalg.reduce ins(%x : tensor<4xf32>) outs(%init : tensor<f32>) dimensions = [0]
    (%in: f32, %out: f32) {
      %a = arith.maximumf %in, %out : f32
      linalg.yield %a : f32
    }
  return %m : tensor<f32>
}
func.func @g(%x: tensor<4xf32>, %init: tensor<f32>, %d: tensor<f32>) {
  %m, %dx, %di = tamoe.vjp @f(%x, %init) cotangents(%d) : (tensor<4xf32>, tensor<f32>), (tensor<f32>) -> (tensor<f32>), (tensor<4xf32>, tensor<f32>)
  return
}

// -----

// An elementwise linalg op whose operands differ in type.
func.func @f(%x: tensor<4xf32>, %y: tensor<?xf32>) -> tensor<4xf32> {
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{'linalg.add' op cannot be differentiated: tamoe differentiates elementwise ops whose operands and result have one type}}
  %s = linalg.add ins(%x, %y : tensor<4xf32>, tensor<?xf32>) outs(%e : tensor<4xf32>) -> tensor<4xf32>
  return %s : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %y: tensor<?xf32>, %d: tensor<4xf32>) {
  %s, %dx, %dy = tamoe.vjp @f(%x, %y) cotangents(%d) : (tensor<4xf32>, tensor<?xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>, tensor<?xf32>)
  return
}

// -----

// Exchanges already split into start and wait: the rows travel through a
// token without a gradient.
shard.grid @ep(shape = 4)
func.func @f(%x: tensor<8x4xf32>, %c: tensor<4xi32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{'tamoe.all_to_all_start' op cannot be differentiated: run tamoe-schedule-exchanges after tamoe-differentiate (as --tamoe-pipeline does)}}
  %t = tamoe.all_to_all_start %x, %c on @ep : tensor<8x4xf32>, tensor<4xi32>
  %r, %rc = tamoe.all_to_all_wait %t : tensor<?x4xf32>, tensor<4xi32>
  return %r : tensor<?x4xf32>
}
func.func @g(%x: tensor<8x4xf32>, %c: tensor<4xi32>, %d: tensor<?x4xf32>) {
  %r, %dx = tamoe.vjp @f(%x, %c) cotangents(%d) : (tensor<8x4xf32>, tensor<4xi32>), (tensor<?x4xf32>) -> (tensor<?x4xf32>), (tensor<8x4xf32>)
  return
}

// -----

// A gradient through a scalar: activity crosses it, so the op that would
// have to take the scalar's gradient is named (before, the gradient was a
// silent zero).
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %s = tensor.extract %x[%c0] : tensor<4xf32>
  // expected-error @+1 {{'tensor.splat' op has no gradient rule}}
  %r = tensor.splat %s : tensor<4xf32>
  return %r : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// An op with a rule that reads such a scalar.
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %s = tensor.extract %x[%c0] : tensor<4xf32>
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{'linalg.generic' op cannot be differentiated: it reads a f32 that depends on the arguments, and tamoe-differentiate takes gradients through the ranked float tensors an op takes as operands only}}
  %r = linalg.generic {indexing_maps = [affine_map<(d0) -> ()>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%s : f32) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32):
    linalg.yield %a : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A scalar loss: its gradient would be lost.
// expected-error @+1 {{'func.func' op cannot be differentiated: result 0 is a f32 that depends on the arguments, and tamoe-differentiate takes gradients of ranked float tensors (return it as tensor<f32>)}}
func.func @f(%x: tensor<4xf32>) -> f32 {
  %c0 = arith.constant 0 : index
  %s = tensor.extract %x[%c0] : tensor<4xf32>
  return %s : f32
}
func.func @g(%x: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents() : (tensor<4xf32>), () -> (f32), (tensor<4xf32>)
  return
}

// -----

// Nothing to take a gradient of, or for.
// expected-error @+1 {{'func.func' op cannot be differentiated: it returns no ranked float tensor to take the gradient of}}
func.func @f(%x: tensor<4xf32>) -> tensor<4xi32> {
  %i = arith.fptosi %x : tensor<4xf32> to tensor<4xi32>
  return %i : tensor<4xi32>
}
func.func @g(%x: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents() : (tensor<4xf32>), () -> (tensor<4xi32>), (tensor<4xf32>)
  return
}

// -----

// expected-error @+1 {{'func.func' op cannot be differentiated: it takes no ranked float tensor to take a gradient for}}
func.func @f(%i: tensor<4xi32>) -> tensor<4xf32> {
  %x = arith.sitofp %i : tensor<4xi32> to tensor<4xf32>
  return %x : tensor<4xf32>
}
func.func @g(%i: tensor<4xi32>, %d: tensor<4xf32>) {
  %y = tamoe.vjp @f(%i) cotangents(%d) : (tensor<4xi32>), (tensor<4xf32>) -> (tensor<4xf32>), ()
  return
}

// -----

// A value a linalg op's region reads from above: a captured scalar, or a
// gather from a tensor. Its rule differentiates the operands only.
func.func @f(%x: tensor<4xf32>, %y: tensor<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %s = tensor.extract %x[%c0] : tensor<4xf32>
  %e = tensor.empty() : tensor<4xf32>
  // expected-error @+1 {{'linalg.generic' op cannot be differentiated: it reads a f32 inside its region that depends on the arguments}}
  %r = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%y : tensor<4xf32>) outs(%e : tensor<4xf32>) {
  ^bb0(%a: f32, %b: f32):
    %m = arith.mulf %a, %s : f32
    linalg.yield %m : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %y: tensor<4xf32>, %d: tensor<4xf32>) {
  %r, %dx, %dy = tamoe.vjp @f(%x, %y) cotangents(%d) : (tensor<4xf32>, tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

// An unranked tensor carries the gradient too.
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %u = tensor.cast %x : tensor<4xf32> to tensor<*xf32>
  // expected-error @+1 {{'tensor.cast' op cannot be differentiated: it reads a tensor<*xf32> that depends on the arguments}}
  %r = tensor.cast %u : tensor<*xf32> to tensor<4xf32>
  return %r : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x) cotangents(%d) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A chunk of more parts than tamoe-overlap makes: its gradient would list
// them all (2^31 of them took for ever).
func.func @f(%rows: tensor<32x8xf32>, %counts: tensor<8xi32>) -> tensor<16x8xf32> {
  // expected-error @+1 {{'tamoe.chunk' op cannot be differentiated: its gradient lists all 2147483647 parts, and tamoe differentiates at most 1024 (the most tamoe-overlap makes)}}
  %part, %part_counts = tamoe.chunk %rows, %counts chunk 1 of 2147483647 : tensor<32x8xf32>, tensor<8xi32> -> tensor<16x8xf32>
  return %part : tensor<16x8xf32>
}
func.func @g(%rows: tensor<32x8xf32>, %counts: tensor<8xi32>, %d: tensor<16x8xf32>) {
  %part, %drows = tamoe.vjp @f(%rows, %counts) cotangents(%d) : (tensor<32x8xf32>, tensor<8xi32>), (tensor<16x8xf32>) -> (tensor<16x8xf32>), (tensor<32x8xf32>)
  return
}

// -----

// A value written to memory and read back: activity follows values only.
func.func @f(%x: tensor<4xf32>, %m: memref<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %s = tensor.extract %x[%c0] : tensor<4xf32>
  // expected-error @+1 {{'memref.store' op cannot be differentiated: it writes a value that depends on the arguments to memory, where tamoe-differentiate cannot follow it}}
  memref.store %s, %m[%c0] : memref<4xf32>
  %t = bufferization.to_tensor %m : memref<4xf32> to tensor<4xf32>
  %y = arith.addf %t, %x : tensor<4xf32>
  return %y : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>, %m: memref<4xf32>, %d: tensor<4xf32>) {
  %y, %dx = tamoe.vjp @f(%x, %m) cotangents(%d) : (tensor<4xf32>, memref<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}
