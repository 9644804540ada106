// RUN: tamoe-opt %s -split-input-file -allow-unregistered-dialect --tamoe-inject-topology-aux-loss -verify-diagnostics

#dense = #tamoe.dispatch_plan<optimal, matrix = [1.0, 0.0, 0.0, 1.0], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  func.func @f(%tokens: tensor<16x8xf32>, %ids: tensor<16x1xi32>) {
    // expected-error @+1 {{the topology loss needs a plan with a share per level; dense plans are not supported}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #dense} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  func.func @f(%tokens: tensor<16x8xf32>, %ids: tensor<16x1xi32>) {
    // expected-error @+1 {{the topology loss needs the tamoe.gate that chose the experts (for the router probabilities)}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-error @+1 {{cannot tell this rank: the layer's counts feed no tamoe.all_to_all}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<optimal, shares = [1.0, 1.0e-300], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  // A share that is not 0 but too small for the weights' type: 1 / (2 x
  // 1e-300) is no f32.
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-error @+1 {{the plan's shares[1] = 1.000000e-300 gives its experts the weight 5.000000e+299, which 'f32' cannot hold; the topology loss weighs experts by 1 / share}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<optimal, shares = [0.999999, 1.0e-6], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  // f16 holds no weight above 65504: 1 / (2 x 1e-6) is one.
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf16>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf16> -> tensor<16x1xi32>, tensor<16x1xf16>, tensor<16x2xf16>
    // expected-error @+1 {{the plan's shares[1] = 1.000000e-06 gives its experts the weight 5.000000e+05, which 'f16' cannot hold; the topology loss weighs experts by 1 / share}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [1.220703125e-4, 1.220703125e-4], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"wide", [<"node", fanout = 8192, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 8192)
  // The weights are one constant [ranks, experts] table: 8192 x 8192 is
  // past its bound.
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x8192xf32>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x8192xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x8192xf32>
    // expected-error @+1 {{the topology loss's weight table would hold 8192 ranks x 8192 experts, more than 16777216 weights in one constant}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<8192xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<8192xi32> -> tensor<?x8xf32>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<optimal, shares = [1.0, 0.0], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-error @+1 {{the plan gives some ranks no share; the topology loss weighs experts by 1 / share}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x3xf32>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x3xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x3xf32>
    // expected-error @+1 {{the plan does not fit topology 'pair' and 3 experts (run tamoe-plan-dispatch)}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<3xi32>, tensor<16x1xi32>, tensor<i64>
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>, %c: i1) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    scf.if %c {
      // expected-error @+1 {{an inserted loss needs the layer in the single block of a func.func}}
      %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
      %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    }
    return
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-error @+1 {{the loss must follow the layer's tamoe.dispatch: with a capacity it may count only the dispatched assignments}}
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x2xf32>, tensor<16x1xi32> -> tensor<f32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids capacity 4 {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<8x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<8x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    return %loss : tensor<f32>
  }
}

// -----

#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  // No loss result to add into, and a new one would leave @g's call with
  // the old signature (and @g's loss without the topology loss).
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-error @+1 {{cannot return the inserted topology loss as a new result of @f, which is used elsewhere: give it a 'tensor<f32>' result (its loss) to add the topology loss into}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    return
  }
  func.func @g(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) {
    // expected-note @+1 {{used here}}
    call @f(%tokens, %logits) : (tensor<16x8xf32>, tensor<16x2xf32>) -> ()
    return
  }
}

// -----

// A use from an enclosing symbol table counts too.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  builtin.module @inner attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
    shard.grid @ep(shape = 2)
    func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) {
      %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
      // expected-error @+1 {{cannot return the inserted topology loss as a new result of @f, which is used elsewhere}}
      %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
      %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
      return
    }
  }
  func.func @g() {
    // expected-note @+1 {{used here}}
    "test.use"() {callee = @inner::@f} : () -> ()
    return
  }
}

// -----

// The exchange's group has 4 ranks but the topology 2: ranks 2 and 3 would
// select rows past the end of the 2-row weight table.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 4)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x4xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x4xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<4xi32>, tensor<16x1xi32>, tensor<i64>
    // expected-error @+1 {{the layer's exchange runs over a group of 4 ranks on @ep, but topology 'pair' has 2 ranks: the topology loss needs a weight row for every rank of the group}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<4xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x4xf32>, tensor<16x1xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// A grid whose size is known only at run time may not be the topology's.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = ?)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x4xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x4xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x4xf32>
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<4xi32>, tensor<16x1xi32>, tensor<i64>
    // expected-error @+1 {{the layer's exchange runs over a group on @ep whose size is known only at run time, but topology 'pair' has 2 ranks: the topology loss needs a weight row for every rank of the group}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x8xf32>, tensor<4xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x4xf32>, tensor<16x1xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// The gate scores 2 experts, the dispatch counts 4: weights for 4 experts
