// RUN: tamoe-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{unknown tamoe attribute 'tamoe.topo'}}
module attributes {tamoe.topo = 1 : i64} {}

// -----

// expected-error @+1 {{'tamoe.topology' must be a #tamoe.topology attribute}}
module attributes {tamoe.topology = "dgx"} {}

// -----

#level = #tamoe.level<"node", fanout = 4, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>
module {
  // expected-error @+1 {{'tamoe.topology' belongs on a builtin.module}}
  func.func private @f() attributes {tamoe.topology = #tamoe.topology<"t", [#level]>}
}

// -----

// Bandwidths are float literals: "20" must be written "20.0".
// expected-error @+3 {{unexpected decimal integer literal for a floating point value}}
// expected-note @+2 {{add a trailing dot to make the literal a float}}
// expected-error @+1 {{failed to parse TAMoE_TopologyLevelAttr parameter 'up_bandwidth'}}
#bad = #tamoe.level<"node", fanout = 4, up_bandwidth = 20, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>

// -----

// The attribute obeys the rules of topology files (one verifier for both).
// expected-error @+1 {{invalid topology: levels[0].fanout: expected an integer >= 1, got 0}}
module attributes {tamoe.topology = #tamoe.topology<"t", [<"node", fanout = 0, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>]>} {}

// -----

// expected-error @+1 {{invalid topology: levels[1].name: duplicate level name 'node'}}
module attributes {tamoe.topology = #tamoe.topology<"t", [<"node", fanout = 2, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"node", fanout = 2, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = shared>]>} {}

// -----

// A topology without levels does not even parse (files say "levels: expected
// at least one level").
// expected-error @+2 {{expected '<'}}
// expected-error @+1 {{failed to parse TAMoE_TopologyAttr parameter 'levels'}}
module attributes {tamoe.topology = #tamoe.topology<"t", []>} {}

// -----

// expected-error @+1 {{invalid topology: levels[0].latency_us: expected a number of microseconds in [0, 1000000], got -1}}
module attributes {tamoe.topology = #tamoe.topology<"t", [<"node", fanout = 2, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = -1.0, uplink = per_rank>]>} {}

// -----

//===----------------------------------------------------------------------===//
// dispatch_plan
//===----------------------------------------------------------------------===//

// expected-error @+1 {{dispatch plan needs exactly one of 'shares' and 'matrix'}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<uniform, predicted_us = 1.0>}

// -----

// expected-error @+1 {{dispatch plan needs exactly one of 'shares' and 'matrix'}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<uniform, shares = [1.0], matrix = [1.0], predicted_us = 1.0>}

// -----

// expected-error @+1 {{dispatch plan 'shares' is empty}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<uniform, shares = [], predicted_us = 1.0>}

// -----

// expected-error @+1 {{dispatch plan 'shares' entries must be fractions in [0, 1], got 1.5}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<tamoe, shares = [1.5, 0.0], predicted_us = 1.0>}

// -----

// expected-error @+1 {{dispatch plan 'matrix' must hold P x P entries, got 3}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<optimal, matrix = [0.5, 0.5, 0.0], predicted_us = 1.0>}

// -----

// expected-error @+1 {{dispatch plan 'matrix' row 1 sums to 0.9, expected 1}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<optimal, matrix = [0.5, 0.5, 0.4, 0.5], predicted_us = 1.0>}

// -----

// expected-error @+1 {{dispatch plan 'predicted_us' must be >= 0, got -1}}
func.func private @f() attributes {p = #tamoe.dispatch_plan<uniform, shares = [1.0], predicted_us = -1.0>}

// -----

#topo = #tamoe.topology<"cpu-2x4", [#tamoe.level<"node", fanout = 4, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>, #tamoe.level<"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 1.0e+01, uplink = shared>]>
module attributes {tamoe.topology = #topo} {
  func.func @f(%logits: tensor<16x8xf32>) {
    // expected-error @+1 {{dispatch plan has 2 shares but topology 'cpu-2x4' has 2 levels (expected 3)}}
    %0:3 = tamoe.gate %logits top 2 softmax {plan = #tamoe.dispatch_plan<tamoe, shares = [0.5, 0.5], predicted_us = 1.0>} : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    return
  }
}

// -----

#topo = #tamoe.topology<"cpu-2x4", [#tamoe.level<"node", fanout = 4, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>, #tamoe.level<"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 1.0e+01, uplink = shared>]>
module attributes {tamoe.topology = #topo} {
  func.func @f(%logits: tensor<16x8xf32>) {
    // 0.25 + 3 * 0.125 + 4 * 0.125 = 1.125
    // expected-error @+1 {{dispatch plan row sums to 1.125 on topology 'cpu-2x4', expected 1}}
    %0:3 = tamoe.gate %logits top 2 softmax {plan = #tamoe.dispatch_plan<tamoe, shares = [0.25, 0.125, 0.125], predicted_us = 1.0>} : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    return
  }
}

// -----

#topo = #tamoe.topology<"pair", [#tamoe.level<"node", fanout = 2, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>]>
module attributes {tamoe.topology = #topo} {
  func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
    // expected-error @+1 {{dispatch plan 'matrix' has 9 entries but topology 'pair' has 2 ranks (expected 4)}}
    %0:4 = tamoe.dispatch %tokens, %ids {plan = #tamoe.dispatch_plan<optimal, matrix = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], predicted_us = 1.0>} : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    return
  }
}

// -----

//===----------------------------------------------------------------------===//
// gate
//===----------------------------------------------------------------------===//

func.func @f(%logits: tensor<16x8x2xf32>) {
  // expected-error @+1 {{operand #0 must be 2D tensor of floating-point values}}
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x8x2xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{k must be >= 1, got 0}}
  %0:3 = tamoe.gate %logits top 0 softmax : tensor<16x8xf32> -> tensor<16x0xi32>, tensor<16x0xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{k = 9 exceeds the number of experts (8)}}
  %0:3 = tamoe.gate %logits top 9 softmax : tensor<16x8xf32> -> tensor<16x9xi32>, tensor<16x9xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{expert_ids must have shape [S, k] = [16, 2], got [16, 3]}}
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x8xf32> -> tensor<16x3xi32>, tensor<16x2xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{weights must have shape [S, k] = [16, 2], got [8, 2]}}
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<8x2xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{weights must have the logits' element type 'f32'}}
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf16>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{probs must have the logits' type 'tensor<16x8xf32>'}}
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>
  return
}

// -----

// Expert 150 would be -106 in i8, an id that counts as dropped.
func.func @f(%logits: tensor<16x200xf32>) {
  // expected-error @+1 {{expert_ids of 'i8' cannot hold the ids of 200 experts}}
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x200xf32> -> tensor<16x2xi8>, tensor<16x2xf32>, tensor<16x200xf32>
  return
}

// -----

// 128 experts: ids up to 127 fit i8.
func.func @f(%logits: tensor<16x128xf32>) {
  %0:3 = tamoe.gate %logits top 2 softmax : tensor<16x128xf32> -> tensor<16x2xi8>, tensor<16x2xf32>, tensor<16x128xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{num_groups and groups_kept must be given together}}
  %0:3 = "tamoe.gate"(%logits) {k = 2 : i64, score = 0 : i32, num_groups = 4 : i64} : (tensor<16x8xf32>) -> (tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>)
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{num_groups must be >= 1, got 0}}
  %0:3 = tamoe.gate %logits top 2 softmax groups 0 keep 1 : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{groups_kept must be in [1, 4], got 5}}
  %0:3 = tamoe.gate %logits top 2 softmax groups 4 keep 5 : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x?xf32>) {
  // expected-error @+1 {{group-limited routing needs a static number of experts}}
  %0:3 = tamoe.gate %logits top 2 softmax groups 2 keep 1 : tensor<16x?xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x?xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{num_groups (3) must divide the number of experts (8)}}
  %0:3 = tamoe.gate %logits top 2 softmax groups 3 keep 1 : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
  return
}

// -----

func.func @f(%logits: tensor<16x8xf32>) {
  // expected-error @+1 {{k = 3 exceeds the 2 experts of the 1 kept groups}}
  %0:3 = tamoe.gate %logits top 3 softmax groups 4 keep 1 : tensor<16x8xf32> -> tensor<16x3xi32>, tensor<16x3xf32>, tensor<16x8xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// dispatch
//===----------------------------------------------------------------------===//

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<8x2xi32>) {
  // expected-error @+1 {{expert_ids must have one row per token: [8, 2] for 16 tokens}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<8x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<8x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{expert_counts must have a static size >= 1 (the number of experts)}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<?xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{positions must have the shape of expert_ids [16, 2]}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<2x16xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{dispatched rows must have the tokens' row type [?, 64] of 'f32'}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xbf16>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity and capacity_factor are mutually exclusive}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity 4 capacity_factor 1.0 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity must be >= 0, got -1}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity -1 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity_factor must be a finite number > 0, got 0}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity_factor 0.0 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity_factor must be a finite number > 0, got nan}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity_factor 0x7FF8000000000000 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity_factor must be a finite number > 0, got inf}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity_factor 0x7FF0000000000000 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

// Capacities past what E * capacity can hold in int64 cap nothing: S * k
// rows, never a wrapped or negative count.
func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{dispatched must have 32 rows (min(S * k, E * capacity)), got 16}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity 9223372036854775807 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<16x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{dispatched must have 32 rows (min(S * k, E * capacity)), got 34}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity 1152921504606846978 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<34x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{dispatched must have 32 rows (min(S * k, E * capacity)), got 8}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity_factor 1.0e300 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<8x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<4611686018427387904x64xf32>, %ids: tensor<4611686018427387904x4xi32>) {
  // expected-error @+1 {{has more assignments than int64 holds: 4611686018427387904 tokens x 4}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<4611686018427387904x64xf32>, tensor<4611686018427387904x4xi32> -> tensor<4x64xf32>, tensor<8xi32>, tensor<4611686018427387904x4xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{a drop policy needs a capacity (without one the layer is dropless)}}
  %0:4 = tamoe.dispatch %tokens, %ids drop position : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{'drop probability' needs the weights operand}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity 4 drop probability : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %w: tensor<16x2xf32>) {
  // expected-error @+1 {{weights are only used by 'drop probability'}}
  %0:4 = tamoe.dispatch %tokens, %ids weights %w capacity 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %w: tensor<16x1xf32>) {
  // expected-error @+1 {{weights must have the shape of expert_ids [16, 2]}}
  %0:4 = tamoe.dispatch %tokens, %ids weights %w capacity 4 drop probability : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x1xf32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<?x64xf32>, %ids: tensor<?x2xi32>) {
  // expected-error @+1 {{dispatched must have a dynamic row count when the number of tokens or k is dynamic}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<?x64xf32>, tensor<?x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<?x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{dispatched must have 32 rows (S * k), got 30}}
  %0:4 = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<30x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

func.func @f(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) {
  // ceil(0.5 * 16 * 2 / 8) = 2 rows per expert, 8 * 2 = 16.
  // expected-error @+1 {{dispatched must have 16 rows (min(S * k, E * capacity)), got 32}}
  %0:4 = tamoe.dispatch %tokens, %ids capacity_factor 0.5 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  return
}

// -----

//===----------------------------------------------------------------------===//
// all_to_all
//===----------------------------------------------------------------------===//

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<f32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{send must have at least one dimension (rows)}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<f32>, tensor<8xi32> -> tensor<f32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{received rows must have the shape and element type of send rows}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x32xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xf32>) {
  // expected-error @+1 {{send_counts must be a tensor of integers with one row per peer ([P] or [P, ...])}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xf32> -> tensor<?x64xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>, %expected: tensor<8xi64>) {
  // expected-error @+1 {{failed to verify that expected counts have the type of send_counts}}
  %0:2 = "tamoe.all_to_all"(%rows, %counts, %expected) <{grid = @ep}> : (tensor<32x64xf32>, tensor<8xi32>, tensor<8xi64>) -> (tensor<?x64xf32>, tensor<8xi32>)
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>, %expected: tensor<4xi32>) {
  // expected-error @+1 {{failed to verify that expected counts have the type of send_counts}}
  %0 = "tamoe.all_to_all_start"(%rows, %counts, %expected) <{grid = @ep}> : (tensor<32x64xf32>, tensor<8xi32>, tensor<4xi32>) -> !tamoe.exchange
  %1:2 = tamoe.all_to_all_wait %0 : tensor<?x64xf32>, tensor<8xi32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<?xi32>) {
  // expected-error @+1 {{send_counts must have a static shape}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{failed to verify that all of {send_counts, recv_counts} have same type}}
  %0, %1 = "tamoe.all_to_all"(%rows, %counts) {grid = @ep} : (tensor<32x64xf32>, tensor<8xi32>) -> (tensor<?x64xf32>, tensor<8xi64>)
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{grid axes must be unique and non-negative}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep axes = [1, 1] : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
  return
}

// -----

#topo = #tamoe.topology<"pair", [#tamoe.level<"node", fanout = 2, up_bandwidth = 2.0e+01, down_bandwidth = 2.0e+01, latency = 1.0, per_message = 1.0, uplink = per_rank>]>
module attributes {tamoe.topology = #topo} {
  shard.grid @ep(shape = 2)
  func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<2xi32>) {
    // expected-error @+1 {{level 'rack' is not a level of topology 'pair'}}
    %0, %1 = tamoe.all_to_all %rows, %counts on @ep level "rack" : tensor<32x64xf32>, tensor<2xi32> -> tensor<?x64xf32>
    return
  }
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{'@nope' does not name a shard.grid}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @nope : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{grid axis 2 is out of range for grid @ep of rank 2}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep axes = [2] : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<4xi32>) {
  // expected-error @+1 {{send_counts has 4 peers but the group on @ep has 8 ranks}}
  %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<4xi32> -> tensor<?x64xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// combine
//===----------------------------------------------------------------------===//

func.func @f(%rows: tensor<32x64xf32>, %positions: tensor<16x2xi32>, %w: tensor<16x1xf32>) {
  // expected-error @+1 {{positions and weights must have the same shape [S, k], got [16, 2] and [16, 1]}}
  %0 = tamoe.combine %rows, %positions, %w : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x1xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %positions: tensor<16x2xi32>, %w: tensor<16x2xf32>) {
  // expected-error @+1 {{combined must have the expert outputs' element type 'f32'}}
  %0 = tamoe.combine %rows, %positions, %w : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x64xbf16>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %positions: tensor<16x2xi32>, %w: tensor<16x2xf32>) {
  // expected-error @+1 {{combined must have shape [S, H] = [16, 64], got [16, 32]}}
  %0 = tamoe.combine %rows, %positions, %w : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x32xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// aux_loss
//===----------------------------------------------------------------------===//

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<8x2xi32>) {
  // expected-error @+1 {{probs and expert_ids must have one row per token, got [16, 8] and [8, 2]}}
  %0 = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<8x2xi32> -> tensor<f32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x9xi32>) {
  // expected-error @+1 {{k = 9 exceeds the number of experts (8)}}
  %0 = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<16x9xi32> -> tensor<f32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{'topology' loss needs the per-expert weights of this rank}}
  %0 = tamoe.aux_loss topology %probs, %ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'switch' loss takes no weights}}
  %0 = tamoe.aux_loss switch %probs, %ids weights %w : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32> -> tensor<f32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{weights must have one entry per expert (8), got 4}}
  %0 = tamoe.aux_loss topology %probs, %ids weights %w : tensor<16x8xf32>, tensor<16x2xi32>, tensor<4xf32> -> tensor<f32>
  return
}

