// RUN: tamoe-opt %s -split-input-file --convert-tamoe-to-runtime=static-capacity --canonicalize | FileCheck %s
// RUN: tamoe-opt %s -split-input-file --convert-tamoe-to-runtime --canonicalize | FileCheck %s --check-prefix=DEFAULT

// static-capacity: an exchange whose counts come from a dispatch with a
// capacity (here 3 rows per expert) gets a receive buffer of entries x
// capacity rows (8 x 2 x 3 = 48) and no counts round first, through the
// reshape of the counts and, in the hierarchical schedule, through the
// counts of the previous stage and a regroup. By default, the counts go
// first and their total sizes the buffer.
module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @capacity
  // DEFAULT-LABEL: func.func @capacity
  func.func @capacity(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
    // CHECK-DAG: %[[C48:.*]] = arith.constant 48 : index
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: memref.alloc() : memref<48x64xf32>
    // CHECK: call @tamoe_rt_all_to_all({{.*}}, %[[C48]], %{{.*}})
    // DEFAULT: call @tamoe_rt_all_to_all_counts
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids capacity 3 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<16xi32>, tensor<16x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    // The node stage of a hierarchical exchange, then the regrouped counts
    // of what it received: 16 entries x 3 rows each time.
    %staged = tensor.expand_shape %counts [[0, 1, 2]] output_shape [4, 2, 2] : tensor<16xi32> into tensor<4x2x2xi32>
    %s1, %c1 = tamoe.all_to_all %rows, %staged on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>
    %r, %rc = tamoe.regroup %s1, %c1 : tensor<?x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>, tensor<2x4x2xi32>
    // CHECK: call @tamoe_rt_all_to_all({{.*}}, %[[C48]], %{{.*}})
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: call @tamoe_rt_all_to_all({{.*}}, %[[C48]], %{{.*}})
    %s2, %c2 = tamoe.all_to_all %r, %rc on @ep axes = [0] level "cluster" : tensor<?x64xf32>, tensor<2x4x2xi32> -> tensor<?x64xf32>
    return %recv, %s2 : tensor<?x64xf32>, tensor<?x64xf32>
  }
}

// -----

// Without a capacity (dropless) nothing bounds the rows: the counts go
// first, as by default.
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @dropless
  func.func @dropless(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>) -> tensor<?x64xf32> {
    // CHECK: call @tamoe_rt_all_to_all_counts
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<16xi32>, tensor<16x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    return %recv : tensor<?x64xf32>
  }
}
