// RUN: tamoe-opt %s -split-input-file --tamoe-inject-topology-aux-loss -verify-diagnostics | FileCheck %s
// Idempotent: a second run changes nothing more.
// RUN: tamoe-opt %s -split-input-file --tamoe-inject-topology-aux-loss 2>/dev/null > %t.once
// RUN: tamoe-opt %t.once -split-input-file --tamoe-inject-topology-aux-loss 2>/dev/null | diff %t.once -
// Errors: tamoe-inject-topology-aux-loss-errors.mlir.

// 2 nodes x 2 ranks, 8 experts (2 per rank), a TA-MoE plan: 10/22 for the
// sender and its node peer, 1/22 for each remote rank.
#plan = #tamoe.dispatch_plan<tamoe, shares = [0.45454545454545453, 0.45454545454545453, 0.045454545454545456], predicted_us = 39.2>
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @rewrite_switch_loss
  // CHECK-SAME: (%[[TOKENS:.*]]: tensor<16x8xf32>, %[[LOGITS:.*]]: tensor<16x8xf32>)
  func.func @rewrite_switch_loss(%tokens: tensor<16x8xf32>, %logits: tensor<16x8xf32>) -> (tensor<?x8xf32>, tensor<f32>) {
    // CHECK: %[[IDS:.*]], %{{.*}}, %[[PROBS:.*]] = tamoe.gate
    %ids, %w, %p = tamoe.gate %logits top 2 softmax {plan = #plan} : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    // The SPMD program selects this rank's weights at run time: its index in
    // the group, row-major over the exchange's grid axes.
    // CHECK: %[[INDEX:.*]]:2 = shard.process_multi_index on @ep axes = [0, 1] : index, index
    // CHECK: %[[SCALED:.*]] = arith.muli %[[INDEX]]#0, %{{.*}} : index
    // CHECK: %[[RANK:.*]] = arith.addi %[[SCALED]], %[[INDEX]]#1 : index
    // w = 1 / (E q) with q = share / 2 experts per rank: 0.55 near, 5.5 remote.
    // Row RANK of a [ranks, experts] table: 2 / (8 * 10/22) = 0.55 for the
    // experts of this rank and its node peer, 2 / (8 * 1/22) = 5.5 remote.
    // CHECK: %[[TABLE:.*]] = arith.constant dense<{{\[}}[5.500000e-01, 5.500000e-01, 5.500000e-01, 5.500000e-01, 5.500000e+00, 5.500000e+00, 5.500000e+00, 5.500000e+00], [5.500000e-01, 5.500000e-01, 5.500000e-01, 5.500000e-01, 5.500000e+00, 5.500000e+00, 5.500000e+00, 5.500000e+00], [5.500000e+00, 5.500000e+00, 5.500000e+00, 5.500000e+00, 5.500000e-01, 5.500000e-01, 5.500000e-01, 5.500000e-01], [5.500000e+00, 5.500000e+00, 5.500000e+00, 5.500000e+00, 5.500000e-01, 5.500000e-01, 5.500000e-01, 5.500000e-01]]> : tensor<4x8xf32>
    // CHECK: %[[WEIGHTS:.*]] = tensor.extract_slice %[[TABLE]][%[[RANK]], 0] [1, 8] [1, 1] : tensor<4x8xf32> to tensor<8xf32>
    // CHECK: tamoe.dispatch
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<32x8xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // CHECK: %[[LOSS:.*]] = tamoe.aux_loss topology %[[PROBS]], %[[IDS]] weights %[[WEIGHTS]]
    %per_rank = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %per_rank on @ep : tensor<32x8xf32>, tensor<4x2xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    // CHECK: return %{{.*}}, %[[LOSS]]
    return %recv, %loss : tensor<?x8xf32>, tensor<f32>
  }
}

// -----

