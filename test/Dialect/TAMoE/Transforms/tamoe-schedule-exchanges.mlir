// tamoe-schedule-exchanges on a two-stage (hierarchical) exchange written
// by hand: the later stage's start, the wait that feeds it and the regroup
// between them move down past compute that needs none of them, so that the
// first stage travels meanwhile; a first stage whose rows are also used
// elsewhere is no relay and stays where its users need it.
// RUN: tamoe-opt %s --tamoe-schedule-exchanges -split-input-file | FileCheck %s

module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @relay
  // CHECK: %[[NODE:.*]] = tamoe.all_to_all_start {{.*}} axes = [1] level "node"
  // CHECK-NEXT: tamoe.grouped_matmul
  // CHECK-NEXT: tamoe.all_to_all_wait %[[NODE]]
  // CHECK-NEXT: tamoe.regroup
  // CHECK-NEXT: %[[CLUSTER:.*]] = tamoe.all_to_all_start {{.*}} axes = [0] level "cluster"
  // CHECK-NEXT: tamoe.all_to_all_wait %[[CLUSTER]]
  // CHECK-NEXT: return
  func.func @relay(%rows: tensor<24x32xf32>, %counts: tensor<4x2x2xi32>, %x: tensor<8x32xf32>, %xc: tensor<1xi32>, %w: tensor<1x32x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
    %r1, %rc1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>
    %g, %gc = tamoe.regroup %r1, %rc1 : tensor<?x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>, tensor<2x4x2xi32>
    %r2, %rc2 = tamoe.all_to_all %g, %gc on @ep axes = [0] level "cluster" : tensor<?x32xf32>, tensor<2x4x2xi32> -> tensor<?x32xf32>
    %y = tamoe.grouped_matmul %x, %xc, %w : tensor<8x32xf32>, tensor<1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
    return %r2, %y : tensor<?x32xf32>, tensor<?x32xf32>
  }
}

// -----

module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @not_a_relay
  // CHECK: %[[NODE:.*]] = tamoe.all_to_all_start {{.*}} axes = [1] level "node"
  // CHECK-NEXT: %[[R1:.*]], %{{.*}} = tamoe.all_to_all_wait %[[NODE]]
  // CHECK-NEXT: tamoe.regroup %[[R1]]
  // CHECK-NEXT: %[[CLUSTER:.*]] = tamoe.all_to_all_start {{.*}} axes = [0] level "cluster"
  // CHECK-NEXT: tamoe.grouped_matmul
  // CHECK-NEXT: tamoe.all_to_all_wait %[[CLUSTER]]
  // CHECK-NEXT: return
  func.func @not_a_relay(%rows: tensor<24x32xf32>, %counts: tensor<4x2x2xi32>, %x: tensor<8x32xf32>, %xc: tensor<1xi32>, %w: tensor<1x32x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
    %r1, %rc1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>
    %g, %gc = tamoe.regroup %r1, %rc1 : tensor<?x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>, tensor<2x4x2xi32>
    %r2, %rc2 = tamoe.all_to_all %g, %gc on @ep axes = [0] level "cluster" : tensor<?x32xf32>, tensor<2x4x2xi32> -> tensor<?x32xf32>
    %y = tamoe.grouped_matmul %x, %xc, %w : tensor<8x32xf32>, tensor<1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
    return %r2, %y, %r1 : tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>
  }
}