// -----

// No assignments to take fractions of (tamoe-expand-gate's loss was 0 / 0,
// the runtime's an abort).
func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x0xi32>) {
  // expected-error @+1 {{k must be >= 1, got 0 (expert_ids [16, 0])}}
  %0 = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<16x0xi32> -> tensor<f32>
  return
}

// -----

// Weights of another type made tamoe-expand-gate build an arith.mulf of f32
// and f64.
func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %w: tensor<8xf64>) {
  // expected-error @+1 {{weights must have the probs' element type 'f32', got 'f64'}}
  %0 = tamoe.aux_loss topology %probs, %ids weights %w : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf64> -> tensor<f32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x1xi32>) {
  // expected-error @+1 {{dispatched positions must have the shape of expert_ids [16, 2], got [16, 1]}}
  %0 = tamoe.aux_loss switch %probs, %ids dispatched %pos : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x1xi32> -> tensor<f32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{loss must have the probs' element type 'f32'}}
  %0 = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f64>
  return
}

// -----

//===----------------------------------------------------------------------===//
// regroup
//===----------------------------------------------------------------------===//

func.func @f(%rows: tensor<f32>, %counts: tensor<2x4xi32>) {
  // expected-error @+1 {{rows must have at least one dimension}}
  %0, %1 = tamoe.regroup %rows, %counts : tensor<f32>, tensor<2x4xi32> -> tensor<f32>, tensor<4x2xi32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<2x4xi32>) {
  // expected-error @+1 {{regrouped must have the type of rows}}
  %0, %1 = tamoe.regroup %rows, %counts : tensor<32x64xf32>, tensor<2x4xi32> -> tensor<32x32xf32>, tensor<4x2xi32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<?x4xi32>) {
  // expected-error @+1 {{counts must have a static shape}}
  %0, %1 = tamoe.regroup %rows, %counts : tensor<32x64xf32>, tensor<?x4xi32> -> tensor<32x64xf32>, tensor<4x2xi32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<2x4xi32>) {
  // expected-error @+1 {{regrouped_counts must be counts with its first two dimensions transposed: [4, 2] of 'i32'}}
  %0, %1 = tamoe.regroup %rows, %counts : tensor<32x64xf32>, tensor<2x4xi32> -> tensor<32x64xf32>, tensor<2x4xi32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{counts must have a static shape [A, B, ...]}}
  %0, %1 = tamoe.regroup %rows, %counts : tensor<32x64xf32>, tensor<8xi32> -> tensor<32x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<2x4x3xi32>) {
  // expected-error @+1 {{regrouped_counts must be counts with its first two dimensions transposed: [4, 2, 3] of 'i32'}}
  %0, %1 = tamoe.regroup %rows, %counts : tensor<32x64xf32>, tensor<2x4x3xi32> -> tensor<32x64xf32>, tensor<4x3x2xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x2xi32>) {
  // expected-error @+1 {{experts_per_node must be >= 1, got 0}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 0 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x3xi32>) {
  // expected-error @+1 {{positions must have shape [S, k] (the shape of expert_ids) = [16, 2], got [16, 3]}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x3xi32> -> tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%t: tensor<8x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x2xi32>) {
  // expected-error @+1 {{expert_ids must have shape [S, k] = [8, 2], got [16, 2]}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<8x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x2xi32>) {
  // expected-error @+1 {{unique must have the rows of tokens: [?, 64] of 'f32'}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xf16>, tensor<32x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x2xi32>) {
  // expected-error @+1 {{routes must have the element type of expert_ids 'i32'}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<32x2xi64>, tensor<2xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x2xi32>) {
  // expected-error @+1 {{routes must have shape [R, k] (one row per unique row) = [32, 2], got [30, 2]}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<30x2xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<16x2xi32>) {
  // expected-error @+1 {{node_counts must have a static size >= 1 (the number of nodes)}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<32x2xi32>, tensor<?xi32>
  return
}

