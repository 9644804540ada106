// A module without tamoe ops (a model's modules that hold no MoE layer)
// passes every tamoe pass and pipeline unchanged; plan-dispatch only records
// the cluster it was given on the module.
// RUN: tamoe-opt %s --tamoe-plan-dispatch=topology=%tamoe_src_root/configs/clusters/dgx1-v100.json | FileCheck %s --check-prefixes=CHECK,TOPO
// RUN: tamoe-opt %s --tamoe-pipeline=topology=%tamoe_src_root/configs/clusters/dgx1-v100.json | FileCheck %s --check-prefixes=CHECK,TOPO
// RUN: tamoe-opt %s --tamoe-inject-topology-aux-loss | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-hierarchical-all-to-all | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-expand-gate | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --convert-tamoe-to-runtime | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-finalize-device-resident | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-overlap=chunks=4 --tamoe-schedule-exchanges | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-pipeline="topology=%tamoe_src_root/configs/clusters/dgx1-v100.json chunks=0 device-gflops=100" | FileCheck %s --check-prefixes=CHECK,TOPO
// Without a topology: nothing to plan, so none is needed.
// RUN: tamoe-opt %s --tamoe-pipeline | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-plan-dispatch | FileCheck %s --check-prefixes=CHECK,NOTOPO
// RUN: tamoe-opt %s --tamoe-pipeline="mode=hierarchical dedup=true chunks=4" | FileCheck %s --check-prefixes=CHECK,NOTOPO
// Lowered: element-wise arith on tensors becomes host loops, or a runtime
// map when the buffers are the device's.
// RUN: tamoe-opt %s --tamoe-to-llvm | FileCheck %s --check-prefix=LOOPS
// RUN: tamoe-opt %s --tamoe-to-llvm=device-resident | FileCheck %s --check-prefix=DEVICE
// An empty module and a file of comments only.
// RUN: echo 'module {}' | tamoe-opt --tamoe-pipeline=topology=%tamoe_src_root/configs/clusters/dgx1-v100.json | FileCheck %s --check-prefix=EMPTY
// RUN: echo '// nothing here' | tamoe-opt --tamoe-pipeline=topology=%tamoe_src_root/configs/clusters/dgx1-v100.json | FileCheck %s --check-prefix=EMPTY
// RUN: echo '// nothing here' | tamoe-opt --tamoe-pipeline=topology=%tamoe_src_root/configs/clusters/dgx1-v100.json --tamoe-to-llvm | FileCheck %s --check-prefix=EMPTY-LLVM

// TOPO: module attributes {tamoe.topology = #tamoe.topology<"dgx1-v100",
// NOTOPO: module {
// CHECK-LABEL: func.func @dense
// CHECK-NEXT: arith.addf %{{.*}}, %{{.*}} : tensor<4xf32>
// CHECK-NEXT: return
func.func @dense(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = arith.addf %x, %x : tensor<4xf32>
  return %y : tensor<4xf32>
}

// LOOPS-LABEL: llvm.func @dense
// LOOPS: llvm.fadd %{{.*}}, %{{.*}} : f32
// DEVICE-LABEL: llvm.func @dense
// DEVICE: llvm.call @tamoe_rt_map(

// EMPTY: module attributes {tamoe.topology = #tamoe.topology<"dgx1-v100",
// EMPTY-NOT: func
// EMPTY-LLVM: module
