// RUN: tamoe-opt %s -split-input-file --tamoe-plan-dispatch -verify-diagnostics

// A layer and no topology (a module without layers needs none:
// no-moe-ops.mlir).
// expected-error @+1 {{tamoe-plan-dispatch: no topology: give the pass topology=FILE or the module a 'tamoe.topology' attribute}}
module {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<8x16xf32>, %ids: tensor<8x2xi32>) {
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<2xi32>, tensor<8x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x16xf32>, tensor<2xi32> -> tensor<?x16xf32>
    return
  }
}

// -----

module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @f(%tokens: tensor<8x16xf32>, %ids: tensor<8x2xi32>) {
    // expected-error @+1 {{expert-parallel group @ep has 4 ranks but topology 'pair' has 2}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<4xi32>, tensor<8x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x16xf32>, tensor<4xi32> -> tensor<?x16xf32>
    return
  }
}

// -----

module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  // A group of run-time size: the experts' check is the planner's.
  shard.grid @ep(shape = ?)
  func.func @f(%tokens: tensor<8x16xf32>, %ids: tensor<8x2xi32>) {
    // expected-error @+1 {{3 experts do not divide evenly over the 2 ranks of topology 'pair'}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<3xi32>, tensor<8x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x16xf32>, tensor<3xi32> -> tensor<?x16xf32>
    return
  }
}


// -----

module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<8x16xcomplex<f32>>, %ids: tensor<8x2xi32>) {
    // expected-error @+1 {{cannot size token rows of 'complex<f32>'}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xcomplex<f32>>, tensor<8x2xi32> -> tensor<16x16xcomplex<f32>>, tensor<2xi32>, tensor<8x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x16xcomplex<f32>>, tensor<2xi32> -> tensor<?x16xcomplex<f32>>
    return
  }
}

// -----

// One router, two layers planned for different patterns: a layer planned
// before (its exchange since rewritten, here gone) keeps its plan, and the
// gate cannot realise both.
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 0.5, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @shared_router(%tokens: tensor<1000x500xbf16>, %logits: tensor<1000x4xf32>) -> (tensor<2000x500xbf16>, tensor<?x500xbf16>) {
    // expected-note @+1 {{the shared tamoe.gate}}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax : tensor<1000x4xf32> -> tensor<1000x2xi32>, tensor<1000x2xf32>, tensor<1000x4xf32>
    // expected-note @+1 {{the other layer}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #tamoe.dispatch_plan<uniform, shares = [0.25, 0.25, 0.25], predicted_us = 114.5>} : tensor<1000x500xbf16>, tensor<1000x2xi32> -> tensor<2000x500xbf16>, tensor<4xi32>, tensor<1000x2xi32>, tensor<i64>
    // expected-error @+1 {{the tamoe.gate that routes this layer also routes another, planned for another pattern: one router realises one dispatch pattern, and its topology loss weighs the experts by one plan (this layer's #tamoe.dispatch_plan<tamoe, shares = [4.545455e-01, 4.545455e-01, 4.545455e-02], predicted_us = 3.270000e+01>, the other's #tamoe.dispatch_plan<uniform, shares = [2.500000e-01, 2.500000e-01, 2.500000e-01], predicted_us = 1.145000e+02>)}}
    %rows2, %counts2, %pos2, %dropped2 = tamoe.dispatch %tokens, %ids : tensor<1000x500xbf16>, tensor<1000x2xi32> -> tensor<2000x500xbf16>, tensor<4xi32>, tensor<1000x2xi32>, tensor<i64>
    %recv2, %recv_counts2 = tamoe.all_to_all %rows2, %counts2 on @ep : tensor<2000x500xbf16>, tensor<4xi32> -> tensor<?x500xbf16>
    return %rows, %recv2 : tensor<2000x500xbf16>, tensor<?x500xbf16>
  }
}
