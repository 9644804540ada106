// Debian's stock mlir-opt loads tamoe as plugins: it parses tamoe IR and
// runs the tamoe pipeline, then lowers the result with tamoe-to-llvm (whose
// upstream passes it has already).
// RUN: mlir-opt %s --load-dialect-plugin=%tamoe_plugin --load-pass-plugin=%tamoe_plugin --pass-pipeline="builtin.module(tamoe-pipeline)" 2>&1 | FileCheck %s
// RUN: mlir-opt %s --load-dialect-plugin=%tamoe_plugin --load-pass-plugin=%tamoe_plugin --pass-pipeline="builtin.module(tamoe-pipeline,tamoe-to-llvm)" 2>/dev/null | FileCheck %s --check-prefix=LLVM
// Without the plugin the dialect is unknown.
// RUN: not mlir-opt %s 2>&1 | FileCheck %s --check-prefix=NO-PLUGIN

// CHECK: remark: made hierarchical
// CHECK: tamoe.all_to_all {{.*}} level "node"
// LLVM: llvm.call @tamoe_rt_all_to_all_totals
// NO-PLUGIN: error: #"tamoe"<{{.*}}> : 'none' attribute created with unregistered dialect
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 20.0, down_bandwidth = 20.0, latency = 1.0, per_message = 1.0, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.0, down_bandwidth = 5.0, latency = 10.0, per_message = 10.0, uplink = shared>]>} {
  shard.grid @ep(shape = 2x4)
  func.func @exchange(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) -> tensor<?x64xf32> {
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    return %recv : tensor<?x64xf32>
  }
}
