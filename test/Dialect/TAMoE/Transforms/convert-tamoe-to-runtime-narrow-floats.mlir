// RUN: tamoe-opt %s -split-input-file --convert-tamoe-to-runtime | FileCheck %s
// With host loops, bf16 and f16 arithmetic that would round more than once
// per element computes in f32 and rounds once, as the runtime's maps do
// device-resident (bf16-rounds-once.test runs both).

#map = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-LABEL: func.func @several_ops
// CHECK-SAME: (%[[X:.*]]: tensor<4x8xf16>)
func.func @several_ops(%x: tensor<4x8xf16>) -> tensor<4x8xf16> {
  // A constant outside the body (folding hoists them) enters it extended.
  // CHECK: %[[C:.*]] = arith.constant 3.000000e+00 : f16
  // CHECK: %[[WIDE_C:.*]] = arith.extf %[[C]] : f16 to f32
  // CHECK: %[[WIDE_X:.*]] = arith.extf %[[X]] : tensor<4x8xf16> to tensor<4x8xf32>
  // The output is only written: an f32 one starts empty.
  // CHECK: %[[INIT:.*]] = tensor.empty() : tensor<4x8xf32>
  // CHECK: %[[Y:.*]] = linalg.generic {{.*}} ins(%[[WIDE_X]] : tensor<4x8xf32>) outs(%[[INIT]] : tensor<4x8xf32>)
  // CHECK-NEXT: ^bb0(%[[IN:.*]]: f32, %{{.*}}: f32):
  // CHECK-NEXT: %[[M:.*]] = arith.mulf %[[IN]], %[[WIDE_C]] : f32
  // CHECK-NEXT: %[[E:.*]] = math.exp %[[M]] : f32
  // CHECK-NEXT: %[[S:.*]] = arith.subf %[[E]], %[[IN]] : f32
  // CHECK-NEXT: linalg.yield %[[S]] : f32
  // CHECK: %[[R:.*]] = arith.truncf %[[Y]] : tensor<4x8xf32> to tensor<4x8xf16>
  // CHECK: return %[[R]]
  %c = arith.constant 3.0 : f16
  %empty = tensor.empty() : tensor<4x8xf16>
  %y = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf16>) outs(%empty : tensor<4x8xf16>) {
  ^bb0(%in: f16, %out: f16):
    %m = arith.mulf %in, %c : f16
    %e = math.exp %m : f16
    %s = arith.subf %e, %in : f16
    linalg.yield %s : f16
  } -> tensor<4x8xf16>
  return %y : tensor<4x8xf16>
}

// -----

#map = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-LABEL: func.func @accumulates_and_two_results
// CHECK-SAME: (%[[X:.*]]: tensor<4x8xbf16>, %[[ACC:.*]]: tensor<4x8xbf16>)
func.func @accumulates_and_two_results(%x: tensor<4x8xbf16>, %acc: tensor<4x8xbf16>) -> (tensor<4x8xbf16>, tensor<4x8xbf16>) {
  // An output the body reads is extended; a bf16 constant in the body is
  // extended where it stands, an integer one kept; each result is
  // truncated.
  // CHECK: %[[WIDE_X:.*]] = arith.extf %[[X]]
  // CHECK: %[[WIDE_ACC:.*]] = arith.extf %[[ACC]]
  // CHECK: %[[EMPTY:.*]] = tensor.empty() : tensor<4x8xf32>
  // CHECK: %[[R:.*]]:2 = linalg.generic {{.*}} ins(%[[WIDE_X]] : tensor<4x8xf32>) outs(%[[WIDE_ACC]], %[[EMPTY]] : tensor<4x8xf32>, tensor<4x8xf32>)
  // CHECK: %[[ONE:.*]] = arith.constant 1.000000e+00 : bf16
  // CHECK-NEXT: %[[WIDE_ONE:.*]] = arith.extf %[[ONE]] : bf16 to f32
  // CHECK-NEXT: %[[TWO:.*]] = arith.constant 2 : i32
  // CHECK-NEXT: %[[FLOAT_TWO:.*]] = arith.sitofp %[[TWO]] : i32 to f32
  // CHECK-NEXT: %[[SUM:.*]] = arith.addf %{{.*}}, %[[WIDE_ONE]] : f32
  // CHECK-NEXT: arith.mulf %[[SUM]], %[[FLOAT_TWO]] : f32
  // CHECK: linalg.yield %{{.*}}, %{{.*}} : f32, f32
  // CHECK: arith.truncf %[[R]]#0 : tensor<4x8xf32> to tensor<4x8xbf16>
  // CHECK: arith.truncf %[[R]]#1 : tensor<4x8xf32> to tensor<4x8xbf16>
  %empty = tensor.empty() : tensor<4x8xbf16>
  %y:2 = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xbf16>) outs(%acc, %empty : tensor<4x8xbf16>, tensor<4x8xbf16>) {
  ^bb0(%in: bf16, %a: bf16, %out: bf16):
    %one = arith.constant 1.0 : bf16
    %two = arith.constant 2 : i32
    %t = arith.sitofp %two : i32 to bf16
    %p = arith.addf %in, %one : bf16
    %q = arith.mulf %p, %t : bf16
    %s = arith.mulf %q, %a : bf16
    linalg.yield %s, %p : bf16, bf16
  } -> (tensor<4x8xbf16>, tensor<4x8xbf16>)
  return %y#0, %y#1 : tensor<4x8xbf16>, tensor<4x8xbf16>
}

