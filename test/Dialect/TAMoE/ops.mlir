// RUN: tamoe-opt %s | FileCheck %s
// Round trip through the generic form must reproduce the custom form.
// RUN: tamoe-opt %s --mlir-print-op-generic | tamoe-opt | FileCheck %s
// Bytecode round trip.
// RUN: tamoe-opt %s --emit-bytecode | tamoe-opt | FileCheck %s

// Nested levels print without their "#tamoe.level" prefix; both forms parse.
// CHECK: module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 2.000000e+01, down_bandwidth = 2.500000e+01, latency = 1.000000e+00, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.000000e+00, down_bandwidth = 5.000000e+00, latency = 1.000000e+01, uplink = shared>]>}
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [
    #tamoe.level<"node", fanout = 4, up_bandwidth = 2.000000e+01,
                 down_bandwidth = 2.500000e+01, latency = 1.000000e+00,
                 uplink = per_rank>,
    #tamoe.level<"cluster", fanout = 2, up_bandwidth = 5.000000e+00,
                 down_bandwidth = 5.000000e+00, latency = 1.000000e+01,
                 uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  shard.grid @dyn(shape = ?x4)

  // CHECK-LABEL: func.func @gate
  func.func @gate(%logits: tensor<16x8xf32>, %dyn: tensor<?x8xbf16>) {
    // CHECK: tamoe.gate %{{.*}} top 2 softmax renormalize : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    %0:3 = tamoe.gate %logits top 2 softmax renormalize : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    // CHECK: tamoe.gate %{{.*}} top 1 sigmoid : tensor<16x8xf32> -> tensor<16x1xi64>, tensor<16x1xf32>, tensor<16x8xf32>
    %1:3 = tamoe.gate %logits top 1 sigmoid : tensor<16x8xf32> -> tensor<16x1xi64>, tensor<16x1xf32>, tensor<16x8xf32>
    // k = E is allowed.
    // CHECK: tamoe.gate %{{.*}} top 8 softmax :
    %2:3 = tamoe.gate %logits top 8 softmax : tensor<16x8xf32> -> tensor<16x8xi32>, tensor<16x8xf32>, tensor<16x8xf32>
    // CHECK: tamoe.gate %{{.*}} top 2 sigmoid renormalize groups 4 keep 2 : tensor<?x8xbf16> -> tensor<?x2xi32>, tensor<?x2xbf16>, tensor<?x8xbf16>
    %3:3 = tamoe.gate %dyn top 2 sigmoid renormalize groups 4 keep 2 : tensor<?x8xbf16> -> tensor<?x2xi32>, tensor<?x2xbf16>, tensor<?x8xbf16>
    // CHECK: tamoe.gate %{{.*}} top 2 softmax {plan = #tamoe.dispatch_plan<tamoe, shares = [2.500000e-01, 1.250000e-01, 9.375000e-02], predicted_us = 4.120000e+02>}
    %4:3 = tamoe.gate %logits top 2 softmax {plan = #tamoe.dispatch_plan<tamoe, shares = [0.25, 0.125, 0.09375], predicted_us = 412.0>} : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    return
  }

  // CHECK-LABEL: func.func @dispatch
  func.func @dispatch(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %weights: tensor<16x2xf32>, %dyn_tokens: tensor<?x64xbf16>, %dyn_ids: tensor<?x2xi32>) {
    // CHECK: tamoe.dispatch %{{.*}}, %{{.*}} : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    %0:4 = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // ceil(1.25 * 16 * 2 / 8) = 5 rows per expert, 8 * 5 = 40 > 32.
    // CHECK: tamoe.dispatch %{{.*}}, %{{.*}} capacity_factor 1.250000e+00 : {{.*}} -> tensor<32x64xf32>
    %1:4 = tamoe.dispatch %tokens, %ids capacity_factor 1.25 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // CHECK: tamoe.dispatch %{{.*}}, %{{.*}} capacity 3 drop position : {{.*}} -> tensor<24x64xf32>
    %2:4 = tamoe.dispatch %tokens, %ids capacity 3 drop position : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<24x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // CHECK: tamoe.dispatch %{{.*}}, %{{.*}} weights %{{.*}} capacity 3 drop probability : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<24x64xf32>, tensor<8xi64>, tensor<16x2xi64>, tensor<i64>
    %3:4 = tamoe.dispatch %tokens, %ids weights %weights capacity 3 drop probability : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<24x64xf32>, tensor<8xi64>, tensor<16x2xi64>, tensor<i64>
    // Capacity 0 drops everything.
    // CHECK: capacity 0 : {{.*}} -> tensor<0x64xf32>
    %4:4 = tamoe.dispatch %tokens, %ids capacity 0 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<0x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // CHECK: tamoe.dispatch %{{.*}}, %{{.*}} : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x64xbf16>, tensor<8xi32>, tensor<?x2xi32>, tensor<i64>
    %5:4 = tamoe.dispatch %dyn_tokens, %dyn_ids : tensor<?x64xbf16>, tensor<?x2xi32> -> tensor<?x64xbf16>, tensor<8xi32>, tensor<?x2xi32>, tensor<i64>
    return
  }

  // CHECK-LABEL: func.func @all_to_all
  func.func @all_to_all(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>, %per_expert: tensor<8x2xi64>, %node_counts: tensor<4xi32>, %dyn_counts: tensor<3xi32>) {
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep axes = [0, 1] : tensor<32x64xf32>, tensor<8x2xi64> -> tensor<64x64xf32>
    %2, %3 = tamoe.all_to_all %rows, %per_expert on @ep axes = [0, 1] : tensor<32x64xf32>, tensor<8x2xi64> -> tensor<64x64xf32>
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4xi32> -> tensor<?x64xf32>
    %4, %5 = tamoe.all_to_all %rows, %node_counts on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4xi32> -> tensor<?x64xf32>
    // A grid with a dynamic axis: the group size is known at run time only.
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @dyn : tensor<32x64xf32>, tensor<3xi32> -> tensor<?x64xf32>
    %6, %7 = tamoe.all_to_all %rows, %dyn_counts on @dyn : tensor<32x64xf32>, tensor<3xi32> -> tensor<?x64xf32>
    // The counts it will receive, when the program knows them.
    // CHECK: tamoe.all_to_all %{{.*}}, %[[C:.*]] expecting %[[C]] on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %8, %9 = tamoe.all_to_all %rows, %counts expecting %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    // CHECK: tamoe.all_to_all_start %{{.*}}, %{{.*}} expecting %{{.*}} on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4xi32>
    %10 = tamoe.all_to_all_start %rows, %node_counts expecting %node_counts on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4xi32>
    %11, %12 = tamoe.all_to_all_wait %10 : tensor<?x64xf32>, tensor<4xi32>
    return
  }

  // CHECK-LABEL: func.func @regroup
  func.func @regroup(%rows: tensor<32x64xf32>, %counts: tensor<2x4xi32>, %counts3: tensor<2x4x2xi32>) {
    // CHECK: tamoe.regroup %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<2x4xi32> -> tensor<?x64xf32>, tensor<4x2xi32>
    %0, %1 = tamoe.regroup %rows, %counts : tensor<32x64xf32>, tensor<2x4xi32> -> tensor<?x64xf32>, tensor<4x2xi32>
    // Chunks split further (per expert) keep their split.
    // CHECK: tamoe.regroup %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<2x4x2xi32> -> tensor<32x64xf32>, tensor<4x2x2xi32>
    %2, %3 = tamoe.regroup %rows, %counts3 : tensor<32x64xf32>, tensor<2x4x2xi32> -> tensor<32x64xf32>, tensor<4x2x2xi32>
    return
  }

  // CHECK-LABEL: func.func @dedup
  func.func @dedup(%tokens: tensor<16x64xbf16>, %ids: tensor<16x2xi32>, %positions: tensor<16x2xi32>, %unique: tensor<?x64xbf16>, %routes: tensor<?x2xi32>, %node_counts: tensor<2xi32>) {
    // CHECK: tamoe.dedup_pack %{{.*}}, %{{.*}}, %{{.*}} experts_per_node 8 : tensor<16x64xbf16>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xbf16>, tensor<32x2xi32>, tensor<2xi32>
    %0, %1, %2 = tamoe.dedup_pack %tokens, %ids, %positions experts_per_node 8 : tensor<16x64xbf16>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xbf16>, tensor<32x2xi32>, tensor<2xi32>
    // A smaller capacity, as one part of a chunked layer packs.
    // CHECK: tamoe.dedup_pack %{{.*}}, %{{.*}}, %{{.*}} experts_per_node 8 : tensor<16x64xbf16>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<12x64xbf16>, tensor<12x2xi32>, tensor<2xi32>
    %5, %6, %7 = tamoe.dedup_pack %tokens, %ids, %positions experts_per_node 8 : tensor<16x64xbf16>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<12x64xbf16>, tensor<12x2xi32>, tensor<2xi32>
    // CHECK: tamoe.dedup_expand %{{.*}}, %{{.*}}, %{{.*}} experts_per_rank 2 : tensor<?x64xbf16>, tensor<?x2xi32>, tensor<2xi32> -> tensor<?x64xbf16>, tensor<4x2x2xi32>
    %3, %4 = tamoe.dedup_expand %unique, %routes, %node_counts experts_per_rank 2 : tensor<?x64xbf16>, tensor<?x2xi32>, tensor<2xi32> -> tensor<?x64xbf16>, tensor<4x2x2xi32>
    return
  }

  // S * min(k, nodes) past int64 bounds no capacity: any static one is
  // accepted (it was compared with the wrapped, negative product).
  // CHECK-LABEL: func.func @dedup_huge
  // CHECK: tamoe.dedup_pack {{.*}} -> tensor<9223372036854775807x64xf32>
  func.func @dedup_huge(%tokens: tensor<6917529027641081856x64xf32>, %ids: tensor<6917529027641081856x4xi32>) {
    %0, %1, %2 = tamoe.dedup_pack %tokens, %ids, %ids experts_per_node 8 : tensor<6917529027641081856x64xf32>, tensor<6917529027641081856x4xi32>, tensor<6917529027641081856x4xi32> -> tensor<9223372036854775807x64xf32>, tensor<9223372036854775807x4xi32>, tensor<2xi32>
    return
  }

  // CHECK-LABEL: func.func @grouped_matmul
  func.func @grouped_matmul(%rows: tensor<?x32xf32>, %counts: tensor<8x2xi32>, %w: tensor<2x32x64xf32>) -> tensor<?x64xf32> {
    // CHECK: tamoe.grouped_matmul %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32> -> tensor<?x64xf32>
    %0 = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32> -> tensor<?x64xf32>
    return %0 : tensor<?x64xf32>
  }

  // CHECK-LABEL: func.func @combine_and_loss
  func.func @combine_and_loss(%rows: tensor<32x64xf32>, %positions: tensor<16x2xi32>, %weights: tensor<16x2xf32>, %probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %expert_weights: tensor<8xf32>) {
    // CHECK: tamoe.combine %{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x64xf32>
    %0 = tamoe.combine %rows, %positions, %weights : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x64xf32>
    // CHECK: tamoe.aux_loss switch %{{.*}}, %{{.*}} : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    %1 = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    // CHECK: tamoe.aux_loss topology %{{.*}}, %{{.*}} weights %{{.*}} : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32> -> tensor<f32>
    %2 = tamoe.aux_loss topology %probs, %ids weights %expert_weights : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32> -> tensor<f32>
    // CHECK: tamoe.aux_loss switch %{{.*}}, %{{.*}} dispatched %{{.*}} : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<f32>
    %3 = tamoe.aux_loss switch %probs, %ids dispatched %positions : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<f32>
    // CHECK: tamoe.aux_loss topology %{{.*}}, %{{.*}} weights %{{.*}} dispatched %{{.*}} : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32>, tensor<16x2xi32> -> tensor<f32>
    %4 = tamoe.aux_loss topology %probs, %ids weights %expert_weights dispatched %positions : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32>, tensor<16x2xi32> -> tensor<f32>
    return
  }

  // Gradients.
  // CHECK-LABEL: func.func @gradients
  func.func @gradients(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %w: tensor<16x2xf32>, %rows: tensor<32x64xf32>, %d_out: tensor<16x64xf32>, %counts: tensor<8x2xi32>, %weights: tensor<2x64x32xf32>, %d_h: tensor<32x32xf32>, %d_loss: tensor<f32>, %ew: tensor<8xf32>, %routes: tensor<32x2xi32>, %node_counts: tensor<2xi32>) {
    // CHECK: tamoe.gate_grad %{{.*}}, %{{.*}} softmax renormalize d_weights %{{.*}} d_probs %{{.*}} : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
    %0 = tamoe.gate_grad %probs, %ids softmax renormalize d_weights %w d_probs %probs : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32> -> tensor<16x8xf32>
    // CHECK: tamoe.gate_grad %{{.*}}, %{{.*}} sigmoid d_probs %{{.*}} : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x8xf32> -> tensor<16x8xf32>
    %1 = tamoe.gate_grad %probs, %ids sigmoid d_probs %probs : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x8xf32> -> tensor<16x8xf32>
    // CHECK: tamoe.combine %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
    %2 = tamoe.combine %rows, %ids : tensor<32x64xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
    // CHECK: tamoe.combine_grad %{{.*}}, %{{.*}}, %{{.*}} weights %{{.*}} : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<32x64xf32>, tensor<16x2xf32>
    %3:2 = tamoe.combine_grad %d_out, %rows, %ids weights %w : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<32x64xf32>, tensor<16x2xf32>
    // CHECK: tamoe.combine_grad %{{.*}}, %{{.*}}, %{{.*}} : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>
    %4 = tamoe.combine_grad %d_out, %rows, %ids : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>
    // CHECK: tamoe.grouped_matmul_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<32x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf32>, tensor<32x32xf32> -> tensor<32x64xf32>, tensor<2x64x32xf32>
    %5:2 = tamoe.grouped_matmul_grad %rows, %counts, %weights, %d_h : tensor<32x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf32>, tensor<32x32xf32> -> tensor<32x64xf32>, tensor<2x64x32xf32>
    // CHECK: tamoe.aux_loss_grad topology %{{.*}}, %{{.*}} weights %{{.*}} dispatched %{{.*}} : tensor<16x2xi32>, tensor<f32>, tensor<8xf32>, tensor<16x2xi32> -> tensor<16x8xf32>
    %6 = tamoe.aux_loss_grad topology %ids, %d_loss weights %ew dispatched %ids : tensor<16x2xi32>, tensor<f32>, tensor<8xf32>, tensor<16x2xi32> -> tensor<16x8xf32>
    // CHECK: tamoe.aux_loss_grad switch %{{.*}}, %{{.*}} : tensor<16x2xi32>, tensor<f32> -> tensor<16x8xf32>
    %7 = tamoe.aux_loss_grad switch %ids, %d_loss : tensor<16x2xi32>, tensor<f32> -> tensor<16x8xf32>
    // CHECK: tamoe.dedup_pack_grad %{{.*}}, %{{.*}}, %{{.*}} experts_per_node 4 nodes 2 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<16x64xf32>
    %8 = tamoe.dedup_pack_grad %rows, %ids, %ids experts_per_node 4 nodes 2 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<16x64xf32>
    // CHECK: tamoe.dedup_expand_grad %{{.*}}, %{{.*}}, %{{.*}} experts_per_rank 1 ranks_per_node 4 : tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32> -> tensor<32x64xf32>
    %9 = tamoe.dedup_expand_grad %rows, %routes, %node_counts experts_per_rank 1 ranks_per_node 4 : tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32> -> tensor<32x64xf32>
    return
  }

  // Training: reductions over a group, optimizer steps, and a layer's VJP.
  // CHECK-LABEL: func.func @training
  func.func @training(%p: tensor<2x64x32xf32>, %g: tensor<2x64x32xf32>, %m: tensor<2x64x32xf32>, %v: tensor<2x64x32xf32>, %lr: f32, %step: i64) {
    // CHECK: tamoe.all_reduce %{{.*}} on @ep average : tensor<2x64x32xf32>
    %0 = tamoe.all_reduce %g on @ep average : tensor<2x64x32xf32>
    // CHECK: tamoe.all_reduce %{{.*}} on @ep axes = [1] : tensor<2x64x32xf32>
    %1 = tamoe.all_reduce %g on @ep axes = [1] : tensor<2x64x32xf32>
    // CHECK: tamoe.sgd %{{.*}}, %{{.*}}, %{{.*}} lr %{{.*}} momentum 0.899999976 : tensor<2x64x32xf32>
    %2:2 = tamoe.sgd %p, %g, %m lr %lr momentum 0.9 : tensor<2x64x32xf32>
    // CHECK: tamoe.adam %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} step %{{.*}} lr %{{.*}} : tensor<2x64x32xf32>
    %3:3 = tamoe.adam %p, %g, %m, %v step %step lr %lr : tensor<2x64x32xf32>
    // CHECK: tamoe.adam %{{.*}} {beta2 = 0.949999988 : f32, weight_decay = 0.00999999977 : f32} : tensor<2x64x32xf32>
    %4:3 = tamoe.adam %p, %g, %m, %v step %step lr %lr {beta2 = 0.95 : f32, weight_decay = 0.01 : f32} : tensor<2x64x32xf32>
    // CHECK: tamoe.vjp @scale(%{{.*}}) cotangents(%{{.*}}) : (tensor<2x64x32xf32>), (tensor<2x64x32xf32>) -> (tensor<2x64x32xf32>), (tensor<2x64x32xf32>)
    %5:2 = tamoe.vjp @scale(%p) cotangents(%g) : (tensor<2x64x32xf32>), (tensor<2x64x32xf32>) -> (tensor<2x64x32xf32>), (tensor<2x64x32xf32>)
    // A function without float arguments has no gradients.
    // CHECK: tamoe.vjp @constant(%{{.*}}) cotangents(%{{.*}}) : (i64), (tensor<2x64x32xf32>) -> (tensor<2x64x32xf32>), ()
    %6 = tamoe.vjp @constant(%step) cotangents(%g) : (i64), (tensor<2x64x32xf32>) -> (tensor<2x64x32xf32>), ()
    return
  }
  func.func private @constant(i64) -> tensor<2x64x32xf32>
  func.func @scale(%x: tensor<2x64x32xf32>) -> tensor<2x64x32xf32> {
    %y = arith.negf %x : tensor<2x64x32xf32>
    return %y : tensor<2x64x32xf32>
  }

  // Attributes on their own: a dense plan (asymmetric patterns) and a level.
  // CHECK-LABEL: func.func private @attributes()
  // CHECK-SAME: dense = #tamoe.dispatch_plan<optimal, matrix = [7.500000e-01, 2.500000e-01, 1.000000e+00, 0.000000e+00], predicted_us = 1.500000e+01>
  // CHECK-SAME: level = #tamoe.level<"rack", fanout = 72, up_bandwidth = 9.000000e+02, down_bandwidth = 9.000000e+02, latency = 3.000000e+00, per_message = 3.000000e+00, uplink = shared>
  // CHECK-SAME: uniform = #tamoe.dispatch_plan<uniform, shares = [1.250000e-01, 1.250000e-01, 1.250000e-01], predicted_us = 0.000000e+00>
  func.func private @attributes() attributes {
    dense = #tamoe.dispatch_plan<optimal, matrix = [0.75, 0.25, 1.0, 0.0], predicted_us = 15.0>,
    level = #tamoe.level<"rack", fanout = 72, up_bandwidth = 900.0, down_bandwidth = 900.0, latency = 3.0, per_message = 3.0, uplink = shared>,
    uniform = #tamoe.dispatch_plan<uniform, shares = [0.125, 0.125, 0.125], predicted_us = 0.0>}
}