// -----

func.func @f(%t: tensor<16x64xf32>, %ids: tensor<16x4xi32>, %pos: tensor<16x4xi32>) {
  // expected-error @+1 {{unique must have at most 32 rows (S * min(k, nodes)), got 64}}
  %0, %1, %2 = tamoe.dedup_pack %t, %ids, %pos experts_per_node 4 : tensor<16x64xf32>, tensor<16x4xi32>, tensor<16x4xi32> -> tensor<64x64xf32>, tensor<64x4xi32>, tensor<2xi32>
  return
}

// -----

func.func @f(%u: tensor<?x64xf32>, %r: tensor<?x2xi32>, %c: tensor<2xi32>) {
  // expected-error @+1 {{experts_per_rank must be >= 1, got 0}}
  %0, %1 = tamoe.dedup_expand %u, %r, %c experts_per_rank 0 : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2xi32> -> tensor<?x64xf32>, tensor<4x2x1xi32>
  return
}

// -----

func.func @f(%u: tensor<8x64xf32>, %r: tensor<6x2xi32>, %c: tensor<2xi32>) {
  // expected-error @+1 {{routes must have one row per unique row, got [6, 2] for [8, 64]}}
  %0, %1 = tamoe.dedup_expand %u, %r, %c experts_per_rank 1 : tensor<8x64xf32>, tensor<6x2xi32>, tensor<2xi32> -> tensor<?x64xf32>, tensor<4x2x1xi32>
  return
}

