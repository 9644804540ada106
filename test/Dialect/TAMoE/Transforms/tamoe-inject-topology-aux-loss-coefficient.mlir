// A coefficient that the loss's type cannot hold: 1e6 is inf in f16 (the
// function's loss became inf), 1e-8 is 0 (the loss was silently dropped).
// RUN: tamoe-opt %s -split-input-file --tamoe-inject-topology-aux-loss=coefficient=1e6 -verify-diagnostics
// RUN: not tamoe-opt %s -split-input-file --tamoe-inject-topology-aux-loss=coefficient=1e-8 2>&1 | FileCheck %s --check-prefix=TINY
// TINY: error: tamoe-inject-topology-aux-loss: coefficient 1e-08 becomes 0 in the loss's type 'f16'

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf16>, %logits: tensor<16x2xf16>, %task: tensor<f16>) -> (tensor<?x8xf16>, tensor<f16>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf16> -> tensor<16x1xi32>, tensor<16x1xf16>, tensor<16x2xf16>
    // expected-error @+1 {{tamoe-inject-topology-aux-loss: coefficient 1000000 becomes inf in the loss's type 'f16'}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf16>, tensor<16x1xi32> -> tensor<16x8xf16>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf16>, tensor<2xi32> -> tensor<?x8xf16>
    return %recv, %task : tensor<?x8xf16>, tensor<f16>
  }
}
