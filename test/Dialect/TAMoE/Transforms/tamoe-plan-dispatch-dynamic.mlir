// RUN: tamoe-opt %s --tamoe-plan-dispatch -verify-diagnostics | FileCheck %s

// A layer whose token count (or hidden size, or k) is dynamic is planned:
// the pattern hardly depends on the sizes, so the cost model's default ones
// (4096 tokens of 4096, top-2) stand in for the unknown ones, and the
// remark says what the prediction is for.
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  // CHECK-LABEL: func.func @tokens
  func.func @tokens(%tokens: tensor<?x16xf32>, %ids: tensor<?x2xi32>) {
    // CHECK: tamoe.dispatch {{.*}} {plan = #tamoe.dispatch_plan<tamoe, shares = [{{.*}}], predicted_us = {{.*}}>}
    // expected-remark @+1 {{planned 'tamoe' dispatch on 'pair': 4.6 us (flat: topology 'pair' has a single level, so there is no inter-node stage) vs 4.6 us with uniform routing (1.00x), predicted for 8192 rows of 16 elements: the layer's sizes are dynamic}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<2xi32>, tensor<?x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<?x16xf32>, tensor<2xi32> -> tensor<?x16xf32>
    return
  }
  // CHECK-LABEL: func.func @hidden_and_k
  func.func @hidden_and_k(%tokens: tensor<8x?xf32>, %ids: tensor<8x?xi32>) {
    // CHECK: tamoe.dispatch {{.*}} {plan = #tamoe.dispatch_plan<tamoe
    // expected-remark @+1 {{predicted for 16 rows of 4096 elements: the layer's sizes are dynamic}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x?xf32>, tensor<8x?xi32> -> tensor<?x?xf32>, tensor<2xi32>, tensor<8x?xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<?x?xf32>, tensor<2xi32> -> tensor<?x?xf32>
    return
  }
  // A capacity caps the rows as it would static ones: 4096 x 2 assignments,
  // at most 3 rows for each of 2 experts.
  // CHECK-LABEL: func.func @capacity
  func.func @capacity(%tokens: tensor<?x16xf32>, %ids: tensor<?x2xi32>) {
    // expected-remark @+1 {{predicted for 6 rows of 16 elements: the layer's sizes are dynamic}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids capacity 3 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<2xi32>, tensor<?x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<?x16xf32>, tensor<2xi32> -> tensor<?x16xf32>
    return
  }
}