// -----

func.func @f(%u: tensor<?x64xf32>, %r: tensor<?x2xi32>, %c: tensor<2xi32>) {
  // expected-error @+1 {{expanded must have the rows of unique: [?, 64] of 'f32'}}
  %0, %1 = tamoe.dedup_expand %u, %r, %c experts_per_rank 1 : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2xi32> -> tensor<?x32xf32>, tensor<4x2x1xi32>
  return
}

// -----

func.func @f(%u: tensor<?x64xf32>, %r: tensor<?x2xi32>, %c: tensor<?xi32>) {
  // expected-error @+1 {{counts must have a static size (the number of nodes)}}
  %0, %1 = tamoe.dedup_expand %u, %r, %c experts_per_rank 1 : tensor<?x64xf32>, tensor<?x2xi32>, tensor<?xi32> -> tensor<?x64xf32>, tensor<4x2x1xi32>
  return
}

// -----

func.func @f(%u: tensor<?x64xf32>, %r: tensor<?x2xi32>, %c: tensor<2xi32>) {
  // expected-error @+1 {{expanded_counts must be [ranks per node, 2, 2] of 'i32', got 'tensor<4x2x1xi32>'}}
  %0, %1 = tamoe.dedup_expand %u, %r, %c experts_per_rank 2 : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2xi32> -> tensor<?x64xf32>, tensor<4x2x1xi32>
  return
}

