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
