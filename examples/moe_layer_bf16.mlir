// The example layer (moe_layer.mlir) with bf16 rows, as mixed-precision
// training runs it: tokens, router and expert weights, the dispatched and
// exchanged rows, the expert activations and the output are bf16; the router
// logits (a bf16 x bf16 -> f32 linalg.matmul), the gate's weights and
// probabilities and the loss stay f32. The runtime computes each op in f32
// from its bf16 inputs and rounds its bf16 outputs once (docs/runtime.md),
// and the exchanges move half the bytes of the f32 layer.
//
// @main draws the f32 inputs of moe_layer.mlir, rounds them to bf16 (a
// linalg.generic of arith.truncf, tamoe_rt_convert when device-resident),
// runs the layer and writes its output widened to f32 (arith.extf), so that
// `tamoe-reference --dtype=bf16` checks it against a serial computation that
// rounds where the runtime does:
//
//   tamoe-opt moe_layer_bf16.mlir --tamoe-pipeline --tamoe-to-llvm -o layer.llvm.mlir
//   mkdir -p out
//   TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR=out \
//     mpirun -np 8 mlir-runner layer.llvm.mlir -e main -entry-point-result=void \
//     --shared-libs=libtamoe_rt.so
#map = affine_map<(d0, d1) -> (d0, d1)>
#map3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 2.000000e+01, down_bandwidth = 2.000000e+01, latency = 1.000000e+00, per_message = 1.000000e+00, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.000000e+00, down_bandwidth = 5.000000e+00, latency = 1.000000e+01, per_message = 1.000000e+01, uplink = shared>], "two nodes of four CPU ranks">} {
  shard.grid @ep(shape = 2x4)
  func.func @moe_layer(%tokens: tensor<16x32xbf16>, %router: tensor<32x16xbf16>, %w1: tensor<2x32x64xbf16>, %w2: tensor<2x64x32xbf16>) -> (tensor<16x32xbf16>, tensor<f32>, tensor<8x2xi32>, tensor<i64>) {
    %c0 = arith.constant 0 : index
    %zero = arith.constant 0.0 : f32
    %zero16 = arith.constant 0.0 : bf16
    %e = tensor.empty() : tensor<16x16xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<16x16xf32>) -> tensor<16x16xf32>
    %logits = linalg.matmul ins(%tokens, %router : tensor<16x32xbf16>, tensor<32x16xbf16>) outs(%f : tensor<16x16xf32>) -> tensor<16x16xf32>
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<16x16xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x16xf32>
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xbf16>, tensor<16x2xi32> -> tensor<32x32xbf16>, tensor<16xi32>, tensor<16x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<32x32xbf16>, tensor<8x2xi32> -> tensor<?x32xbf16>
    %h = tamoe.grouped_matmul %recv, %recv_counts, %w1 : tensor<?x32xbf16>, tensor<8x2xi32>, tensor<2x32x64xbf16> -> tensor<?x64xbf16>
    %n = tensor.dim %h, %c0 : tensor<?x64xbf16>
    %he = tensor.empty(%n) : tensor<?x64xbf16>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<?x64xbf16>) outs(%he : tensor<?x64xbf16>) {
    ^bb0(%in: bf16, %out: bf16):
      %m = arith.maximumf %in, %zero16 : bf16
      linalg.yield %m : bf16
    } -> tensor<?x64xbf16>
    %y = tamoe.grouped_matmul %relu, %recv_counts, %w2 : tensor<?x64xbf16>, tensor<8x2xi32>, tensor<2x64x32xbf16> -> tensor<?x32xbf16>
    %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<?x32xbf16>, tensor<8x2xi32> -> tensor<32x32xbf16>
    %out = tamoe.combine %back, %positions, %weights : tensor<32x32xbf16>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x32xbf16>
    %loss = tamoe.aux_loss switch %probs, %ids : tensor<16x16xf32>, tensor<16x2xi32> -> tensor<f32>
    return %out, %loss, %recv_counts, %dropped : tensor<16x32xbf16>, tensor<f32>, tensor<8x2xi32>, tensor<i64>
  }
  func.func private @tamoeRandomF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI32(memref<*xi32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI64(memref<*xi64>, i64) attributes {llvm.emit_c_interface}
  // f32 -> bf16, elementwise.
  func.func @to_bf16_2d(%x: tensor<?x?xf32>) -> tensor<?x?xbf16> {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %d0 = tensor.dim %x, %c0 : tensor<?x?xf32>
    %d1 = tensor.dim %x, %c1 : tensor<?x?xf32>
    %e = tensor.empty(%d0, %d1) : tensor<?x?xbf16>
    %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<?x?xf32>) outs(%e : tensor<?x?xbf16>) {
    ^bb0(%in: f32, %out: bf16):
      %t = arith.truncf %in : f32 to bf16
      linalg.yield %t : bf16
    } -> tensor<?x?xbf16>
    return %r : tensor<?x?xbf16>
  }
  func.func @to_bf16_3d(%x: tensor<2x?x?xf32>) -> tensor<2x?x?xbf16> {
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    %d1 = tensor.dim %x, %c1 : tensor<2x?x?xf32>
    %d2 = tensor.dim %x, %c2 : tensor<2x?x?xf32>
    %e = tensor.empty(%d1, %d2) : tensor<2x?x?xbf16>
    %r = linalg.generic {indexing_maps = [#map3, #map3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%x : tensor<2x?x?xf32>) outs(%e : tensor<2x?x?xbf16>) {
    ^bb0(%in: f32, %out: bf16):
      %t = arith.truncf %in : f32 to bf16
      linalg.yield %t : bf16
    } -> tensor<2x?x?xbf16>
    return %r : tensor<2x?x?xbf16>
  }
  func.func @main() {
    %rank = shard.process_linear_index on @ep : index
    %r = arith.index_cast %rank : index to i64
    %c1000 = arith.constant 1000 : i64
    %c2000 = arith.constant 2000 : i64
    %c3000 = arith.constant 3000 : i64
    %c1 = arith.constant 1 : i64
    %c0_i64 = arith.constant 0 : i64
    %c2 = arith.constant 2 : i64
    %tokens = memref.alloc() : memref<16x32xf32>
    %router = memref.alloc() : memref<32x16xf32>
    %w1 = memref.alloc() : memref<2x32x64xf32>
    %w2 = memref.alloc() : memref<2x64x32xf32>
    %s0 = arith.addi %c1000, %r : i64
    %s1 = arith.addi %c2000, %r : i64
    %s2 = arith.addi %c3000, %r : i64
    %u0 = memref.cast %tokens : memref<16x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%u0, %s0) : (memref<*xf32>, i64) -> ()
    %u1 = memref.cast %router : memref<32x16xf32> to memref<*xf32>
    call @tamoeRandomF32(%u1, %c1) : (memref<*xf32>, i64) -> ()
    %u2 = memref.cast %w1 : memref<2x32x64xf32> to memref<*xf32>
    call @tamoeRandomF32(%u2, %s1) : (memref<*xf32>, i64) -> ()
    %u3 = memref.cast %w2 : memref<2x64x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%u3, %s2) : (memref<*xf32>, i64) -> ()
    %t0 = bufferization.to_tensor %tokens restrict : memref<16x32xf32> to tensor<16x32xf32>
    %t1 = bufferization.to_tensor %router restrict : memref<32x16xf32> to tensor<32x16xf32>
    %t2 = bufferization.to_tensor %w1 restrict : memref<2x32x64xf32> to tensor<2x32x64xf32>
    %t3 = bufferization.to_tensor %w2 restrict : memref<2x64x32xf32> to tensor<2x64x32xf32>
    %d0 = tensor.cast %t0 : tensor<16x32xf32> to tensor<?x?xf32>
    %d1 = tensor.cast %t1 : tensor<32x16xf32> to tensor<?x?xf32>
    %d2 = tensor.cast %t2 : tensor<2x32x64xf32> to tensor<2x?x?xf32>
    %d3 = tensor.cast %t3 : tensor<2x64x32xf32> to tensor<2x?x?xf32>
    %h0 = call @to_bf16_2d(%d0) : (tensor<?x?xf32>) -> tensor<?x?xbf16>
    %h1 = call @to_bf16_2d(%d1) : (tensor<?x?xf32>) -> tensor<?x?xbf16>
    %h2 = call @to_bf16_3d(%d2) : (tensor<2x?x?xf32>) -> tensor<2x?x?xbf16>
    %h3 = call @to_bf16_3d(%d3) : (tensor<2x?x?xf32>) -> tensor<2x?x?xbf16>
    %x0 = tensor.cast %h0 : tensor<?x?xbf16> to tensor<16x32xbf16>
    %x1 = tensor.cast %h1 : tensor<?x?xbf16> to tensor<32x16xbf16>
    %x2 = tensor.cast %h2 : tensor<2x?x?xbf16> to tensor<2x32x64xbf16>
    %x3 = tensor.cast %h3 : tensor<2x?x?xbf16> to tensor<2x64x32xbf16>
    %out, %loss, %counts, %dropped = call @moe_layer(%x0, %x1, %x2, %x3) : (tensor<16x32xbf16>, tensor<32x16xbf16>, tensor<2x32x64xbf16>, tensor<2x64x32xbf16>) -> (tensor<16x32xbf16>, tensor<f32>, tensor<8x2xi32>, tensor<i64>)
    %oe = tensor.empty() : tensor<16x32xf32>
    %wide = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%out : tensor<16x32xbf16>) outs(%oe : tensor<16x32xf32>) {
    ^bb0(%in: bf16, %o: f32):
      %w = arith.extf %in : bf16 to f32
      linalg.yield %w : f32
    } -> tensor<16x32xf32>
    %b0 = bufferization.to_buffer %wide read_only : tensor<16x32xf32> to memref<16x32xf32>
    %o0 = memref.cast %b0 : memref<16x32xf32> to memref<*xf32>
    call @tamoeOutputF32(%o0, %c0_i64) : (memref<*xf32>, i64) -> ()
    %b1 = bufferization.to_buffer %loss read_only : tensor<f32> to memref<f32>
    %o1 = memref.cast %b1 : memref<f32> to memref<*xf32>
    call @tamoeOutputF32(%o1, %c1) : (memref<*xf32>, i64) -> ()
    %b2 = bufferization.to_buffer %counts read_only : tensor<8x2xi32> to memref<8x2xi32>
    %o2 = memref.cast %b2 : memref<8x2xi32> to memref<*xi32>
    call @tamoeOutputI32(%o2, %c2) : (memref<*xi32>, i64) -> ()
    %c3 = arith.constant 3 : i64
    %b3 = bufferization.to_buffer %dropped read_only : tensor<i64> to memref<i64>
    %o3 = memref.cast %b3 : memref<i64> to memref<*xi64>
    call @tamoeOutputI64(%o3, %c3) : (memref<*xi64>, i64) -> ()
    return
  }
}
