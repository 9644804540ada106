// A block of two MoE layers with residual connections, x1 = x + moe(x),
// x2 = x1 + moe(x1), on the ranks and shapes of moe_layer.mlir (the same
// @moe_layer, called with each layer's own weights). The loss is the sum of
// the layers' losses.
//
// @main's seeds: tokens 1000 + rank; layer l's router 1 + 10000 l, expert
// weights 2000 + rank + 10000 l and 3000 + rank + 10000 l. It writes the
// block's output, the summed loss and the last layer's realised counts and
// dropped assignments (out0..out3) for `tamoe-reference --layers=2`.
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
  func.func @moe_block(%x: tensor<16x32xf32>, %router0: tensor<32x16xf32>, %w10: tensor<2x32x64xf32>, %w20: tensor<2x64x32xf32>, %router1: tensor<32x16xf32>, %w11: tensor<2x32x64xf32>, %w21: tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>) {
    %y0, %l0, %c0, %d0 = call @moe_layer(%x, %router0, %w10, %w20) : (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>)
    %e0 = tensor.empty() : tensor<16x32xf32>
    %x1 = linalg.add ins(%x, %y0 : tensor<16x32xf32>, tensor<16x32xf32>) outs(%e0 : tensor<16x32xf32>) -> tensor<16x32xf32>
    %y1, %l1, %c1, %d1 = call @moe_layer(%x1, %router1, %w11, %w21) : (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>)
    %e1 = tensor.empty() : tensor<16x32xf32>
    %x2 = linalg.add ins(%x1, %y1 : tensor<16x32xf32>, tensor<16x32xf32>) outs(%e1 : tensor<16x32xf32>) -> tensor<16x32xf32>
    %el = tensor.empty() : tensor<f32>
    %loss = linalg.add ins(%l0, %l1 : tensor<f32>, tensor<f32>) outs(%el : tensor<f32>) -> tensor<f32>
    return %x2, %loss, %c1, %d1 : tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>
  }
  func.func private @tamoeRandomF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI32(memref<*xi32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI64(memref<*xi64>, i64) attributes {llvm.emit_c_interface}
  // Inputs of each shape, filled from a seed.
  func.func @random_tokens(%seed: i64) -> tensor<16x32xf32> {
    %m = memref.alloc() : memref<16x32xf32>
    %u = memref.cast %m : memref<16x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%u, %seed) : (memref<*xf32>, i64) -> ()
    %t = bufferization.to_tensor %m restrict : memref<16x32xf32> to tensor<16x32xf32>
    return %t : tensor<16x32xf32>
  }
  func.func @random_router(%seed: i64) -> tensor<32x16xf32> {
    %m = memref.alloc() : memref<32x16xf32>
    %u = memref.cast %m : memref<32x16xf32> to memref<*xf32>
    call @tamoeRandomF32(%u, %seed) : (memref<*xf32>, i64) -> ()
    %t = bufferization.to_tensor %m restrict : memref<32x16xf32> to tensor<32x16xf32>
    return %t : tensor<32x16xf32>
  }
  func.func @random_w1(%seed: i64) -> tensor<2x32x64xf32> {
    %m = memref.alloc() : memref<2x32x64xf32>
    %u = memref.cast %m : memref<2x32x64xf32> to memref<*xf32>
    call @tamoeRandomF32(%u, %seed) : (memref<*xf32>, i64) -> ()
    %t = bufferization.to_tensor %m restrict : memref<2x32x64xf32> to tensor<2x32x64xf32>
    return %t : tensor<2x32x64xf32>
  }
  func.func @random_w2(%seed: i64) -> tensor<2x64x32xf32> {
    %m = memref.alloc() : memref<2x64x32xf32>
    %u = memref.cast %m : memref<2x64x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%u, %seed) : (memref<*xf32>, i64) -> ()
    %t = bufferization.to_tensor %m restrict : memref<2x64x32xf32> to tensor<2x64x32xf32>
    return %t : tensor<2x64x32xf32>
  }
  func.func @main() {
    %rank = shard.process_linear_index on @ep : index
    %r = arith.index_cast %rank : index to i64
    %c1 = arith.constant 1 : i64
    %c10001 = arith.constant 10001 : i64
    %c1000 = arith.constant 1000 : i64
    %c2000 = arith.constant 2000 : i64
    %c3000 = arith.constant 3000 : i64
    %c12000 = arith.constant 12000 : i64
    %c13000 = arith.constant 13000 : i64
    %s_tokens = arith.addi %c1000, %r : i64
    %s_w10 = arith.addi %c2000, %r : i64
    %s_w20 = arith.addi %c3000, %r : i64
    %s_w11 = arith.addi %c12000, %r : i64
    %s_w21 = arith.addi %c13000, %r : i64
    %x = call @random_tokens(%s_tokens) : (i64) -> tensor<16x32xf32>
    %router0 = call @random_router(%c1) : (i64) -> tensor<32x16xf32>
    %w10 = call @random_w1(%s_w10) : (i64) -> tensor<2x32x64xf32>
    %w20 = call @random_w2(%s_w20) : (i64) -> tensor<2x64x32xf32>
    %router1 = call @random_router(%c10001) : (i64) -> tensor<32x16xf32>
    %w11 = call @random_w1(%s_w11) : (i64) -> tensor<2x32x64xf32>
    %w21 = call @random_w2(%s_w21) : (i64) -> tensor<2x64x32xf32>
    %out, %loss, %counts, %dropped = call @moe_block(%x, %router0, %w10, %w20, %router1, %w11, %w21) : (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>)
    %c0_i64 = arith.constant 0 : i64
    %c2 = arith.constant 2 : i64
    %c3 = arith.constant 3 : i64
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
    return
  }
}
