// RUN: tamoe-opt %s -split-input-file --tamoe-differentiate -mlir-print-op-on-diagnostic=false 2>%t.remarks | FileCheck %s
// RUN: FileCheck %s --check-prefix=REMARK --input-file %t.remarks
// Errors: tamoe-differentiate-errors.mlir. Each case names its function in a
// tamoe.vjp op, or with functions=.

// A module without tamoe.vjp ops is left as it is.
// CHECK-LABEL: func.func @untouched
// CHECK-NOT: _backward
func.func @untouched(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}

// -----

// gate: the weights' and the probabilities' gradients reach the logits
// through tamoe.gate_grad, which reads the gate's probs and ids (saved).
// CHECK-LABEL: func.func @gate_forward
// CHECK-SAME: -> (tensor<8x2xf32>, tensor<8x4xf32>, tensor<8x2xi32> {tamoe.saved = "tamoe.gate expert_ids"}, tensor<8x4xf32> {tamoe.saved = "tamoe.gate probs"})
// CHECK: %[[IDS:.*]], %[[W:.*]], %[[P:.*]] = tamoe.gate
// CHECK: return %[[W]], %[[P]], %[[IDS]], %[[P]]
// CHECK-LABEL: func.func @gate_backward
// CHECK-SAME: (%{{.*}}: tensor<8x4xf32>, %[[SIDS:.*]]: tensor<8x2xi32> {tamoe.saved = "tamoe.gate expert_ids"}, %[[SP:.*]]: tensor<8x4xf32> {tamoe.saved = "tamoe.gate probs"}, %[[DW:.*]]: tensor<8x2xf32>, %[[DP:.*]]: tensor<8x4xf32>) -> tensor<8x4xf32>
// CHECK: %[[DL:.*]] = tamoe.gate_grad %[[SP]], %[[SIDS]] sigmoid renormalize d_weights %[[DW]] d_probs %[[DP]]
// CHECK: return %[[DL]]
// REMARK: remark: @gate_forward saves 2 values for @gate_backward: 192 bytes
func.func @gate(%logits: tensor<8x4xf32>) -> (tensor<8x2xf32>, tensor<8x4xf32>) {
  %ids, %w, %p = tamoe.gate %logits top 2 sigmoid renormalize : tensor<8x4xf32> -> tensor<8x2xi32>, tensor<8x2xf32>, tensor<8x4xf32>
  return %w, %p : tensor<8x2xf32>, tensor<8x4xf32>
}
func.func @use_gate(%logits: tensor<8x4xf32>, %dw: tensor<8x2xf32>, %dp: tensor<8x4xf32>) -> tensor<8x4xf32> {
  %w, %p, %dl = tamoe.vjp @gate(%logits) cotangents(%dw, %dp) : (tensor<8x4xf32>), (tensor<8x2xf32>, tensor<8x4xf32>) -> (tensor<8x2xf32>, tensor<8x4xf32>), (tensor<8x4xf32>)
  return %dl : tensor<8x4xf32>
}

// -----

// dispatch: the transpose of its gather, an unweighted combine at the
// dispatch's positions (dropped assignments, position -1, get nothing).
// CHECK-LABEL: func.func @dispatch_backward
// CHECK-SAME: %[[POS:[^:]*]]: tensor<8x2xi32> {tamoe.saved = "tamoe.dispatch positions"}, %[[DROWS:.*]]: tensor<16x16xf32>)
// CHECK: %[[DX:.*]] = tamoe.combine %[[DROWS]], %[[POS]] : tensor<16x16xf32>, tensor<8x2xi32> -> tensor<8x16xf32>
// CHECK: return %[[DX]]
// tamoe.vjp: a call of the forward, then one of the backward with the same
// arguments, the saved values and the cotangents.
// CHECK-LABEL: func.func @use_dispatch
// CHECK-SAME: (%[[X:.*]]: tensor<8x16xf32>, %[[IDS:.*]]: tensor<8x2xi32>, %[[D:.*]]: tensor<16x16xf32>)
// CHECK: %[[F:.*]]:2 = call @dispatch_forward(%[[X]], %[[IDS]])
// CHECK: %[[B:.*]] = call @dispatch_backward(%[[X]], %[[IDS]], %[[F]]#1, %[[D]])
// CHECK: return %[[F]]#0, %[[B]]
func.func @dispatch(%x: tensor<8x16xf32>, %ids: tensor<8x2xi32>) -> tensor<16x16xf32> {
  %rows, %counts, %pos, %dropped = tamoe.dispatch %x, %ids capacity 2 : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<8xi32>, tensor<8x2xi32>, tensor<i64>
  return %rows : tensor<16x16xf32>
}
func.func @use_dispatch(%x: tensor<8x16xf32>, %ids: tensor<8x2xi32>, %d: tensor<16x16xf32>) -> (tensor<16x16xf32>, tensor<8x16xf32>) {
  %rows, %dx = tamoe.vjp @dispatch(%x, %ids) cotangents(%d) : (tensor<8x16xf32>, tensor<8x2xi32>), (tensor<16x16xf32>) -> (tensor<16x16xf32>), (tensor<8x16xf32>)
  return %rows, %dx : tensor<16x16xf32>, tensor<8x16xf32>
}

