// RUN: tamoe-opt %s --tamoe-expand-gate --verify-each | FileCheck %s
// Idempotent: nothing is left to expand.
// RUN: tamoe-opt %s --tamoe-expand-gate > %t.once
// RUN: tamoe-opt %t.once --tamoe-expand-gate | diff %t.once -
// The numbers are checked by running the result: test/Integration/expand-gate.mlir.

// CHECK-LABEL: func.func @softmax_top2
// CHECK-NOT: tamoe.
// Softmax: row maximum, exp of the difference, row sum, division.
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK:   arith.maximumf
// CHECK: linalg.generic
// CHECK:   math.exp
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]
// CHECK:   arith.addf
// CHECK: linalg.generic
// CHECK:   arith.divf
// Two rounds of arg-max (value and index), each masking its pick.
// CHECK-COUNT-2: arith.cmpf ugt
// CHECK: tensor.insert_slice {{.*}}[0, 1] [16, 1] [1, 1] : tensor<16xi32> into tensor<16x2xi32>
// Counts, mean probabilities and the weighted sum of the loss.
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "reduction", "parallel"]
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]
// CHECK: linalg.generic {{.*}}iterator_types = ["reduction"]
// CHECK-NOT: tamoe.
// CHECK: return
func.func @softmax_top2(%logits: tensor<16x8xf32>, %w: tensor<8xf32>) -> (tensor<16x2xi32>, tensor<16x2xf32>, tensor<f32>) {
  %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
  %loss = tamoe.aux_loss topology %probs, %ids weights %w : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32> -> tensor<f32>
  return %ids, %weights, %loss : tensor<16x2xi32>, tensor<16x2xf32>, tensor<f32>
}

// Sigmoid, group-limited, dynamic token count. bf16 logits are scored,
// ranked and summed in f32, and the probabilities and weights rounded once
// at the end.
// CHECK-LABEL: func.func @grouped
// CHECK: %[[TOKENS:.*]] = tensor.dim %{{.*}}, %{{.*}} : tensor<?x8xbf16>
// CHECK: arith.extf %{{.*}} : bf16 to f32
// CHECK: math.exp %{{.*}} : f32
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0], [1, 2]] output_shape [%[[TOKENS]], 4, 2] : tensor<?x8xf32> into tensor<?x4x2xf32>
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK-NOT: tamoe.
// CHECK: return
func.func @grouped(%logits: tensor<?x8xbf16>) -> (tensor<?x2xi64>, tensor<?x2xbf16>, tensor<?x8xbf16>) {
  %ids, %weights, %probs = tamoe.gate %logits top 2 sigmoid groups 4 keep 2 : tensor<?x8xbf16> -> tensor<?x2xi64>, tensor<?x2xbf16>, tensor<?x8xbf16>
  return %ids, %weights, %probs : tensor<?x2xi64>, tensor<?x2xbf16>, tensor<?x8xbf16>
}

// f8E4M3FN has no infinity: its -inf is NaN, which made the row maximum,
// and so every score, NaN. Computed in f32, the type needs no constant.
// CHECK-LABEL: func.func @f8
// CHECK-NOT: arith.constant {{.*}} : f8E4M3FN
// CHECK: arith.constant 0xFF800000 : f32
// CHECK-NOT: arith.constant {{.*}} : f8E4M3FN
// CHECK: return
func.func @f8(%logits: tensor<4x8xf8E4M3FN>) -> (tensor<4x2xi32>, tensor<4x2xf8E4M3FN>) {
  %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize groups 4 keep 2 : tensor<4x8xf8E4M3FN> -> tensor<4x2xi32>, tensor<4x2xf8E4M3FN>, tensor<4x8xf8E4M3FN>
  return %ids, %weights : tensor<4x2xi32>, tensor<4x2xf8E4M3FN>
}

// Dynamic experts, result sizes that differ from the logits' in which
// dimensions are static, and a dynamic k in the loss: the expansion is valid
// IR (every tensor.empty gets its sizes) and k is read at run time.
// (test/Integration/expand-gate.mlir runs the missing picks.)
// CHECK-LABEL: func.func @dynamic_sizes
// CHECK-NOT: tamoe.
// Fewer experts than k at run time: a round past the last expert has no
// pick, id -1 (not expert 0 again) and weight 0.
// CHECK: %[[E:.*]] = tensor.dim %arg0, %c1 : tensor<?x?xf32>
// CHECK: %[[PICKED:.*]] = arith.cmpi ult, %{{.*}}, %[[E]] : index
// CHECK: %[[NONE:.*]] = arith.constant -1 : i32
// CHECK-NEXT: arith.select %[[PICKED]], %{{.*}}, %[[NONE]] : i32
// CHECK: %[[K:.*]] = tensor.dim %{{.*}}, %{{.*}} : tensor<4x?xi32>
// CHECK: arith.index_cast %[[K]]
// CHECK: return
func.func @dynamic_sizes(%logits: tensor<?x?xf32>, %ids: tensor<4x?xi32>) -> (tensor<4x2xi32>, tensor<?x?xf32>, tensor<f32>) {
  %i, %w, %p = tamoe.gate %logits top 2 sigmoid renormalize : tensor<?x?xf32> -> tensor<4x2xi32>, tensor<?x?xf32>, tensor<?x?xf32>
  %l = tamoe.aux_loss switch %p, %ids : tensor<?x?xf32>, tensor<4x?xi32> -> tensor<f32>
  return %i, %w, %l : tensor<4x2xi32>, tensor<?x?xf32>, tensor<f32>
}

// No tokens: no rounds of arg-max (a column of a 0-row tensor is no slice
// the verifier takes); the empty results are complete.
// CHECK-LABEL: func.func @no_tokens
// CHECK-NOT: tensor.insert_slice
// CHECK: return
func.func @no_tokens(%logits: tensor<0x16xf32>) -> (tensor<0x2xi32>, tensor<0x2xf32>, tensor<0x16xf32>) {
  %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<0x16xf32> -> tensor<0x2xi32>, tensor<0x2xf32>, tensor<0x16xf32>
  return %ids, %weights, %probs : tensor<0x2xi32>, tensor<0x2xf32>, tensor<0x16xf32>
}