// -----

func.func @f(%rows: tensor<?x32xf32>, %counts: tensor<?x2xi32>, %w: tensor<2x32x64xf32>) {
  // expected-error @+1 {{counts must have a static shape ([n] or [P, n])}}
  %0 = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x32xf32>, tensor<?x2xi32>, tensor<2x32x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<?x32xf32>, %counts: tensor<8x2xi32>, %w: tensor<3x32x64xf32>) {
  // expected-error @+1 {{weights must hold one matrix per local expert: 2 (the last dimension of counts), got 3}}
  %0 = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x32xf32>, tensor<8x2xi32>, tensor<3x32x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<?x32xf32>, %counts: tensor<8x2xi32>, %w: tensor<2x16x64xf32>) {
  // expected-error @+1 {{weights must be [n, H, F] with H = 32 (the row size), got [2, 16, 64]}}
  %0 = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x16x64xf32> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<?x32xf32>, %counts: tensor<8x2xi32>, %w: tensor<2x32x64xf16>) {
  // expected-error @+1 {{rows, weights and result must have one element type, got 'f32', 'f16' and 'f32'}}
  %0 = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf16> -> tensor<?x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<?x32xf32>, %counts: tensor<8x2xi32>, %w: tensor<2x32x64xf32>) {
  // expected-error @+1 {{result must have shape [R, F] = [?, 64], got [?, 32]}}
  %0 = tamoe.grouped_matmul %rows, %counts, %w : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32> -> tensor<?x32xf32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{needs the gradient of the weights, of the probs or of both}}
  %0 = tamoe.gate_grad %probs, %ids softmax : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<8x2xi32>, %dw: tensor<16x2xf32>) {
  // expected-error @+1 {{probs and expert_ids must have one row per token, got [16, 8] and [8, 2]}}
  %0 = tamoe.gate_grad %probs, %ids softmax d_weights %dw : tensor<16x8xf32>, tensor<8x2xi32>, tensor<16x2xf32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %dw: tensor<16x3xf32>) {
  // expected-error @+1 {{d_weights must have the type of the weights 'tensor<16x2xf32>', got 'tensor<16x3xf32>'}}
  %0 = tamoe.gate_grad %probs, %ids softmax d_weights %dw : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x3xf32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %dp: tensor<16x8xf32>) {
  // expected-error @+1 {{d_logits must have the type of probs 'tensor<16x8xf32>', got 'tensor<16x4xf32>'}}
  %0 = tamoe.gate_grad %probs, %ids softmax d_probs %dp : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x8xf32> -> tensor<16x4xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %pos: tensor<16x2xi32>, %w: tensor<16x2xf32>, %d: tensor<16x64xf32>) {
  // expected-error @+1 {{has a d_weights result exactly when it has weights}}
  %0 = tamoe.combine_grad %d, %rows, %pos weights %w : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<32x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %pos: tensor<16x2xi32>, %d: tensor<16x32xf32>) {
  // expected-error @+1 {{d_combined must have the type of the combined tokens 'tensor<16x64xf32>', got 'tensor<16x32xf32>'}}
  %0 = tamoe.combine_grad %d, %rows, %pos : tensor<16x32xf32>, tensor<32x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %pos: tensor<16x2xi32>, %w: tensor<16x3xf32>, %d: tensor<16x64xf32>) {
  // expected-error @+1 {{positions and weights must have the same shape [S, k], got [16, 2] and [16, 3]}}
  %0:2 = tamoe.combine_grad %d, %rows, %pos weights %w : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x3xf32> -> tensor<32x64xf32>, tensor<16x3xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<?xi32>, %w: tensor<2x64x32xf32>, %d: tensor<32x32xf32>) {
  // expected-error @+1 {{counts must have a static shape ([n] or [P, n])}}
  %0:2 = tamoe.grouped_matmul_grad %rows, %counts, %w, %d : tensor<32x64xf32>, tensor<?xi32>, tensor<2x64x32xf32>, tensor<32x32xf32> -> tensor<32x64xf32>, tensor<2x64x32xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>, %w: tensor<3x64x32xf32>, %d: tensor<32x32xf32>) {
  // expected-error @+1 {{weights must be [n, H, F] with n = 2 and H = 64, got [3, 64, 32]}}
  %0:2 = tamoe.grouped_matmul_grad %rows, %counts, %w, %d : tensor<32x64xf32>, tensor<8x2xi32>, tensor<3x64x32xf32>, tensor<32x32xf32> -> tensor<32x64xf32>, tensor<3x64x32xf32>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>, %w: tensor<2x64x32xf16>, %d: tensor<32x32xf32>) {
  // expected-error @+1 {{rows and weights must have one element type, got 'f32' and 'f16'}}
  %0:2 = tamoe.grouped_matmul_grad %rows, %counts, %w, %d : tensor<32x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf16>, tensor<32x32xf32> -> tensor<32x64xf32>, tensor<2x64x32xf16>
  return
}