// -----

// all_to_all: the reverse exchange over the same group and level, sending
// back by the counts that were received; regroup: the reverse regroup. It
// receives into the forward's static send buffer, so it names no counts.
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @exchange_backward
  // CHECK-SAME: %[[GC:[^:]*]]: tensor<2x2x3xi32> {tamoe.saved = "tamoe.regroup regrouped_counts"}, %[[RC:[^:]*]]: tensor<2x2x3xi32> {tamoe.saved = "tamoe.all_to_all recv_counts"}, %[[D:.*]]: tensor<24x8xf32>)
  // CHECK: %[[BACK:.*]], %{{.*}} = tamoe.regroup %[[D]], %[[GC]] : tensor<24x8xf32>, tensor<2x2x3xi32> -> tensor<?x8xf32>, tensor<2x2x3xi32>
  // CHECK: %[[SENT:.*]], %{{.*}} = tamoe.all_to_all %[[BACK]], %[[RC]] on @ep axes = [1] level "node" : tensor<?x8xf32>, tensor<2x2x3xi32> -> tensor<24x8xf32>
  // CHECK: return %[[SENT]]
  func.func @exchange(%rows: tensor<24x8xf32>, %counts: tensor<2x2x3xi32>) -> tensor<24x8xf32> {
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x8xf32>, tensor<2x2x3xi32> -> tensor<?x8xf32>
    %regrouped, %regrouped_counts = tamoe.regroup %recv, %recv_counts : tensor<?x8xf32>, tensor<2x2x3xi32> -> tensor<24x8xf32>, tensor<2x2x3xi32>
    return %regrouped : tensor<24x8xf32>
  }
  func.func @use_exchange(%rows: tensor<24x8xf32>, %counts: tensor<2x2x3xi32>, %d: tensor<24x8xf32>) {
    %r, %dr = tamoe.vjp @exchange(%rows, %counts) cotangents(%d) : (tensor<24x8xf32>, tensor<2x2x3xi32>), (tensor<24x8xf32>) -> (tensor<24x8xf32>), (tensor<24x8xf32>)
    return
  }
}

// -----

// Two stages: the reverse of the second receives into a buffer of dynamic
// size (the first's received rows), so it expects what the second sent,
// the first's received counts, and its receive is sized on the rank.
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @stages_backward
  // CHECK-SAME: %[[C1:[^:]*]]: tensor<2x2x3xi32> {tamoe.saved = "tamoe.all_to_all recv_counts"}, %[[C2:[^:]*]]: tensor<2x2x3xi32> {tamoe.saved = "tamoe.all_to_all recv_counts"}, %[[D:.*]]: tensor<24x8xf32>)
  // CHECK: %[[B2:.*]], %{{.*}} = tamoe.all_to_all %[[D]], %[[C2]] expecting %[[C1]] on @ep axes = [0] level "cluster" : tensor<24x8xf32>, tensor<2x2x3xi32> -> tensor<?x8xf32>
  // CHECK: %[[B1:.*]], %{{.*}} = tamoe.all_to_all %[[B2]], %[[C1]] on @ep axes = [1] level "node" : tensor<?x8xf32>, tensor<2x2x3xi32> -> tensor<24x8xf32>
  // CHECK: return %[[B1]]
  func.func @stages(%rows: tensor<24x8xf32>, %counts: tensor<2x2x3xi32>) -> tensor<24x8xf32> {
    %r1, %c1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x8xf32>, tensor<2x2x3xi32> -> tensor<?x8xf32>
    %r2, %c2 = tamoe.all_to_all %r1, %c1 on @ep axes = [0] level "cluster" : tensor<?x8xf32>, tensor<2x2x3xi32> -> tensor<24x8xf32>
    return %r2 : tensor<24x8xf32>
  }
  func.func @use_stages(%rows: tensor<24x8xf32>, %counts: tensor<2x2x3xi32>, %d: tensor<24x8xf32>) {
    %r, %dr = tamoe.vjp @stages(%rows, %counts) cotangents(%d) : (tensor<24x8xf32>, tensor<2x2x3xi32>), (tensor<24x8xf32>) -> (tensor<24x8xf32>), (tensor<24x8xf32>)
    return
  }
}

