// The example layer (examples/moe_layer.mlir) and its gradient: @main runs
// one forward and backward step of @moe_layer on every rank with
// tamoe.vjp, which tamoe-differentiate (the last pass of --tamoe-pipeline)
// turns into calls of @moe_layer_forward and @moe_layer_backward.
//
// Inputs as in moe_layer.mlir (tokens 1000 + rank, router 1, expert weights
// 2000 + rank and 3000 + rank); the gradient of the output is random (seed
// 4000 + rank), that of the loss is 1. Outputs ($TAMOE_RT_OUTPUT_DIR),
// out0..out3 as in moe_layer.mlir, then the gradients of the tokens (out4),
// the router (out5, this rank's part) and this rank's experts (out6, out7):
//
//   tamoe-opt moe_layer_grad.mlir --tamoe-pipeline --tamoe-to-llvm -o grad.llvm.mlir
//   TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR=out mpirun -np 8 mlir-runner \
//     grad.llvm.mlir -e main -entry-point-result=void --shared-libs=libtamoe_rt.so
//   tamoe-topo to-json moe_layer_grad.mlir > cluster.json
//   tamoe-reference --backward --outputs=out --topology=cluster.json
//
// (--topology gives the reference the plan's loss weights; without it the
// reference checks the switch loss, which this layer does not use.)
#map = affine_map<(d0, d1) -> (d0, d1)>
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 2.000000e+01, down_bandwidth = 2.000000e+01, latency = 1.000000e+00, per_message = 1.000000e+00, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.000000e+00, down_bandwidth = 5.000000e+00, latency = 1.000000e+01, per_message = 1.000000e+01, uplink = shared>], "two nodes of four CPU ranks">} {
  shard.grid @ep(shape = 2x4)
  func.func @moe_layer(%tokens: tensor<16x32xf32>, %router: tensor<32x16xf32>, %w1: tensor<2x32x64xf32>, %w2: tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>) {
    %c0 = arith.constant 0 : index
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<16x16xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<16x16xf32>) -> tensor<16x16xf32>
    %logits = linalg.matmul ins(%tokens, %router : tensor<16x32xf32>, tensor<32x16xf32>) outs(%f : tensor<16x16xf32>) -> tensor<16x16xf32>
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<16x16xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x16xf32>
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<16xi32>, tensor<16x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<32x32xf32>, tensor<8x2xi32> -> tensor<?x32xf32>
    %h = tamoe.grouped_matmul %recv, %recv_counts, %w1 : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32> -> tensor<?x64xf32>
    %n = tensor.dim %h, %c0 : tensor<?x64xf32>
    %he = tensor.empty(%n) : tensor<?x64xf32>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<?x64xf32>) outs(%he : tensor<?x64xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = arith.maximumf %in, %zero : f32
      linalg.yield %m : f32
    } -> tensor<?x64xf32>
    %y = tamoe.grouped_matmul %relu, %recv_counts, %w2 : tensor<?x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf32> -> tensor<?x32xf32>
    %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<?x32xf32>, tensor<8x2xi32> -> tensor<32x32xf32>
    %out = tamoe.combine %back, %positions, %weights : tensor<32x32xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x32xf32>
    %loss = tamoe.aux_loss switch %probs, %ids : tensor<16x16xf32>, tensor<16x2xi32> -> tensor<f32>
    return %out, %loss, %recv_counts, %dropped : tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>
  }
  func.func private @tamoeRandomF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI32(memref<*xi32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI64(memref<*xi64>, i64) attributes {llvm.emit_c_interface}
  func.func @random(%seed: i64) -> tensor<16x32xf32> {
    %m = memref.alloc() : memref<16x32xf32>
    %u = memref.cast %m : memref<16x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%u, %seed) : (memref<*xf32>, i64) -> ()
    %t = bufferization.to_tensor %m restrict : memref<16x32xf32> to tensor<16x32xf32>
    return %t : tensor<16x32xf32>
  }
  func.func @main() {
    %rank = shard.process_linear_index on @ep : index
    %r = arith.index_cast %rank : index to i64
    %c1000 = arith.constant 1000 : i64
    %c2000 = arith.constant 2000 : i64
    %c3000 = arith.constant 3000 : i64
    %c4000 = arith.constant 4000 : i64
    %c1 = arith.constant 1 : i64
    %router = memref.alloc() : memref<32x16xf32>
    %w1 = memref.alloc() : memref<2x32x64xf32>
    %w2 = memref.alloc() : memref<2x64x32xf32>
    %s0 = arith.addi %c1000, %r : i64
    %s1 = arith.addi %c2000, %r : i64
    %s2 = arith.addi %c3000, %r : i64
    %s3 = arith.addi %c4000, %r : i64
    %u1 = memref.cast %router : memref<32x16xf32> to memref<*xf32>
    call @tamoeRandomF32(%u1, %c1) : (memref<*xf32>, i64) -> ()
    %u2 = memref.cast %w1 : memref<2x32x64xf32> to memref<*xf32>
    call @tamoeRandomF32(%u2, %s1) : (memref<*xf32>, i64) -> ()
    %u3 = memref.cast %w2 : memref<2x64x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%u3, %s2) : (memref<*xf32>, i64) -> ()
    %t0 = call @random(%s0) : (i64) -> tensor<16x32xf32>
    %t1 = bufferization.to_tensor %router restrict : memref<32x16xf32> to tensor<32x16xf32>
    %t2 = bufferization.to_tensor %w1 restrict : memref<2x32x64xf32> to tensor<2x32x64xf32>
    %t3 = bufferization.to_tensor %w2 restrict : memref<2x64x32xf32> to tensor<2x64x32xf32>
    %d_out = call @random(%s3) : (i64) -> tensor<16x32xf32>
    %one = arith.constant 1.0 : f32
    %d_loss_buffer = memref.alloc() : memref<f32>
    memref.store %one, %d_loss_buffer[] : memref<f32>
    %d_loss = bufferization.to_tensor %d_loss_buffer restrict : memref<f32> to tensor<f32>
    %out, %loss, %counts, %dropped, %d_tokens, %d_router, %d_w1, %d_w2 = tamoe.vjp @moe_layer(%t0, %t1, %t2, %t3) cotangents(%d_out, %d_loss) : (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>), (tensor<16x32xf32>, tensor<f32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>), (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>)
    %c0_i64 = arith.constant 0 : i64
    %c2 = arith.constant 2 : i64
    %c3 = arith.constant 3 : i64
    %c4 = arith.constant 4 : i64
    %c5 = arith.constant 5 : i64
    %c6 = arith.constant 6 : i64
    %c7 = arith.constant 7 : i64
    %b0 = bufferization.to_buffer %out read_only : tensor<16x32xf32> to memref<16x32xf32>
    %o0 = memref.cast %b0 : memref<16x32xf32> to memref<*xf32>
    call @tamoeOutputF32(%o0, %c0_i64) : (memref<*xf32>, i64) -> ()
    %b1 = bufferization.to_buffer %loss read_only : tensor<f32> to memref<f32>
    %o1 = memref.cast %b1 : memref<f32> to memref<*xf32>
    call @tamoeOutputF32(%o1, %c1) : (memref<*xf32>, i64) -> ()
    %b2 = bufferization.to_buffer %counts read_only : tensor<8x2xi32> to memref<8x2xi32>
    %o2 = memref.cast %b2 : memref<8x2xi32> to memref<*xi32>
    call @tamoeOutputI32(%o2, %c2) : (memref<*xi32>, i64) -> ()
    %b3 = bufferization.to_buffer %dropped read_only : tensor<i64> to memref<i64>
    %o3 = memref.cast %b3 : memref<i64> to memref<*xi64>
    call @tamoeOutputI64(%o3, %c3) : (memref<*xi64>, i64) -> ()
    %b4 = bufferization.to_buffer %d_tokens read_only : tensor<16x32xf32> to memref<16x32xf32>
    %o4 = memref.cast %b4 : memref<16x32xf32> to memref<*xf32>
    call @tamoeOutputF32(%o4, %c4) : (memref<*xf32>, i64) -> ()
    %b5 = bufferization.to_buffer %d_router read_only : tensor<32x16xf32> to memref<32x16xf32>
    %o5 = memref.cast %b5 : memref<32x16xf32> to memref<*xf32>
    call @tamoeOutputF32(%o5, %c5) : (memref<*xf32>, i64) -> ()
    %b6 = bufferization.to_buffer %d_w1 read_only : tensor<2x32x64xf32> to memref<2x32x64xf32>
    %o6 = memref.cast %b6 : memref<2x32x64xf32> to memref<*xf32>
    call @tamoeOutputF32(%o6, %c6) : (memref<*xf32>, i64) -> ()
    %b7 = bufferization.to_buffer %d_w2 read_only : tensor<2x64x32xf32> to memref<2x64x32xf32>
    %o7 = memref.cast %b7 : memref<2x64x32xf32> to memref<*xf32>
    call @tamoeOutputF32(%o7, %c7) : (memref<*xf32>, i64) -> ()
    return
  }
}
