// The plan's remark states the schedule the compiler emits. On a 1-D grid
// the exchange cannot be split at the node (tamoe-hierarchical-all-to-all
// keeps it flat), so the prediction is the flat one and says why, however
// much faster the hierarchical schedule would be.
// What tamoe-hierarchical-all-to-all then does agrees with the remarks.
// RUN: tamoe-opt %s --tamoe-plan-dispatch --tamoe-hierarchical-all-to-all -verify-diagnostics | FileCheck %s

// 2 nodes x 2 ranks of docs/cost-model.md, with a latency between nodes that
// makes the hierarchical schedule (fewer messages) the faster one.
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 1000.0, per_message = 1000.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 4)
  shard.grid @ep2d(shape = 2x2)
  // CHECK-LABEL: func.func @flat_grid
  func.func @flat_grid(%tokens: tensor<10x500xbf16>, %ids: tensor<10x2xi32>) -> tensor<?x500xbf16> {
    // CHECK: tamoe.dispatch {{.*}}predicted_us = 3.001200e+03
    // expected-remark @+1 {{planned 'tamoe' dispatch on 'two-by-two': 3001.2 us (flat: grid @ep has one axis; the stages need a last axis of the 2 ranks of a 'node' of topology 'two-by-two' (shape 2x2)) vs 3002.0 us with uniform routing (1.00x)}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<10x500xbf16>, tensor<10x2xi32> -> tensor<20x500xbf16>, tensor<4xi32>, tensor<10x2xi32>, tensor<i64>
    // expected-remark @+1 {{kept flat: grid @ep has one axis; the stages need a last axis of the 2 ranks of a 'node' of topology 'two-by-two' (shape 2x2)}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<20x500xbf16>, tensor<4xi32> -> tensor<?x500xbf16>
    return %recv : tensor<?x500xbf16>
  }
  // CHECK-LABEL: func.func @node_grid
  func.func @node_grid(%tokens: tensor<10x500xbf16>, %ids: tensor<10x2xi32>) -> tensor<?x500xbf16> {
    // expected-remark @+1 {{planned 'tamoe' dispatch on 'two-by-two': 2002.3 us (hierarchical) vs 2003.1 us with uniform routing (1.00x)}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<10x500xbf16>, tensor<10x2xi32> -> tensor<20x500xbf16>, tensor<4xi32>, tensor<10x2xi32>, tensor<i64>
    // expected-remark @+1 {{made hierarchical: 2002.3 us predicted hierarchical vs 3001.2 us flat for 20 rows of 1000 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep2d : tensor<20x500xbf16>, tensor<4xi32> -> tensor<?x500xbf16>
    return %recv : tensor<?x500xbf16>
  }
}