// -----

// grouped_matmul: one tamoe.grouped_matmul_grad gives the rows' and the
// weights' gradients; combine: tamoe.combine_grad gives the expert outputs'
// and the combine weights' gradients.
// CHECK-LABEL: func.func @experts_backward
// CHECK-SAME: (%[[ROWS:[^:]*]]: tensor<?x8xf32>, %[[COUNTS:[^:]*]]: tensor<4x2xi32>, %[[W:[^:]*]]: tensor<2x8x16xf32>, %[[POS:[^:]*]]: tensor<6x2xi32>, %[[CW:[^:]*]]: tensor<6x2xf32>, %[[H:[^:]*]]: tensor<?x16xf32> {tamoe.saved = "tamoe.grouped_matmul result #0"}, %[[D:.*]]: tensor<6x16xf32>)
// CHECK: %[[DH:.*]], %[[DCW:.*]] = tamoe.combine_grad %[[D]], %[[H]], %[[POS]] weights %[[CW]]
// CHECK: %[[DROWS:.*]], %[[DW:.*]] = tamoe.grouped_matmul_grad %[[ROWS]], %[[COUNTS]], %[[W]], %[[DH]]
// CHECK: return %[[DROWS]], %[[DW]], %[[DCW]]
// REMARK: remark: @experts_forward saves 1 values for @experts_backward: 0 bytes, plus 64 bytes per row of 1 tensors whose rows are known at run time
func.func @experts(%rows: tensor<?x8xf32>, %counts: tensor<4x2xi32>, %w: tensor<2x8x16xf32>, %pos: tensor<6x2xi32>, %cw: tensor<6x2xf32>) -> tensor<6x16xf32> {
  %h = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x8xf32>, tensor<4x2xi32>, tensor<2x8x16xf32> -> tensor<?x16xf32>
  %out = tamoe.combine %h, %pos, %cw : tensor<?x16xf32>, tensor<6x2xi32>, tensor<6x2xf32> -> tensor<6x16xf32>
  return %out : tensor<6x16xf32>
}
func.func @use_experts(%rows: tensor<?x8xf32>, %counts: tensor<4x2xi32>, %w: tensor<2x8x16xf32>, %pos: tensor<6x2xi32>, %cw: tensor<6x2xf32>, %d: tensor<6x16xf32>) {
  %out, %g0, %g1, %g2 = tamoe.vjp @experts(%rows, %counts, %w, %pos, %cw) cotangents(%d) : (tensor<?x8xf32>, tensor<4x2xi32>, tensor<2x8x16xf32>, tensor<6x2xi32>, tensor<6x2xf32>), (tensor<6x16xf32>) -> (tensor<6x16xf32>), (tensor<?x8xf32>, tensor<2x8x16xf32>, tensor<6x2xf32>)
  return
}

// -----