// -----

func.func @f(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>, %w: tensor<2x64x32xf32>, %d: tensor<32x16xf32>) {
  // expected-error @+1 {{d_result must have the type of the result 'tensor<32x32xf32>', got 'tensor<32x16xf32>'}}
  %0:2 = tamoe.grouped_matmul_grad %rows, %counts, %w, %d : tensor<32x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf32>, tensor<32x16xf32> -> tensor<32x64xf32>, tensor<2x64x32xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{d_probs and expert_ids must have one row per token, got [8, 8] and [16, 2]}}
  %0 = tamoe.aux_loss_grad switch %ids, %d : tensor<16x2xi32>, tensor<f32> -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{d_probs must have a static number of experts}}
  %0 = tamoe.aux_loss_grad switch %ids, %d : tensor<16x2xi32>, tensor<f32> -> tensor<16x?xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{'topology' loss needs the per-expert weights of this rank}}
  %0 = tamoe.aux_loss_grad topology %ids, %d : tensor<16x2xi32>, tensor<f32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'switch' loss takes no weights}}
  %0 = tamoe.aux_loss_grad switch %ids, %d weights %w : tensor<16x2xi32>, tensor<f32>, tensor<8xf32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{weights must have one entry per expert (8), got 4}}
  %0 = tamoe.aux_loss_grad topology %ids, %d weights %w : tensor<16x2xi32>, tensor<f32>, tensor<4xf32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>, %w: tensor<8xbf16>) {
  // expected-error @+1 {{weights must have the d_probs' element type 'f32', got 'bf16'}}
  %0 = tamoe.aux_loss_grad topology %ids, %d weights %w : tensor<16x2xi32>, tensor<f32>, tensor<8xbf16> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x0xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{k must be >= 1, got 0 (expert_ids [16, 0])}}
  %0 = tamoe.aux_loss_grad switch %ids, %d : tensor<16x0xi32>, tensor<f32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f32>, %pos: tensor<16x1xi32>) {
  // expected-error @+1 {{dispatched positions must have the type of expert_ids 'tensor<16x2xi32>', got 'tensor<16x1xi32>'}}
  %0 = tamoe.aux_loss_grad switch %ids, %d dispatched %pos : tensor<16x2xi32>, tensor<f32>, tensor<16x1xi32> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%ids: tensor<16x2xi32>, %d: tensor<f16>) {
  // expected-error @+1 {{d_loss must have the d_probs' element type 'f32'}}
  %0 = tamoe.aux_loss_grad switch %ids, %d : tensor<16x2xi32>, tensor<f16> -> tensor<16x8xf32>
  return
}