// A level of fanout 1 puts no rank at its distance: its share may be 0 (box
// with rho = 0 plans one), as no expert takes its weight. 2 experts per
// rank, shares [0.5, 0, 1/2]: 2 / (4 * 0.5) = 1 for this rank's own, and
// 2 / (4 * 0.5) = 1 for the other rank's.
#box = #tamoe.dispatch_plan<box, shares = [0.5, 0.0, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"lone-nodes", [<"node", fanout = 1, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x1)
  // CHECK-LABEL: func.func @empty_distance
  func.func @empty_distance(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 2 softmax {plan = #box} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #box} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<32x8xf32>, tensor<4xi32>, tensor<16x2xi32>, tensor<i64>
    // CHECK: arith.constant dense<1.000000e+00> : tensor<2x4xf32>
    // CHECK: tamoe.aux_loss topology
    %per_rank = tensor.expand_shape %counts [[0, 1]] output_shape [2, 2] : tensor<4xi32> into tensor<2x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %per_rank on @ep : tensor<32x8xf32>, tensor<2x2xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x4xf32>, tensor<16x2xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// With a uniform plan every weight is 1: the topology loss is the switch loss.
#uniform = #tamoe.dispatch_plan<uniform, shares = [0.25, 0.25, 0.25], predicted_us = 121.0>
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @uniform_plan
  func.func @uniform_plan(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 2 softmax {plan = #uniform} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #uniform} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<32x8xf32>, tensor<4xi32>, tensor<16x2xi32>, tensor<i64>
    // CHECK: arith.constant dense<1.000000e+00> : tensor<4x4xf32>
    // CHECK: tamoe.aux_loss topology
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x8xf32>, tensor<4xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x4xf32>, tensor<16x2xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// A capacity may drop assignments: the loss counts only the dispatched ones
// (dropped ids become -1), and a layer without a loss gets one, added to the
// function's scalar loss result.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.25, 0.25, 0.25], predicted_us = 121.0>
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @insert_into_loss
  // CHECK-SAME: -> (tensor<?x8xf32>, tensor<f32>)
  func.func @insert_into_loss(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>, %task_loss: tensor<f32>) -> (tensor<?x8xf32>, tensor<f32>) {
    %ids, %w, %p = tamoe.gate %logits top 2 softmax {plan = #plan} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>
    // CHECK: %[[IDS:.*]], %{{.*}}, %[[PROBS:.*]] = tamoe.gate
    // CHECK: %[[WEIGHTS:.*]] = tensor.extract_slice
    // CHECK: %{{.*}}, %{{.*}}, %[[POS:.*]], %{{.*}} = tamoe.dispatch
    // expected-remark @+1 {{inserted a topology loss, scaled by 0.01, into result #1}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids capacity 3 {plan = #plan} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<12x8xf32>, tensor<4xi32>, tensor<16x2xi32>, tensor<i64>
    // With a capacity the loss counts what was dispatched: the positions.
    // CHECK: %[[LOSS:.*]] = tamoe.aux_loss topology %[[PROBS]], %[[IDS]] weights %[[WEIGHTS]] dispatched %[[POS]]
    // CHECK: %[[COEFFICIENT:.*]] = arith.constant dense<0.00999999977> : tensor<f32>
    // CHECK: %[[SCALED:.*]] = arith.mulf %[[LOSS]], %[[COEFFICIENT]] : tensor<f32>
    // CHECK: %[[TOTAL:.*]] = arith.addf %{{.*}}, %[[SCALED]] : tensor<f32>
    // CHECK: return %{{.*}}, %[[TOTAL]]
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<12x8xf32>, tensor<4xi32> -> tensor<?x8xf32>
    return %recv, %task_loss : tensor<?x8xf32>, tensor<f32>
  }
}

// -----

// Without a scalar result the loss becomes a new one.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  // CHECK-LABEL: func.func @new_result
  // CHECK-SAME: -> (tensor<?x8xf32>, tensor<f32>)
  func.func @new_result(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) -> tensor<?x8xf32> {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-remark @+1 {{inserted a topology loss, scaled by 0.01, as new result #1}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    // CHECK: %[[LOSS:.*]] = tamoe.aux_loss topology
    // CHECK: %[[SCALED:.*]] = arith.mulf %[[LOSS]]
    // CHECK: return %{{.*}}, %[[SCALED]] : tensor<?x8xf32>, tensor<f32>
    return %recv : tensor<?x8xf32>
  }
}

// -----

// A switch loss after a dispatch with a capacity: it now counts only the
// dispatched assignments.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.25, 0.25, 0.25], predicted_us = 121.0>
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @existing_loss_with_capacity
  func.func @existing_loss_with_capacity(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 2 softmax {plan = #plan} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>
    // CHECK: %[[WEIGHTS:.*]] = tensor.extract_slice
    // CHECK: %{{.*}}, %{{.*}}, %[[POS:.*]], %{{.*}} = tamoe.dispatch
    // CHECK-NOT: linalg.generic
    // CHECK: tamoe.aux_loss topology %{{.*}}, %{{.*}} weights %[[WEIGHTS]] dispatched %[[POS]]
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids capacity_factor 1.0 {plan = #plan} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<32x8xf32>, tensor<4xi32>, tensor<16x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x8xf32>, tensor<4xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x4xf32>, tensor<16x2xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// The expert-parallel group is one axis of a bigger grid (data x expert
// parallel): the rank is the index along that axis.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.25, 0.25, 0.25], predicted_us = 121.0>
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  shard.grid @dp_ep(shape = 2x4)
  // CHECK-LABEL: func.func @partial_axes
  func.func @partial_axes(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>) -> tensor<f32> {
    // CHECK: %[[RANK:.*]] = shard.process_multi_index on @dp_ep axes = [1] : index
    // CHECK: tensor.extract_slice %{{.*}}[%[[RANK]], 0] [1, 4] [1, 1] : tensor<4x4xf32> to tensor<4xf32>
    %ids, %w, %p = tamoe.gate %logits top 2 softmax {plan = #plan} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<32x8xf32>, tensor<4xi32>, tensor<16x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @dp_ep axes = [1] : tensor<32x8xf32>, tensor<4xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x4xf32>, tensor<16x2xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}
