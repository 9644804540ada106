// Node-limited routing is the gate's: what plan-dispatch refuses to write
// into it (tamoe-plan-dispatch-options.test has the gates it writes).
// RUN: tamoe-opt %s -split-input-file --tamoe-plan-dispatch="policy=node-limited max-nodes=1" -verify-diagnostics

// A gate grouped otherwise.
module attributes {tamoe.topology = #tamoe.topology<"2x2", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @f(%tokens: tensor<8x16xf32>, %logits: tensor<8x8xf32>) {
    // expected-error @+1 {{node-limited with max-nodes=1 keeps 1 of the 2 nodes of topology '2x2', but the gate already keeps 2 of its 4 groups}}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax groups 4 keep 2 : tensor<8x8xf32> -> tensor<8x2xi32>, tensor<8x2xf32>, tensor<8x8xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<8xi32>, tensor<8x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<16x16xf32>, tensor<4x2xi32> -> tensor<?x16xf32>
    return
  }
}

// -----

// One node's experts are fewer than the token's top k.
module attributes {tamoe.topology = #tamoe.topology<"2x2", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @f(%tokens: tensor<8x16xf32>, %logits: tensor<8x8xf32>) {
    // expected-error @+1 {{node-limited with max-nodes=1 leaves a token 4 experts (4 per node), fewer than its top 5}}
    %ids, %w, %p = tamoe.gate %logits top 5 softmax : tensor<8x8xf32> -> tensor<8x5xi32>, tensor<8x5xf32>, tensor<8x8xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x5xi32> -> tensor<40x16xf32>, tensor<8xi32>, tensor<8x5xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<40x16xf32>, tensor<4x2xi32> -> tensor<?x16xf32>
    return
  }
}

// -----

// Expert ids from elsewhere: nothing to limit them.
module attributes {tamoe.topology = #tamoe.topology<"2x2", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @f(%tokens: tensor<8x16xf32>, %ids: tensor<8x2xi32>) {
    // expected-error @+1 {{node-limited routing is the gate's, but this layer's expert ids do not come from a tamoe.gate}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<8xi32>, tensor<8x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<16x16xf32>, tensor<4x2xi32> -> tensor<?x16xf32>
    return
  }
}

// -----

// A gate that scores other experts than the dispatch's: its groups would
// not be the nodes.
module attributes {tamoe.topology = #tamoe.topology<"2x2", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @f(%tokens: tensor<8x16xf32>, %logits: tensor<8x6xf32>) {
    // expected-error @+1 {{node-limited: the gate scores 6 experts but its dispatch has 8}}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax : tensor<8x6xf32> -> tensor<8x2xi32>, tensor<8x2xf32>, tensor<8x6xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<8xi32>, tensor<8x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<16x16xf32>, tensor<4x2xi32> -> tensor<?x16xf32>
    return
  }
}

// -----

module attributes {tamoe.topology = #tamoe.topology<"2x2", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @f(%tokens: tensor<8x16xf32>, %logits: tensor<8x?xf32>) {
    // expected-error @+1 {{node-limited: the gate scores a dynamic number of experts but its dispatch has 8}}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax : tensor<8x?xf32> -> tensor<8x2xi32>, tensor<8x2xf32>, tensor<8x?xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<8xi32>, tensor<8x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<16x16xf32>, tensor<4x2xi32> -> tensor<?x16xf32>
    return
  }
}