// -----

// Left as they are: one rounding step (relu), a cast of its own, another
// float type, a reduction.
#map = affine_map<(d0, d1) -> (d0, d1)>
#row = affine_map<(d0, d1) -> (d0)>
// CHECK-LABEL: func.func @kept
// CHECK-NOT: bf16> to tensor
// CHECK-NOT: f32> to tensor
// CHECK: return
func.func @kept(%x: tensor<4x8xbf16>, %f: tensor<4x8xf32>) -> (tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4xbf16>) {
  %zero = arith.constant 0.0 : bf16
  %empty = tensor.empty() : tensor<4x8xbf16>
  %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xbf16>) outs(%empty : tensor<4x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    %m = arith.maximumf %in, %zero : bf16
    linalg.yield %m : bf16
  } -> tensor<4x8xbf16>
  %rounded = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xbf16>) outs(%empty : tensor<4x8xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    %w = arith.extf %in : bf16 to f32
    %e = math.exp %w : f32
    %n = arith.truncf %e : f32 to bf16
    %s = arith.addf %n, %in : bf16
    linalg.yield %s : bf16
  } -> tensor<4x8xbf16>
  %mixed = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel"]} ins(%x, %f : tensor<4x8xbf16>, tensor<4x8xf32>) outs(%empty : tensor<4x8xbf16>) {
  ^bb0(%in: bf16, %g: f32, %out: bf16):
    %n = arith.truncf %g : f32 to bf16
    %e = math.exp %in : bf16
    %s = arith.addf %n, %e : bf16
    linalg.yield %s : bf16
  } -> tensor<4x8xbf16>
  %rows = tensor.empty() : tensor<4xbf16>
  %norm = linalg.generic {indexing_maps = [#map, #row], iterator_types = ["parallel", "reduction"]} ins(%x : tensor<4x8xbf16>) outs(%rows : tensor<4xbf16>) {
  ^bb0(%in: bf16, %out: bf16):
    %sq = arith.mulf %in, %in : bf16
    %s = arith.addf %out, %sq : bf16
    linalg.yield %s : bf16
  } -> tensor<4xbf16>
  return %relu, %rounded, %mixed, %norm : tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4xbf16>
}

// -----

// A comparison of a value the body computed sees how it was rounded: an
// f16 product past 65504 is inf, which this loss-scaling guard replaces by
// 0; in f32 it would stay finite, pass the test and become inf when
// truncated. The body is left in f16.
#map = affine_map<(d0) -> (d0)>
// CHECK-LABEL: func.func @guards_overflow
// CHECK-NOT: arith.extf
// CHECK: arith.mulf %{{.*}}, %{{.*}} : f16
// CHECK: arith.cmpf oeq, %{{.*}}, %{{.*}} : f16
// CHECK-NOT: arith.truncf
// CHECK: return
func.func @guards_overflow(%g: tensor<4xf16>) -> tensor<4xf16> {
  %empty = tensor.empty() : tensor<4xf16>
  %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel"]} ins(%g : tensor<4xf16>) outs(%empty : tensor<4xf16>) {
  ^bb0(%x: f16, %out: f16):
    %scale = arith.constant 256.0 : f16
    %zero = arith.constant 0.0 : f16
    %inf = arith.constant 0x7C00 : f16
    %y = arith.mulf %x, %scale : f16
    %a = math.absf %y : f16
    %bad = arith.cmpf oeq, %a, %inf : f16
    %z = arith.select %bad, %zero, %y : f16
    linalg.yield %z : f16
  } -> tensor<4xf16>
  return %r : tensor<4xf16>
}

// -----

// A comparison of an input (as in relu's gradient) is exact in f32: the
// body is widened.
#map = affine_map<(d0) -> (d0)>
// CHECK-LABEL: func.func @compares_input
// CHECK: linalg.generic {{.*}} ins(%{{.*}}, %{{.*}} : tensor<4xf32>, tensor<4xf32>)
// CHECK: arith.cmpf ogt, %{{.*}}, %{{.*}} : f32
// CHECK: arith.truncf %{{.*}} : tensor<4xf32> to tensor<4xbf16>
func.func @compares_input(%x: tensor<4xbf16>, %dy: tensor<4xbf16>) -> tensor<4xbf16> {
  %empty = tensor.empty() : tensor<4xbf16>
  %r = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel"]} ins(%x, %dy : tensor<4xbf16>, tensor<4xbf16>) outs(%empty : tensor<4xbf16>) {
  ^bb0(%in: bf16, %d: bf16, %out: bf16):
    %zero = arith.constant 0.0 : bf16
    %half = arith.constant 0.5 : bf16
    %pos = arith.cmpf ogt, %in, %zero : bf16
    %s = arith.mulf %d, %half : bf16
    %t = arith.addf %s, %in : bf16
    %z = arith.select %pos, %t, %zero : bf16
    linalg.yield %z : bf16
  } -> tensor<4xbf16>
  return %r : tensor<4xbf16>
}