// aux_loss: the gradient of the router probabilities needs the ids, the
// dispatched positions and this rank's weights, not the probabilities. The
// weights (a row of a constant table at this rank's index) are rebuilt in
// the backward rather than saved.
module {
  shard.grid @ep(shape = 2)
  // CHECK-LABEL: func.func @loss_backward
  // CHECK-SAME: (%{{[^:]*}}: tensor<8x4xf32>, %[[IDS:[^:]*]]: tensor<8x2xi32>, %[[POS:[^:]*]]: tensor<8x2xi32>, %[[DL:[^:]*]]: tensor<f32>) -> tensor<8x4xf32>
  // CHECK: %[[TABLE:.*]] = arith.constant dense<
  // CHECK: %[[RANK:.*]] = shard.process_linear_index on @ep
  // CHECK: %[[ROW:.*]] = tensor.extract_slice %[[TABLE]][%[[RANK]], 0]
  // CHECK: %[[DP:.*]] = tamoe.aux_loss_grad topology %[[IDS]], %[[DL]] weights %[[ROW]] dispatched %[[POS]] : tensor<8x2xi32>, tensor<f32>, tensor<4xf32>, tensor<8x2xi32> -> tensor<8x4xf32>
  // CHECK: return %[[DP]]
  // REMARK: remark: @loss_forward saves 0 values for @loss_backward: 0 bytes
  func.func @loss(%probs: tensor<8x4xf32>, %ids: tensor<8x2xi32>, %pos: tensor<8x2xi32>) -> tensor<f32> {
    %rank = shard.process_linear_index on @ep : index
    %table = arith.constant dense<[[0.5, 0.5, 2.0, 2.0], [2.0, 2.0, 0.5, 0.5]]> : tensor<2x4xf32>
    %row = tensor.extract_slice %table[%rank, 0] [1, 4] [1, 1] : tensor<2x4xf32> to tensor<4xf32>
    %l = tamoe.aux_loss topology %probs, %ids weights %row dispatched %pos : tensor<8x4xf32>, tensor<8x2xi32>, tensor<4xf32>, tensor<8x2xi32> -> tensor<f32>
    return %l : tensor<f32>
  }
  func.func @use_loss(%probs: tensor<8x4xf32>, %ids: tensor<8x2xi32>, %pos: tensor<8x2xi32>, %d: tensor<f32>) {
    %l, %dp = tamoe.vjp @loss(%probs, %ids, %pos) cotangents(%d) : (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xi32>), (tensor<f32>) -> (tensor<f32>), (tensor<8x4xf32>)
    return
  }
}

// -----

// aux_loss with weights that are an argument: L is linear in them, and their
// gradient is the column sum of probs times the switch loss's d_probs
// (before, the rule gave the weights none and the backward returned zeros).
module {
  // CHECK-LABEL: func.func @weighted_loss_backward
  // CHECK-SAME: (%[[PROBS:[^:]*]]: tensor<8x4xf32>, %[[IDS:[^:]*]]: tensor<8x2xi32>, %[[W:[^:]*]]: tensor<4xf32>, %[[DL:[^:]*]]: tensor<f32>) -> (tensor<8x4xf32>, tensor<4xf32>)
  // CHECK: %[[DP:.*]] = tamoe.aux_loss_grad topology %[[IDS]], %[[DL]] weights %[[W]] :
  // CHECK: %[[DS:.*]] = tamoe.aux_loss_grad switch %[[IDS]], %[[DL]] :
  // CHECK: %[[ZEROS:.*]] = arith.constant dense<0.000000e+00> : tensor<4xf32>
  // CHECK: %[[DW:.*]] = linalg.generic {{.*}}iterator_types = ["reduction", "parallel"]{{.*}} ins(%[[PROBS]], %[[DS]] : tensor<8x4xf32>, tensor<8x4xf32>) outs(%[[ZEROS]] : tensor<4xf32>)
  // CHECK: arith.mulf
  // CHECK: arith.addf
  // CHECK: return %[[DP]], %[[DW]]
  // REMARK: remark: @weighted_loss_forward saves 0 values for @weighted_loss_backward: 0 bytes
  func.func @weighted_loss(%probs: tensor<8x4xf32>, %ids: tensor<8x2xi32>, %w: tensor<4xf32>) -> tensor<f32> {
    %l = tamoe.aux_loss topology %probs, %ids weights %w : tensor<8x4xf32>, tensor<8x2xi32>, tensor<4xf32> -> tensor<f32>
    return %l : tensor<f32>
  }
  func.func @use_weighted_loss(%probs: tensor<8x4xf32>, %ids: tensor<8x2xi32>, %w: tensor<4xf32>, %d: tensor<f32>) {
    %l, %dp, %dw = tamoe.vjp @weighted_loss(%probs, %ids, %w) cotangents(%d) : (tensor<8x4xf32>, tensor<8x2xi32>, tensor<4xf32>), (tensor<f32>) -> (tensor<f32>), (tensor<8x4xf32>, tensor<4xf32>)
    return
  }
}

// -----

