// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all -verify-diagnostics | FileCheck %s
// Idempotent: the stages name their level and are left alone.
// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all 2>/dev/null > %t.once
// RUN: tamoe-opt %t.once -split-input-file --tamoe-hierarchical-all-to-all 2>/dev/null | diff %t.once -
// mode= and errors: tamoe-hierarchical-all-to-all-modes.mlir.

// 2 nodes x 4 ranks, a slow shared link between the nodes; small messages,
// so the latency the hierarchical form saves decides.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @layer
  // CHECK-SAME: (%[[TOKENS:.*]]: tensor<16x64xf32>, %[[IDS:.*]]: tensor<16x2xi32>)
  func.func @layer(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) -> (tensor<32x64xf32>, tensor<8xi32>) {
    // CHECK: %[[ROWS:.*]], %[[COUNTS:.*]], %{{.*}}, %{{.*}} = tamoe.dispatch
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // Counts by destination (node, index); rows regrouped by (index, node).
    // CHECK: %[[BY_DEST:.*]] = tensor.expand_shape %[[COUNTS]] {{\[\[}}0, 1]] output_shape [2, 4] : tensor<8xi32> into tensor<2x4xi32>
    // CHECK: %[[R1:.*]], %[[C1:.*]] = tamoe.regroup %[[ROWS]], %[[BY_DEST]] : tensor<32x64xf32>, tensor<2x4xi32> -> tensor<32x64xf32>, tensor<4x2xi32>
    // Stage 1 within the node, stage 2 between same-index ranks.
    // CHECK: %[[S1:.*]], %[[S1C:.*]] = tamoe.all_to_all %[[R1]], %[[C1]] on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4x2xi32> -> tensor<?x64xf32>
    // CHECK: %[[R2:.*]], %[[C2:.*]] = tamoe.regroup %[[S1]], %[[S1C]] : tensor<?x64xf32>, tensor<4x2xi32> -> tensor<?x64xf32>, tensor<2x4xi32>
    // CHECK: %[[S2:.*]], %[[S2C:.*]] = tamoe.all_to_all %[[R2]], %[[C2]] on @ep axes = [0] level "cluster" : tensor<?x64xf32>, tensor<2x4xi32> -> tensor<?x64xf32>
    // CHECK: %[[RECV_COUNTS:.*]] = tensor.collapse_shape %[[S2C]] {{\[\[}}0, 1]] : tensor<2x4xi32> into tensor<8xi32>
    // expected-remark @+1 {{made hierarchical: 27.6 us predicted hierarchical vs 56.3 us flat for 32 rows of 256 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    // The return trip is sized by the same dispatch.
    // CHECK: tensor.expand_shape %[[RECV_COUNTS]]
    // CHECK: tamoe.all_to_all {{.*}} axes = [1] level "node"
    // CHECK: %[[BACK:.*]], %[[BACK_COUNTS:.*]] = tamoe.all_to_all {{.*}} axes = [0] level "cluster" : tensor<?x64xf32>, tensor<2x4xi32> -> tensor<32x64xf32>
    // CHECK: %[[FINAL:.*]] = tensor.collapse_shape %[[BACK_COUNTS]]
    // CHECK: return %[[BACK]], %[[FINAL]]
    // expected-remark @+1 {{made hierarchical: 27.6 us predicted hierarchical vs 56.3 us flat for 32 rows of 256 bytes}}
    %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x64xf32>, tensor<8xi32> -> tensor<32x64xf32>
    return %back, %back_counts : tensor<32x64xf32>, tensor<8xi32>
  }
}

// -----

// Large messages over a fast network between nodes: the extra intra-node
// stage costs more than the messages it saves.
module attributes {tamoe.topology = #tamoe.topology<"fast", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 50.0, down_bandwidth = 50.0, latency = 2.0, per_message = 2.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @large
  func.func @large(%rows: tensor<8192x4096xbf16>, %counts: tensor<4xi32>) -> tensor<?x4096xbf16> {
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep : tensor<8192x4096xbf16>
    // expected-remark @+1 {{kept flat: 1012.6 us predicted hierarchical vs 678.1 us flat for 8192 rows of 8192 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<8192x4096xbf16>, tensor<4xi32> -> tensor<?x4096xbf16>
    return %recv : tensor<?x4096xbf16>
  }
}

// -----

