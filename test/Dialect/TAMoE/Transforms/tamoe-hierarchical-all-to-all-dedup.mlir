// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all=dedup=true -verify-diagnostics | FileCheck %s
// Idempotent: the stages name their level and are left alone.
// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all=dedup=true 2>/dev/null > %t.once
// RUN: tamoe-opt %t.once -split-input-file --tamoe-hierarchical-all-to-all=dedup=true 2>/dev/null | diff %t.once -
// Forced: the dispatch exchange is de-duplicated whatever the cost model says.
// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all="mode=hierarchical dedup=true" 2>&1 | FileCheck %s --check-prefix=FORCED
// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all="mode=hierarchical dedup=true" 2>/dev/null | FileCheck %s --check-prefix=FORCED-IR
// Off (the default): the plain hierarchical schedule.
// RUN: tamoe-opt %s -split-input-file --tamoe-hierarchical-all-to-all 2>&1 | FileCheck %s --check-prefix=OFF

// FORCED: remark: made hierarchical with per-node de-duplication: mode=hierarchical, dedup
// FORCED: remark: made hierarchical: mode=hierarchical
// FORCED: remark: made hierarchical: mode=hierarchical
// FORCED: remark: made hierarchical with per-node de-duplication: mode=hierarchical, dedup
// OFF-NOT: dedup_pack

// 2 nodes x 4 ranks, 16 experts (2 per rank), top-4: a token's experts on
// one node cross to it once.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @layer
  // CHECK-SAME: (%[[TOKENS:.*]]: tensor<16x64xf32>, %[[IDS:.*]]: tensor<16x4xi32>)
  func.func @layer(%tokens: tensor<16x64xf32>, %ids: tensor<16x4xi32>) -> (tensor<64x64xf32>, tensor<8x2xi32>) {
    // CHECK: %{{.*}}, %{{.*}}, %[[POS:.*]], %{{.*}} = tamoe.dispatch
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x4xi32> -> tensor<64x64xf32>, tensor<16xi32>, tensor<16x4xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    // One row per (token, node), from what the dispatch kept (positions).
    // CHECK: %[[UNIQUE:.*]], %[[ROUTES:.*]], %[[NODE_COUNTS:.*]] = tamoe.dedup_pack %[[TOKENS]], %[[IDS]], %[[POS]] experts_per_node 8 : tensor<16x64xf32>, tensor<16x4xi32>, tensor<16x4xi32> -> tensor<32x64xf32>, tensor<32x4xi32>, tensor<2xi32>
    // Inter-node stage first: rows and their routes to the same-index rank.
    // CHECK: %[[U:.*]], %[[UC:.*]] = tamoe.all_to_all %[[UNIQUE]], %[[NODE_COUNTS]] on @ep axes = [0] level "cluster" : tensor<32x64xf32>, tensor<2xi32> -> tensor<?x64xf32>
    // CHECK: %[[R:.*]], %{{.*}} = tamoe.all_to_all %[[ROUTES]], %[[NODE_COUNTS]] on @ep axes = [0] level "cluster" : tensor<32x4xi32>, tensor<2xi32> -> tensor<?x4xi32>
    // The relay expands per expert, the node stage delivers.
    // CHECK: %[[EXPANDED:.*]], %[[EC:.*]] = tamoe.dedup_expand %[[U]], %[[R]], %[[UC]] experts_per_rank 2 : tensor<?x64xf32>, tensor<?x4xi32>, tensor<2xi32> -> tensor<?x64xf32>, tensor<4x2x2xi32>
    // CHECK: %[[S:.*]], %[[SC:.*]] = tamoe.all_to_all %[[EXPANDED]], %[[EC]] on @ep axes = [1] level "node" : tensor<?x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>
    // By source rank, as the flat exchange delivers.
    // CHECK: %[[RECV:.*]], %[[RC:.*]] = tamoe.regroup %[[S]], %[[SC]] : tensor<?x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>, tensor<2x4x2xi32>
    // CHECK: %[[RECV_COUNTS:.*]] = tensor.collapse_shape %[[RC]] {{\[\[}}0, 1], [2]] : tensor<2x4x2xi32> into tensor<8x2xi32>
    // expected-remark @+1 {{made hierarchical with per-node de-duplication: 27.9 us predicted de-duplicated vs 31.2 us hierarchical vs 59.6 us flat for 16 tokens (top-4) of 256 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<64x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    // The return trip carries one row per expert (the combine weights them
    // where the tokens live): plain hierarchical.
    // CHECK: tensor.expand_shape %[[RECV_COUNTS]]
    // CHECK: tamoe.all_to_all {{.*}} axes = [1] level "node" : tensor<?x64xf32>, tensor<4x2x2xi32>
    // CHECK: tamoe.all_to_all {{.*}} axes = [0] level "cluster" : tensor<?x64xf32>, tensor<2x4x2xi32> -> tensor<64x64xf32>
    // expected-remark @+1 {{made hierarchical: 31.2 us predicted hierarchical vs 59.6 us flat for 64 rows of 256 bytes}}
    %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x64xf32>, tensor<8x2xi32> -> tensor<64x64xf32>
    return %back, %back_counts : tensor<64x64xf32>, tensor<8x2xi32>
  }
}

// -----

// Top-1: nothing to de-duplicate.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @top1
  // CHECK-NOT: tamoe.dedup_pack
  // CHECK: return
  func.func @top1(%tokens: tensor<16x64xf32>, %ids: tensor<16x1xi32>) -> tensor<?x64xf32> {
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x1xi32> -> tensor<16x64xf32>, tensor<8xi32>, tensor<16x1xi32>, tensor<i64>
    // expected-remark @+1 {{made hierarchical: 25.8 us predicted hierarchical vs 54.6 us flat for 16 rows of 256 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<16x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    return %recv : tensor<?x64xf32>
  }
}

