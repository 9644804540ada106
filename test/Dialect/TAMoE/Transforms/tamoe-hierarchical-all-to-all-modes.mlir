// RUN: tamoe-opt %s --tamoe-hierarchical-all-to-all=mode=flat -verify-diagnostics | FileCheck %s --check-prefix=FLAT
// RUN: tamoe-opt %s --tamoe-hierarchical-all-to-all=mode=hierarchical -verify-diagnostics=only-expected 2>&1 | FileCheck %s --check-prefix=FORCED
// RUN: not tamoe-opt %s --tamoe-hierarchical-all-to-all=mode=ring 2>&1 | FileCheck %s --check-prefix=BAD

// FLAT: tamoe.all_to_all %{{.*}}, %{{.*}} on @ep : tensor<8192x4096xbf16>
// FORCED: tamoe.all_to_all {{.*}} axes = [1] level "node"
// FORCED: tamoe.all_to_all {{.*}} axes = [0] level "cluster"
// BAD: error: tamoe-hierarchical-all-to-all: unknown mode 'ring' (auto, flat, hierarchical)
module attributes {tamoe.topology = #tamoe.topology<"fast", [<"node", fanout = 2, up_bandwidth = 100.0, down_bandwidth = 100.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 50.0, down_bandwidth = 50.0, latency = 2.0, per_message = 2.0, uplink = per_rank>]>} {
  shard.grid @ep(shape = 2x2)
  func.func @large(%rows: tensor<8192x4096xbf16>, %counts: tensor<4xi32>) -> tensor<?x4096xbf16> {
    // expected-remark-re @+1 {{{{kept flat: mode=flat|made hierarchical: mode=hierarchical}}}}
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<8192x4096xbf16>, tensor<4xi32> -> tensor<?x4096xbf16>
    return %recv : tensor<?x4096xbf16>
  }
}