// A single-level topology has no inter-node stage.
module attributes {tamoe.topology = #tamoe.topology<"one-node", [<"node", fanout = 4, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 4)
  func.func @single(%rows: tensor<32x64xf32>, %counts: tensor<4xi32>) -> tensor<?x64xf32> {
    // expected-remark @+1 {{kept flat: topology 'one-node' has a single level, so there is no inter-node stage}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<4xi32> -> tensor<?x64xf32>
    return %recv : tensor<?x64xf32>
  }
}

// -----

#topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>
module attributes {tamoe.topology = #topology} {
  shard.grid @flat8(shape = 8)
  shard.grid @ep(shape = 2x4)
  shard.grid @wrong(shape = 4x2)
  func.func @not_rewritten(%rows: tensor<32x64xf32>, %c8: tensor<8xi32>, %c4: tensor<4xi32>, %dyn: tensor<?x64xf32>) {
    // expected-remark @+1 {{kept flat: grid @flat8 has one axis; the stages need a last axis of the 4 ranks of a 'node' of topology 'cpu-2x4' (shape 2x4)}}
    %0, %1 = tamoe.all_to_all %rows, %c8 on @flat8 : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    // expected-remark @+1 {{kept flat: the last axis of grid @wrong is not the 4 ranks of a 'node' of topology 'cpu-2x4'}}
    %2, %3 = tamoe.all_to_all %rows, %c8 on @wrong : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    // expected-remark @+1 {{kept flat: it runs over part of grid @ep}}
    %4, %5 = tamoe.all_to_all %rows, %c4 on @ep axes = [1] : tensor<32x64xf32>, tensor<4xi32> -> tensor<?x64xf32>
    // expected-remark @+1 {{kept flat: its size is unknown at compile time (mode=hierarchical forces the rewrite)}}
    %8, %9 = tamoe.all_to_all %dyn, %c8 on @ep : tensor<?x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    return
  }
}

// -----

// Two experts per rank: counts [ranks, experts per rank] keep their split
// through both stages.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @per_expert
  func.func @per_expert(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>) -> (tensor<?x64xf32>, tensor<8x2xi32>) {
    // CHECK: %[[BY_DEST:.*]] = tensor.expand_shape %{{.*}} {{\[\[}}0, 1], [2]] output_shape [2, 4, 2] : tensor<8x2xi32> into tensor<2x4x2xi32>
    // CHECK: tamoe.regroup %{{.*}}, %[[BY_DEST]] : tensor<32x64xf32>, tensor<2x4x2xi32> -> tensor<32x64xf32>, tensor<4x2x2xi32>
    // CHECK: tamoe.all_to_all {{.*}} axes = [1] level "node" : tensor<32x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>
    // CHECK: tamoe.regroup {{.*}} -> tensor<?x64xf32>, tensor<2x4x2xi32>
    // CHECK: %[[S2:.*]], %[[S2C:.*]] = tamoe.all_to_all {{.*}} axes = [0] level "cluster" : tensor<?x64xf32>, tensor<2x4x2xi32> -> tensor<?x64xf32>
    // CHECK: %[[C:.*]] = tensor.collapse_shape %[[S2C]] {{\[\[}}0, 1], [2]] : tensor<2x4x2xi32> into tensor<8x2xi32>
    // CHECK: return %[[S2]], %[[C]]
    // expected-remark @+1 {{made hierarchical: 27.6 us predicted hierarchical vs 56.3 us flat for 32 rows of 256 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    return %recv, %recv_counts : tensor<?x64xf32>, tensor<8x2xi32>
  }
}

// -----

// An exchange told what it will receive (a backward's way back): stage 2
// receives exactly that, by source (node, index), and keeps the promise;
// stage 1's counts depend on the node peers' routes and are exchanged.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @expecting
  // CHECK-SAME: %[[SENT:[^:]*]]: tensor<8x2xi32>)
  func.func @expecting(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>, %sent: tensor<8x2xi32>) -> tensor<?x64xf32> {
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep axes = [1] level "node"
    // CHECK: %[[BY_SOURCE:.*]] = tensor.expand_shape %[[SENT]] {{\[\[}}0, 1], [2]] output_shape [2, 4, 2] : tensor<8x2xi32> into tensor<2x4x2xi32>
    // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} expecting %[[BY_SOURCE]] on @ep axes = [0] level "cluster"
    // expected-remark @+1 {{made hierarchical: 27.6 us predicted hierarchical vs 56.3 us flat for 32 rows of 256 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts expecting %sent on @ep : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    return %recv : tensor<?x64xf32>
  }
}

// -----

module {
  shard.grid @ep(shape = 2x4)
  func.func @no_topology(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
    // expected-remark @+1 {{kept flat: the module has no tamoe.topology}}
    %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    return
  }
}