// would not fit the loss of 2.
#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    // expected-error @+1 {{the layer's tamoe.gate scores 2 experts but the dispatch counts 4; the topology loss weighs the gate's experts}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<16x8xf32>, tensor<4xi32>, tensor<16x1xi32>, tensor<i64>
    %per_rank = tensor.expand_shape %counts [[0, 1]] output_shape [2, 2] : tensor<4xi32> into tensor<2x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %per_rank on @ep : tensor<16x8xf32>, tensor<2x2xi32> -> tensor<?x8xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<16x2xf32>, tensor<16x1xi32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// A loss in a region before the dispatch cannot read its positions (it
// became an operand that does not dominate its use).
#plan = #tamoe.dispatch_plan<uniform, shares = [0.5, 0.5], predicted_us = 1.0>
module attributes {tamoe.topology = #tamoe.topology<"pair", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2)
  func.func @f(%tokens: tensor<16x8xf32>, %logits: tensor<16x2xf32>, %c: i1) -> tensor<f32> {
    %ids, %w, %p = tamoe.gate %logits top 1 softmax {plan = #plan} : tensor<16x2xf32> -> tensor<16x1xi32>, tensor<16x1xf32>, tensor<16x2xf32>
    %loss = scf.if %c -> tensor<f32> {
      // expected-error @+1 {{the loss must follow the layer's tamoe.dispatch: with a capacity it may count only the dispatched assignments}}
      %l = tamoe.aux_loss switch %p, %ids : tensor<16x2xf32>, tensor<16x1xi32> -> tensor<f32>
      scf.yield %l : tensor<f32>
    } else {
      %z = arith.constant dense<0.0> : tensor<f32>
      scf.yield %z : tensor<f32>
    }
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids capacity 4 {plan = #plan} : tensor<16x8xf32>, tensor<16x1xi32> -> tensor<8x8xf32>, tensor<2xi32>, tensor<16x1xi32>, tensor<i64>
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<8x8xf32>, tensor<2xi32> -> tensor<?x8xf32>
    return %loss : tensor<f32>
  }
}

// -----

// One router, two layers planned for different patterns: the one topology
// loss of the gate cannot weigh its experts by both (it took the first
// layer's weights and ignored the second's plan).
module attributes {tamoe.topology = #tamoe.topology<"two-by-two", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 0.5, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 10.0, down_bandwidth = 10.0, latency = 10.0, per_message = 2.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @shared_router(%tokens: tensor<8x16xf32>, %logits: tensor<8x4xf32>) -> (tensor<?x16xf32>, tensor<?x16xf32>, tensor<f32>) {
    // expected-note @+1 {{the shared tamoe.gate}}
    %ids, %w, %p = tamoe.gate %logits top 2 softmax : tensor<8x4xf32> -> tensor<8x2xi32>, tensor<8x2xf32>, tensor<8x4xf32>
    // expected-note @+1 {{the other layer}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids {plan = #tamoe.dispatch_plan<uniform, shares = [0.25, 0.25, 0.25], predicted_us = 1.0>} : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<4xi32>, tensor<8x2xi32>, tensor<i64>
    %recv, %rc = tamoe.all_to_all %rows, %counts on @ep : tensor<16x16xf32>, tensor<4xi32> -> tensor<?x16xf32>
    // expected-error @+1 {{the tamoe.gate that routes this layer also routes another, planned for another pattern: one router realises one dispatch pattern, and its topology loss weighs the experts by one plan (this layer's #tamoe.dispatch_plan<tamoe, shares = [4.000000e-01, 4.000000e-01, 1.000000e-01], predicted_us = 1.000000e+00>, the other's #tamoe.dispatch_plan<uniform, shares = [2.500000e-01, 2.500000e-01, 2.500000e-01], predicted_us = 1.000000e+00>)}}
    %rows2, %counts2, %pos2, %dropped2 = tamoe.dispatch %tokens, %ids {plan = #tamoe.dispatch_plan<tamoe, shares = [0.4, 0.4, 0.1], predicted_us = 1.0>} : tensor<8x16xf32>, tensor<8x2xi32> -> tensor<16x16xf32>, tensor<4xi32>, tensor<8x2xi32>, tensor<i64>
    %recv2, %rc2 = tamoe.all_to_all %rows2, %counts2 on @ep : tensor<16x16xf32>, tensor<4xi32> -> tensor<?x16xf32>
    %loss = tamoe.aux_loss switch %p, %ids : tensor<8x4xf32>, tensor<8x2xi32> -> tensor<f32>
    return %recv, %recv2, %loss : tensor<?x16xf32>, tensor<?x16xf32>, tensor<f32>
  }
}