// De-duplication: the relay's expansion becomes a reduction at the relay
// (tamoe.dedup_expand_grad), the pack a sum onto the tokens
// (tamoe.dedup_pack_grad), each with the forward's parameters.
// CHECK-LABEL: func.func @dedup_backward
// CHECK-SAME: (%{{[^:]*}}: tensor<8x16xf32>, %[[IDS:[^:]*]]: tensor<8x2xi32>, %[[POS:[^:]*]]: tensor<8x2xi32>, %[[NC:[^:]*]]: tensor<2xi32> {tamoe.saved = "tamoe.dedup_pack node_counts"}, %[[ROUTES:[^:]*]]: tensor<16x2xi32> {tamoe.saved = "tamoe.dedup_pack routes"}, %[[D:.*]]: tensor<?x16xf32>)
// CHECK: %[[DU:.*]] = tamoe.dedup_expand_grad %[[D]], %[[ROUTES]], %[[NC]] experts_per_rank 1 ranks_per_node 2 : tensor<?x16xf32>, tensor<16x2xi32>, tensor<2xi32> -> tensor<16x16xf32>
// CHECK: %[[DX:.*]] = tamoe.dedup_pack_grad %[[DU]], %[[IDS]], %[[POS]] experts_per_node 2 nodes 2 : tensor<16x16xf32>, tensor<8x2xi32>, tensor<8x2xi32> -> tensor<8x16xf32>
// CHECK: return %[[DX]]
func.func @dedup(%x: tensor<8x16xf32>, %ids: tensor<8x2xi32>, %pos: tensor<8x2xi32>) -> tensor<?x16xf32> {
  %unique, %routes, %node_counts = tamoe.dedup_pack %x, %ids, %pos experts_per_node 2 : tensor<8x16xf32>, tensor<8x2xi32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<16x2xi32>, tensor<2xi32>
  %rows, %counts = tamoe.dedup_expand %unique, %routes, %node_counts experts_per_rank 1 : tensor<16x16xf32>, tensor<16x2xi32>, tensor<2xi32> -> tensor<?x16xf32>, tensor<2x2x1xi32>
  return %rows : tensor<?x16xf32>
}
func.func @use_dedup(%x: tensor<8x16xf32>, %ids: tensor<8x2xi32>, %pos: tensor<8x2xi32>, %d: tensor<?x16xf32>) {
  %rows, %dx = tamoe.vjp @dedup(%x, %ids, %pos) cotangents(%d) : (tensor<8x16xf32>, tensor<8x2xi32>, tensor<8x2xi32>), (tensor<?x16xf32>) -> (tensor<?x16xf32>), (tensor<8x16xf32>)
  return
}

// -----

// all_reduce: the same reduction of the gradient.
module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @reduce_backward
  // CHECK: %[[R:.*]] = tamoe.all_reduce %{{.*}} on @ep axes = [1] average : tensor<4x4xf32>
  // CHECK: return %[[R]]
  func.func @reduce(%g: tensor<4x4xf32>) -> tensor<4x4xf32> {
    %r = tamoe.all_reduce %g on @ep axes = [1] average : tensor<4x4xf32>
    return %r : tensor<4x4xf32>
  }
  func.func @use_reduce(%g: tensor<4x4xf32>, %d: tensor<4x4xf32>) {
    %r, %dg = tamoe.vjp @reduce(%g) cotangents(%d) : (tensor<4x4xf32>), (tensor<4x4xf32>) -> (tensor<4x4xf32>), (tensor<4x4xf32>)
    return
  }
}

// -----

// linalg.matmul: dA = dC B^T and dB = A^T dC, matmuls that read one operand
// transposed, each into zeros; the zero init gets no gradient.
// CHECK-DAG: #[[M:.*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG: #[[NT:.*]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG: #[[OUT:.*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-DAG: #[[KT:.*]] = affine_map<(d0, d1, d2) -> (d2, d0)>
// CHECK-DAG: #[[KN:.*]] = affine_map<(d0, d1, d2) -> (d2, d1)>
// CHECK-LABEL: func.func @matmul_backward
// CHECK-SAME: (%[[A:[^:]*]]: tensor<4x8xf32>, %[[B:[^:]*]]: tensor<8x6xf32>, %[[D:.*]]: tensor<4x6xf32>) -> (tensor<4x8xf32>, tensor<8x6xf32>)
// CHECK: %[[Z1:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%{{.*}} : tensor<4x8xf32>)
// CHECK: %[[DA:.*]] = linalg.matmul indexing_maps = [#[[M]], #[[NT]], #[[OUT]]] ins(%[[D]], %[[B]] : tensor<4x6xf32>, tensor<8x6xf32>) outs(%[[Z1]] : tensor<4x8xf32>)
// CHECK: %[[Z2:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%{{.*}} : tensor<8x6xf32>)
// CHECK: %[[DB:.*]] = linalg.matmul indexing_maps = [#[[KT]], #[[KN]], #[[OUT]]] ins(%[[A]], %[[D]] : tensor<4x8xf32>, tensor<4x6xf32>) outs(%[[Z2]] : tensor<8x6xf32>)
// CHECK: return %[[DA]], %[[DB]]
func.func @matmul(%a: tensor<4x8xf32>, %b: tensor<8x6xf32>) -> tensor<4x6xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x6xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4x6xf32>) -> tensor<4x6xf32>
  %c = linalg.matmul ins(%a, %b : tensor<4x8xf32>, tensor<8x6xf32>) outs(%f : tensor<4x6xf32>) -> tensor<4x6xf32>
  return %c : tensor<4x6xf32>
}
func.func @use_matmul(%a: tensor<4x8xf32>, %b: tensor<8x6xf32>, %d: tensor<4x6xf32>) {
  %c, %da, %db = tamoe.vjp @matmul(%a, %b) cotangents(%d) : (tensor<4x8xf32>, tensor<8x6xf32>), (tensor<4x6xf32>) -> (tensor<4x6xf32>), (tensor<4x8xf32>, tensor<8x6xf32>)
  return
}

