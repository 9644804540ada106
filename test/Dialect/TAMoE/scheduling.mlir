// The scheduling ops: chunk, unchunk, chunk_positions, all_to_all_start and
// all_to_all_wait.
// RUN: tamoe-opt %s -split-input-file | tamoe-opt -split-input-file | FileCheck %s

// CHECK-LABEL: func.func @chunked
// CHECK: %[[P0:.*]], %[[C0:.*]] = tamoe.chunk %{{.*}}, %{{.*}} chunk 0 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<32x64xf32>
// CHECK: %[[X:.*]] = tamoe.all_to_all_start %[[P0]], %[[C0]] on @ep : tensor<32x64xf32>, tensor<8x2xi32>
// CHECK: %{{.*}}, %{{.*}} = tamoe.all_to_all_wait %[[X]] : tensor<?x64xf32>, tensor<8x2xi32>
// CHECK: tamoe.unchunk %{{.*}}, %{{.*}} counts %{{.*}} : (tensor<32x64xf32>, tensor<32x64xf32>), tensor<8x2xi32> -> tensor<32x64xf32>
shard.grid @ep(shape = 2x4)
func.func @chunked(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>) -> (tensor<?x64xf32>, tensor<32x64xf32>) {
  %p0, %c0 = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<32x64xf32>
  %p1, %c1 = tamoe.chunk %rows, %counts chunk 1 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<32x64xf32>
  %x = tamoe.all_to_all_start %p0, %c0 on @ep : tensor<32x64xf32>, tensor<8x2xi32>
  %recv, %recv_counts = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8x2xi32>
  %whole = tamoe.unchunk %p0, %p1 counts %counts : (tensor<32x64xf32>, tensor<32x64xf32>), tensor<8x2xi32> -> tensor<32x64xf32>
  return %recv, %whole : tensor<?x64xf32>, tensor<32x64xf32>
}

// -----

// CHECK-LABEL: func.func @part_positions
// CHECK: tamoe.chunk_positions %{{.*}}, %{{.*}}, %{{.*}} chunk 1 of 4 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<8xi32>
func.func @part_positions(%positions: tensor<16x2xi32>, %ids: tensor<16x2xi32>, %counts: tensor<8xi32>) -> tensor<16x2xi32> {
  %p = tamoe.chunk_positions %positions, %ids, %counts chunk 1 of 4 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<8xi32>
  return %p : tensor<16x2xi32>
}
