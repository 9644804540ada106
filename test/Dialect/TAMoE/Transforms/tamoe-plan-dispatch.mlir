// RUN: tamoe-opt %s --tamoe-plan-dispatch -verify-diagnostics | FileCheck %s
// Idempotent: a second run plans the same.
// RUN: tamoe-opt %s --tamoe-plan-dispatch --tamoe-plan-dispatch 2>/dev/null | FileCheck %s
// Errors: tamoe-plan-dispatch-errors.mlir and tamoe-plan-dispatch-options.test.

// The hand-computed tree of docs/cost-model.md: 2 nodes x 2 ranks, 100 GB/s
// inside a node, 10 GB/s per rank between nodes. TA-MoE shares 10:10:1
// (each share: 10/22 or 1/22); 1000 tokens of 1000 bytes, top-2.
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 0.5, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @layer
  func.func @layer(%tokens: tensor<1000x500xbf16>, %logits: tensor<1000x4xf32>) -> tensor<?x500xbf16> {
    // CHECK: tamoe.gate {{.*}} {plan = #tamoe.dispatch_plan<tamoe, shares = [4.545455e-01, 4.545455e-01, 4.545455e-02], predicted_us = 3.270000e+01>}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax : tensor<1000x4xf32> -> tensor<1000x2xi32>, tensor<1000x2xf32>, tensor<1000x4xf32>
    // CHECK: tamoe.dispatch {{.*}} {plan = #tamoe.dispatch_plan<tamoe, shares = [4.545455e-01, 4.545455e-01, 4.545455e-02], predicted_us = 3.270000e+01>}
    // expected-remark @+1 {{planned 'tamoe' dispatch on 'two-by-two': 32.7 us (flat) vs 114.5 us with uniform routing (3.50x)}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<1000x500xbf16>, tensor<1000x2xi32> -> tensor<2000x500xbf16>, tensor<4xi32>, tensor<1000x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<2000x500xbf16>, tensor<4xi32> -> tensor<?x500xbf16>
    return %recv : tensor<?x500xbf16>
  }

  // One router for two layers (a shared gate, or a forward computed again):
  // both dispatches are planned for the same pattern, and the gate carries
  // it once with both exchanges' predicted times added (32.7 + 305.4 us), not
  // the last layer's alone. The second run plans the same.
  // CHECK-LABEL: func.func @shared_router
  func.func @shared_router(%tokens: tensor<1000x500xbf16>, %wide: tensor<1000x4000xf32>, %logits: tensor<1000x4xf32>) -> (tensor<?x500xbf16>, tensor<?x4000xf32>) {
    // CHECK: tamoe.gate {{.*}} {plan = #tamoe.dispatch_plan<tamoe, shares = [4.545455e-01, 4.545455e-01, 4.545455e-02], predicted_us = 3.381000e+02>}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax : tensor<1000x4xf32> -> tensor<1000x2xi32>, tensor<1000x2xf32>, tensor<1000x4xf32>
    // CHECK: tamoe.dispatch {{.*}} {plan = #tamoe.dispatch_plan<tamoe, shares = [4.545455e-01, 4.545455e-01, 4.545455e-02], predicted_us = 3.270000e+01>}
    // expected-remark @+1 {{planned 'tamoe' dispatch on 'two-by-two': 32.7 us (flat)}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<1000x500xbf16>, tensor<1000x2xi32> -> tensor<2000x500xbf16>, tensor<4xi32>, tensor<1000x2xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<2000x500xbf16>, tensor<4xi32> -> tensor<?x500xbf16>
    // CHECK: tamoe.dispatch {{.*}} {plan = #tamoe.dispatch_plan<tamoe, shares = [4.545455e-01, 4.545455e-01, 4.545455e-02], predicted_us = 3.054000e+02>}
    // expected-remark @+1 {{planned 'tamoe' dispatch on 'two-by-two': 305.4 us (flat)}}
    %rows2, %counts2, %pos2, %dropped2 = tamoe.dispatch %wide, %ids : tensor<1000x4000xf32>, tensor<1000x2xi32> -> tensor<2000x4000xf32>, tensor<4xi32>, tensor<1000x2xi32>, tensor<i64>
    %recv2, %recv_counts2 = tamoe.all_to_all %rows2, %counts2 on @ep : tensor<2000x4000xf32>, tensor<4xi32> -> tensor<?x4000xf32>
    return %recv, %recv2 : tensor<?x500xbf16>, tensor<?x4000xf32>
  }
}