// -----

// Large rows over a fast network: every staged form costs more than flat.
module attributes {tamoe.topology = #tamoe.topology<"fast", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 50.0, down_bandwidth = 50.0, latency = 2.0, per_message = 2.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  // CHECK-LABEL: func.func @large
  // CHECK-NOT: tamoe.dedup_pack
  // CHECK: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep : tensor<8192x4096xbf16>
  func.func @large(%tokens: tensor<4096x4096xbf16>, %ids: tensor<4096x2xi32>) -> tensor<?x4096xbf16> {
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<4096x4096xbf16>, tensor<4096x2xi32> -> tensor<8192x4096xbf16>, tensor<4xi32>, tensor<4096x2xi32>, tensor<i64>
    // expected-remark @+1 {{kept flat: 845.4 us predicted de-duplicated vs 1012.6 us hierarchical vs 678.1 us flat for 4096 tokens (top-2) of 8192 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<8192x4096xbf16>, tensor<4xi32> -> tensor<?x4096xbf16>
    return %recv : tensor<?x4096xbf16>
  }
}

// -----

// A part of the dispatch's rows (tamoe-overlap's chunk) is de-duplicated
// alone, on the part's positions; a part cut by other counts is not the
// dispatch's layout and keeps one row per expert.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @parts
  // CHECK-SAME: (%[[TOKENS:[^:]*]]: tensor<16x64xf32>, %[[IDS:[^:]*]]: tensor<16x4xi32>
  func.func @parts(%tokens: tensor<16x64xf32>, %ids: tensor<16x4xi32>, %other: tensor<8x2xi32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
    // CHECK: %{{.*}}, %[[COUNTS:.*]], %[[POS:.*]], %{{.*}} = tamoe.dispatch
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x4xi32> -> tensor<64x64xf32>, tensor<16xi32>, tensor<16x4xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    %part, %part_counts = tamoe.chunk %rows, %split chunk 1 of 2 : tensor<64x64xf32>, tensor<8x2xi32> -> tensor<64x64xf32>
    // CHECK: %[[PART_POS:.*]] = tamoe.chunk_positions %[[POS]], %[[IDS]], %[[COUNTS]] chunk 1 of 2 : tensor<16x4xi32>, tensor<16x4xi32>, tensor<16xi32>
    // CHECK-NEXT: tamoe.dedup_pack %[[TOKENS]], %[[IDS]], %[[PART_POS]] experts_per_node 8
    // expected-remark @+1 {{made hierarchical with per-node de-duplication: 25.9 us predicted de-duplicated vs 27.6 us hierarchical vs 56.3 us flat for 8 tokens (top-4) of 256 bytes}}
    %recv, %recv_counts = tamoe.all_to_all %part, %part_counts on @ep : tensor<64x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    %foreign, %foreign_counts = tamoe.chunk %rows, %other chunk 0 of 2 : tensor<64x64xf32>, tensor<8x2xi32> -> tensor<64x64xf32>
    // CHECK-NOT: tamoe.chunk_positions
    // CHECK-NOT: tamoe.dedup_pack
    // CHECK: return
    // expected-remark @+1 {{made hierarchical:}}
    %r2, %rc2 = tamoe.all_to_all %foreign, %foreign_counts on @ep : tensor<64x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    return %recv, %r2 : tensor<?x64xf32>, tensor<?x64xf32>
  }
}

// -----

// A static receive buffer: the node stage, which delivers every row the flat
// exchange would, receives into it, so that rows past it fail the exchange
// on every rank (as the flat one does) rather than overrun the regroup's
// result.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @static_receive
  func.func @static_receive(%tokens: tensor<16x64xf32>, %ids: tensor<16x4xi32>) -> tensor<48x64xf32> {
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x4xi32> -> tensor<64x64xf32>, tensor<16xi32>, tensor<16x4xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    // CHECK: tamoe.dedup_expand
    // CHECK: %[[S:.*]], %[[SC:.*]] = tamoe.all_to_all {{.*}} on @ep axes = [1] level "node" : tensor<?x64xf32>, tensor<4x2x2xi32> -> tensor<48x64xf32>
    // CHECK: tamoe.regroup %[[S]], %[[SC]] : tensor<48x64xf32>, tensor<4x2x2xi32> -> tensor<48x64xf32>, tensor<2x4x2xi32>
    // expected-remark @+1 {{made hierarchical with per-node de-duplication}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<64x64xf32>, tensor<8x2xi32> -> tensor<48x64xf32>
    return %recv : tensor<48x64xf32>
  }
}

// -----

// S * min(k, nodes) past int64: the unique rows are dynamic, not a wrapped
// negative size.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  // FORCED-IR-LABEL: func.func @huge
  // FORCED-IR: tamoe.dedup_pack {{.*}} -> tensor<?x64xf32>, tensor<?x4xi32>, tensor<2xi32>
  func.func @huge(%tokens: tensor<6917529027641081856x64xf32>, %ids: tensor<6917529027641081856x4xi32>) -> tensor<?x64xf32> {
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<6917529027641081856x64xf32>, tensor<6917529027641081856x4xi32> -> tensor<?x64xf32>, tensor<16xi32>, tensor<6917529027641081856x4xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    // expected-remark @+1 {{kept flat: its size is unknown at compile time}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<?x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    return %recv : tensor<?x64xf32>
  }
}