// -----

func.func @f(%d: tensor<32x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{experts_per_node must be >= 1, got 0}}
  %0 = tamoe.dedup_pack_grad %d, %ids, %ids experts_per_node 0 nodes 2 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @f(%d: tensor<32x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{nodes must be >= 1, got 0}}
  %0 = tamoe.dedup_pack_grad %d, %ids, %ids experts_per_node 4 nodes 0 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @f(%d: tensor<32x64xf32>, %ids: tensor<16x2xi32>, %pos: tensor<8x2xi32>) {
  // expected-error @+1 {{positions must have the type of expert_ids 'tensor<16x2xi32>', got 'tensor<8x2xi32>'}}
  %0 = tamoe.dedup_pack_grad %d, %ids, %pos experts_per_node 4 nodes 2 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<8x2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @f(%d: tensor<32x64xf32>, %ids: tensor<16x2xi32>) {
  // expected-error @+1 {{d_tokens must have the type of the tokens 'tensor<16x64xf32>', got 'tensor<16x32xf32>'}}
  %0 = tamoe.dedup_pack_grad %d, %ids, %ids experts_per_node 4 nodes 2 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<16x32xf32>
  return
}

// -----

func.func @f(%d: tensor<?x64xf32>, %routes: tensor<32x2xi32>, %counts: tensor<2xi32>) {
  // expected-error @+1 {{experts_per_rank must be >= 1, got 0}}
  %0 = tamoe.dedup_expand_grad %d, %routes, %counts experts_per_rank 0 ranks_per_node 4 : tensor<?x64xf32>, tensor<32x2xi32>, tensor<2xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @f(%d: tensor<?x64xf32>, %routes: tensor<32x2xi32>, %counts: tensor<2xi32>) {
  // expected-error @+1 {{ranks_per_node must be >= 1, got 0}}
  %0 = tamoe.dedup_expand_grad %d, %routes, %counts experts_per_rank 1 ranks_per_node 0 : tensor<?x64xf32>, tensor<32x2xi32>, tensor<2xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @f(%d: tensor<?x64xf32>, %routes: tensor<32x2xi32>, %counts: tensor<?xi32>) {
  // expected-error @+1 {{counts must have a static size (the number of nodes)}}
  %0 = tamoe.dedup_expand_grad %d, %routes, %counts experts_per_rank 1 ranks_per_node 4 : tensor<?x64xf32>, tensor<32x2xi32>, tensor<?xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @f(%d: tensor<?x64xf32>, %routes: tensor<32x2xi32>, %counts: tensor<2xi32>) {
  // expected-error @+1 {{d_unique must have the type of the unique rows 'tensor<32x64xf32>', got 'tensor<16x64xf32>'}}
  %0 = tamoe.dedup_expand_grad %d, %routes, %counts experts_per_rank 1 ranks_per_node 4 : tensor<?x64xf32>, tensor<32x2xi32>, tensor<2xi32> -> tensor<16x64xf32>
  return
}

// -----

func.func @f(%g: tensor<4xf32>) {
  // expected-error @+1 {{'@nowhere' does not name a shard.grid}}
  %0 = tamoe.all_reduce %g on @nowhere : tensor<4xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%g: tensor<4xf32>) {
  // expected-error @+1 {{grid axis 2 is out of range for grid @ep of rank 2}}
  %0 = tamoe.all_reduce %g on @ep axes = [2] : tensor<4xf32>
  return
}

// -----

shard.grid @ep(shape = 2x4)
func.func @f(%g: tensor<4xf32>) {
  // expected-error @+1 {{grid axes must be unique and non-negative}}
  %0 = tamoe.all_reduce %g on @ep axes = [1, 1] : tensor<4xf32>
  return
}

// -----

func.func @f(%p: tensor<4xf32>, %lr: f32) {
  // expected-error @+1 {{momentum must be in [0, 1], got 1.5}}
  %0:2 = tamoe.sgd %p, %p, %p lr %lr momentum 1.5 : tensor<4xf32>
  return
}

// -----

func.func @f(%p: tensor<4xf32>, %lr: f32) {
  // expected-error @+1 {{weight_decay must be in [0, 1], got -1}}
  %0:2 = tamoe.sgd %p, %p, %p lr %lr weight_decay -1.0 : tensor<4xf32>
  return
}

// -----

func.func @f(%p: tensor<4xf32>, %lr: f32, %step: i64) {
  // expected-error @+1 {{beta1 must be in [0, 0.999999], got 1}}
  %0:3 = tamoe.adam %p, %p, %p, %p step %step lr %lr {beta1 = 1.0 : f32} : tensor<4xf32>
  return
}

// -----

func.func @f(%p: tensor<4xf32>, %lr: f32, %step: i64) {
  // expected-error @+1 {{beta2 must be in [0, 0.999999], got -0.5}}
  %0:3 = tamoe.adam %p, %p, %p, %p step %step lr %lr {beta2 = -0.5 : f32} : tensor<4xf32>
  return
}

// -----

func.func @f(%p: tensor<4xf32>, %lr: f32, %step: i64) {
  // expected-error @+1 {{weight_decay must be in [0, 1], got 2}}
  %0:3 = tamoe.adam %p, %p, %p, %p step %step lr %lr {weight_decay = 2.0 : f32} : tensor<4xf32>
  return
}

// -----

func.func @f(%p: tensor<4xf32>, %lr: f32, %step: i64) {
  // expected-error @+1 {{eps must be positive and finite, got 0}}
  %0:3 = tamoe.adam %p, %p, %p, %p step %step lr %lr {eps = 0.0 : f32} : tensor<4xf32>
  return
}

// -----

func.func @f(%x: tensor<4xf32>) {
  // expected-error @+1 {{'nowhere' does not name a func.func}}
  %0:2 = tamoe.vjp @nowhere(%x) cotangents(%x) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

func.func @g(%x: tensor<4xf32>, %n: index) -> (tensor<4xf32>, index) {
  return %x, %n : tensor<4xf32>, index
}
func.func @f(%x: tensor<4xf32>, %n: index) {
  // expected-error @+1 {{arguments must be (tensor<4xf32>, index) for @g, got (tensor<4xf32>)}}
  %0:2 = tamoe.vjp @g(%x) cotangents(%x) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

func.func @g(%x: tensor<4xf32>, %n: index) -> (tensor<4xf32>, index) {
  return %x, %n : tensor<4xf32>, index
}
func.func @f(%x: tensor<4xf32>, %n: index) {
  // expected-error @+1 {{results must be (tensor<4xf32>, index) for @g, got (tensor<4xf32>)}}
  %0:2 = tamoe.vjp @g(%x, %n) cotangents(%x) : (tensor<4xf32>, index), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

func.func @g(%x: tensor<4xf32>, %n: index) -> (tensor<4xf32>, index) {
  return %x, %n : tensor<4xf32>, index
}
func.func @f(%x: tensor<4xf32>, %n: index) {
  // expected-error @+1 {{cotangents (one per float tensor result) must be (tensor<4xf32>) for @g, got (tensor<4xf32>, index)}}
  %0:3 = tamoe.vjp @g(%x, %n) cotangents(%x, %n) : (tensor<4xf32>, index), (tensor<4xf32>, index) -> (tensor<4xf32>, index), (tensor<4xf32>)
  return
}

// -----

func.func @g(%x: tensor<4xf32>, %n: index) -> (tensor<4xf32>, index) {
  return %x, %n : tensor<4xf32>, index
}
func.func @f(%x: tensor<4xf32>, %n: index) {
  // expected-error @+1 {{gradients (one per float tensor argument) must be (tensor<4xf32>) for @g, got (tensor<4xf32>, tensor<4xf32>)}}
  %0:4 = tamoe.vjp @g(%x, %n) cotangents(%x) : (tensor<4xf32>, index), (tensor<4xf32>) -> (tensor<4xf32>, index), (tensor<4xf32>, tensor<4xf32>)
  return
}
