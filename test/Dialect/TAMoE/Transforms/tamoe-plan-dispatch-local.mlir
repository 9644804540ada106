// RUN: tamoe-opt %s --tamoe-pipeline -verify-diagnostics | FileCheck %s

// A layer whose experts are all on this rank (no exchange sends its rows)
// moves nothing over a link: it is not planned, and the inject pass leaves
// its loss alone.
// CHECK-LABEL: func.func @local_layer
// CHECK: tamoe.dispatch %{{.*}}, %{{.*}} :
// CHECK: tamoe.aux_loss switch
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 10.0, uplink = per_rank>]>} {
  func.func @local_layer(%tokens: tensor<8x16xf32>, %logits: tensor<8x4xf32>, %w: tensor<4x16x16xf32>) -> (tensor<8x16xf32>, tensor<f32>) {
    %ids, %cw, %p = tamoe.gate %logits top 1 softmax : tensor<8x4xf32> -> tensor<8x1xi32>, tensor<8x1xf32>, tensor<8x4xf32>
    // expected-remark @+1 {{not planned: no tamoe.all_to_all sends its rows, so its experts are local}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<8x16xf32>, tensor<8x1xi32> -> tensor<8x16xf32>, tensor<4xi32>, tensor<8x1xi32>, tensor<i64>
    %h = tamoe.grouped_matmul %rows, %counts, %w : tensor<8x16xf32>, tensor<4xi32>, tensor<4x16x16xf32> -> tensor<8x16xf32>
    %out = tamoe.combine %h, %pos, %cw : tensor<8x16xf32>, tensor<8x1xi32>, tensor<8x1xf32> -> tensor<8x16xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<8x4xf32>, tensor<8x1xi32> -> tensor<f32>
    return %out, %loss : tensor<8x16xf32>, tensor<f32>
  }
}