// -----

// Elementwise: relu's gradient keeps d where the (saved) output is positive;
// mul multiplies by the other operand; sub negates for its second operand;
// the two uses of %x sum their gradients.
#map = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-LABEL: func.func @elementwise_backward
// CHECK-SAME: (%[[X:[^:]*]]: tensor<4x8xf32>, %[[Y:[^:]*]]: tensor<4x8xf32>, %[[R:[^:]*]]: tensor<4x8xf32> {tamoe.saved = "linalg.generic result #0"}, %[[D:.*]]: tensor<4x8xf32>)
// CHECK: %[[NEG:.*]] = linalg.generic {{.*}} ins(%[[D]] : tensor<4x8xf32>)
// CHECK: arith.negf
// CHECK: %[[DR:.*]] = linalg.mul ins(%[[D]], %[[Y]] : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: %[[DY:.*]] = linalg.mul ins(%[[R]], %[[D]] : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: %[[DX1:.*]] = linalg.generic {{.*}} ins(%[[R]], %[[DR]] : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: arith.cmpf ogt
// CHECK: arith.select
// CHECK: %[[DX:.*]] = linalg.add ins(%[[NEG]], %[[DX1]] : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: return %[[DX]], %[[DY]]
func.func @elementwise(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %m = arith.maximumf %in, %zero : f32
    linalg.yield %m : f32
  } -> tensor<4x8xf32>
  %p = linalg.mul ins(%r, %y : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) -> tensor<4x8xf32>
  %s = linalg.sub ins(%p, %x : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) -> tensor<4x8xf32>
  return %s : tensor<4x8xf32>
}
func.func @use_elementwise(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>, %d: tensor<4x8xf32>) {
  %s, %dx, %dy = tamoe.vjp @elementwise(%x, %y) cotangents(%d) : (tensor<4x8xf32>, tensor<4x8xf32>), (tensor<4x8xf32>) -> (tensor<4x8xf32>), (tensor<4x8xf32>, tensor<4x8xf32>)
  return
}

// -----

// A loss as tamoe-inject-topology-aux-loss adds one (arith on 0-d tensors),
// a mean squared error as a sum (linalg.reduce, whose gradient is a
// linalg.broadcast), and reshapes and slices, whose gradients move the
// gradient back. An argument the results do not depend on gets zeros.
// CHECK-LABEL: func.func @loss_backward
// CHECK-SAME: %[[DLOSS:[^:]*]]: tensor<f32>) -> (tensor<2x8xf32>, tensor<f32>, tensor<4xf32>)
// CHECK: %[[SCALED:.*]] = linalg.mul ins(%[[DLOSS]], %{{.*}} : tensor<f32>, tensor<f32>)
// CHECK: %[[SPREAD:.*]] = linalg.broadcast ins(%[[DLOSS]] : tensor<f32>) outs(%{{.*}} : tensor<16xf32>) dimensions = [0]
// CHECK: linalg.mul ins(%[[SPREAD]], %[[PART:.*]] : tensor<16xf32>, tensor<16xf32>)
// CHECK: linalg.mul ins(%[[PART]], %[[SPREAD]] : tensor<16xf32>, tensor<16xf32>)
// CHECK: %[[SQUARE:.*]] = linalg.add
// CHECK: %[[WIDE:.*]] = tensor.insert_slice %[[SQUARE]] into %{{.*}}[0] [16] [1] : tensor<16xf32> into tensor<20xf32>
// CHECK: %[[FLAT:.*]] = tensor.extract_slice %[[WIDE]][0] [16] [1] : tensor<20xf32> to tensor<16xf32>
// CHECK: %[[DX:.*]] = tensor.expand_shape %[[FLAT]] {{\[\[}}0, 1]] output_shape [2, 8] : tensor<16xf32> into tensor<2x8xf32>
// CHECK: %[[ZEROS:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%{{.*}} : tensor<4xf32>)
// CHECK: return %[[DX]], %[[SCALED]], %[[ZEROS]]
func.func @loss(%x: tensor<2x8xf32>, %aux: tensor<f32>, %unused: tensor<4xf32>) -> tensor<f32> {
  %flat = tensor.collapse_shape %x [[0, 1]] : tensor<2x8xf32> into tensor<16xf32>
  %pad = arith.constant dense<0.0> : tensor<4xf32>
  %e = tensor.empty() : tensor<20xf32>
  %wide = tensor.insert_slice %flat into %e[0] [16] [1] : tensor<16xf32> into tensor<20xf32>
  %part = tensor.extract_slice %wide[0] [16] [1] : tensor<20xf32> to tensor<16xf32>
  %sq = linalg.mul ins(%part, %part : tensor<16xf32>, tensor<16xf32>) outs(%flat : tensor<16xf32>) -> tensor<16xf32>
  %zero = arith.constant 0.0 : f32
  %acc = tensor.empty() : tensor<f32>
  %init = linalg.fill ins(%zero : f32) outs(%acc : tensor<f32>) -> tensor<f32>
  %sum = linalg.reduce ins(%sq : tensor<16xf32>) outs(%init : tensor<f32>) dimensions = [0]
    (%in: f32, %out: f32) {
      %a = arith.addf %in, %out : f32
      linalg.yield %a : f32
    }
  %c = arith.constant dense<0.01> : tensor<f32>
  %scaled = arith.mulf %aux, %c : tensor<f32>
  %total = arith.addf %sum, %scaled : tensor<f32>
  return %total : tensor<f32>
}
func.func @use_loss(%x: tensor<2x8xf32>, %aux: tensor<f32>, %u: tensor<4xf32>, %d: tensor<f32>) {
  %l, %dx, %da, %du = tamoe.vjp @loss(%x, %aux, %u) cotangents(%d) : (tensor<2x8xf32>, tensor<f32>, tensor<4xf32>), (tensor<f32>) -> (tensor<f32>), (tensor<2x8xf32>, tensor<f32>, tensor<4xf32>)
  return
}


// -----

// silu, x / (1 + exp(-x)) (SwiGLU's gate): its gradient is
// d * s * (1 + x * (1 - s)) with s the sigmoid of the (saved) input, one
// linalg.generic that the device-resident lowering runs as SILU_GRAD.
#map = affine_map<(d0, d1) -> (d0, d1)>
// CHECK-LABEL: func.func @silu_backward
// CHECK-SAME: (%[[X:[^:]*]]: tensor<4x8xf32>, %[[D:.*]]: tensor<4x8xf32>)
// CHECK: linalg.generic {{.*}} ins(%[[X]], %[[D]] : tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK: ^bb0(%[[IN:.*]]: f32, %[[G:.*]]: f32, %{{.*}}: f32):
// CHECK: %[[NEG:.*]] = arith.negf %[[IN]]
// CHECK: %[[EXP:.*]] = math.exp %[[NEG]]
// CHECK: %[[DEN:.*]] = arith.addf %[[EXP]], %{{.*}}
// CHECK: %[[S:.*]] = arith.divf %{{.*}}, %[[DEN]]
// CHECK: %[[T:.*]] = arith.subf %{{.*}}, %[[S]]
// CHECK: %[[U:.*]] = arith.mulf %[[IN]], %[[T]]
// CHECK: %[[V:.*]] = arith.addf %{{.*}}, %[[U]]
// CHECK: %[[W:.*]] = arith.mulf %[[S]], %[[V]]
// CHECK: arith.mulf %[[G]], %[[W]]
func.func @silu(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %one = arith.constant 1.0 : f32
  %e = tensor.empty() : tensor<4x8xf32>
  %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
  ^bb0(%in: f32, %out: f32):
    %n = arith.negf %in : f32
    %p = math.exp %n : f32
    %d = arith.addf %one, %p : f32
    %s = arith.divf %in, %d : f32
    linalg.yield %s : f32
  } -> tensor<4x8xf32>
  return %r : tensor<4x8xf32>
}
func.func @use_silu(%x: tensor<4x8xf32>, %d: tensor<4x8xf32>) {
  %r, %dx = tamoe.vjp @silu(%x) cotangents(%d) : (tensor<4x8xf32>), (tensor<4x8xf32>) -> (tensor<4x8xf32>), (tensor<4x8xf32>)
  return
}

// -----

// Fan-out of chunk gradients: %a's gradient from its own chunk and the one
// through the add merge into one unchunk, while %b keeps the add's (one
// gradient given to two operands: the merge must not erase it).
// CHECK-LABEL: func.func @chunk_fanout_backward
// CHECK-SAME: %[[COUNTS:[^:]*]]: tensor<8xi32>, %[[D0:[^:]*]]: tensor<16x8xf32>, %[[D1:[^:]*]]: tensor<16x8xf32>)
// CHECK: %[[ZEROS:.*]] = linalg.fill
// CHECK: %[[DB:.*]] = tamoe.unchunk %[[D0]], %[[ZEROS]] counts %[[COUNTS]]
// CHECK-NOT: tamoe.unchunk
// CHECK: %[[DA:.*]] = tamoe.unchunk %[[D0]], %[[D1]] counts %[[COUNTS]]
// CHECK-NOT: tamoe.unchunk
// CHECK: return %[[DA]], %[[DB]]
func.func @chunk_fanout(%a: tensor<32x8xf32>, %b: tensor<32x8xf32>, %counts: tensor<8xi32>) -> (tensor<16x8xf32>, tensor<16x8xf32>) {
  %p1, %c1 = tamoe.chunk %a, %counts chunk 1 of 2 : tensor<32x8xf32>, tensor<8xi32> -> tensor<16x8xf32>
  %rows = arith.addf %a, %b : tensor<32x8xf32>
  %p0, %c0 = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x8xf32>, tensor<8xi32> -> tensor<16x8xf32>
  return %p0, %p1 : tensor<16x8xf32>, tensor<16x8xf32>
}
func.func @use_chunk_fanout(%a: tensor<32x8xf32>, %b: tensor<32x8xf32>, %counts: tensor<8xi32>, %d0: tensor<16x8xf32>, %d1: tensor<16x8xf32>) {
  %p0, %p1, %da, %db = tamoe.vjp @chunk_fanout(%a, %b, %counts) cotangents(%d0, %d1) : (tensor<32x8xf32>, tensor<32x8xf32>, tensor<8xi32>), (tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>), (tensor<32x8xf32>, tensor<32x8xf32>)
  return
}

// -----

// The same with the chunks in the other order: %a's gradient is first the
// add's, which %b also holds when %a's own chunk's merges into it.
// CHECK-LABEL: func.func @chunk_fanout_after_backward
// CHECK-SAME: %[[COUNTS:[^:]*]]: tensor<8xi32>, %[[D0:[^:]*]]: tensor<16x8xf32>, %[[D1:[^:]*]]: tensor<16x8xf32>)
// CHECK: %[[ZEROS:.*]] = linalg.fill
// CHECK: %[[DB:.*]] = tamoe.unchunk %[[D0]], %[[ZEROS]] counts %[[COUNTS]]
// CHECK-NOT: tamoe.unchunk
// CHECK: %[[DA:.*]] = tamoe.unchunk %[[D0]], %[[D1]] counts %[[COUNTS]]
// CHECK-NOT: tamoe.unchunk
// CHECK: return %[[DA]], %[[DB]]
func.func @chunk_fanout_after(%a: tensor<32x8xf32>, %b: tensor<32x8xf32>, %counts: tensor<8xi32>) -> (tensor<16x8xf32>, tensor<16x8xf32>) {
  %rows = arith.addf %a, %b : tensor<32x8xf32>
  %p0, %c0 = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x8xf32>, tensor<8xi32> -> tensor<16x8xf32>
  %p1, %c1 = tamoe.chunk %a, %counts chunk 1 of 2 : tensor<32x8xf32>, tensor<8xi32> -> tensor<16x8xf32>
  return %p0, %p1 : tensor<16x8xf32>, tensor<16x8xf32>
}
func.func @use_chunk_fanout_after(%a: tensor<32x8xf32>, %b: tensor<32x8xf32>, %counts: tensor<8xi32>, %d0: tensor<16x8xf32>, %d1: tensor<16x8xf32>) {
  %p0, %p1, %da, %db = tamoe.vjp @chunk_fanout_after(%a, %b, %counts) cotangents(%d0, %d1) : (tensor<32x8xf32>, tensor<32x8xf32>, tensor<8xi32>), (tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>), (tensor<32x8xf32>, tensor<32x8xf32>)
  return
}
