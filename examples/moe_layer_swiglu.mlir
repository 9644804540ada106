// The example layer (moe_layer.mlir) with SwiGLU experts, as Mixtral,
// DeepSeek and Qwen write them: silu(x W1) * (x W3) W2, each expert with
// three [32, 64] / [64, 32] weights. silu is a linalg.generic of
// x / (1 + exp(-x)), the product a linalg.mul: both become runtime maps in
// a device-resident program (tamoe_rt_map SILU and MUL), and the backward
// differentiates silu (SILU_GRAD).
//
// @main draws W3 from seeds 5000 + rank (the others as in moe_layer.mlir);
// `tamoe-reference --activation=swiglu` checks the outputs:
//
//   tamoe-opt moe_layer_swiglu.mlir --tamoe-pipeline --tamoe-to-llvm -o layer.llvm.mlir
//   mkdir -p out
//   TAMOE_RANKS_PER_NODE=4 TAMOE_RT_OUTPUT_DIR=out \
//     mpirun -np 8 mlir-runner layer.llvm.mlir -e main -entry-point-result=void \
//     --shared-libs=libtamoe_rt.so
#map = affine_map<(d0, d1) -> (d0, d1)>
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 2.000000e+01, down_bandwidth = 2.000000e+01, latency = 1.000000e+00, per_message = 1.000000e+00, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.000000e+00, down_bandwidth = 5.000000e+00, latency = 1.000000e+01, per_message = 1.000000e+01, uplink = shared>], "two nodes of four CPU ranks">} {
  shard.grid @ep(shape = 2x4)
  func.func @moe_layer(%tokens: tensor<16x32xf32>, %router: tensor<32x16xf32>, %w1: tensor<2x32x64xf32>, %w3: tensor<2x32x64xf32>, %w2: tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>) {
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
    %one = arith.constant 1.0 : f32
    %gate = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<?x64xf32>) outs(%he : tensor<?x64xf32>) {
    ^bb0(%in: f32, %out: f32):
      %neg = arith.negf %in : f32
      %exp = math.exp %neg : f32
      %den = arith.addf %exp, %one : f32
      %silu = arith.divf %in, %den : f32
      linalg.yield %silu : f32
    } -> tensor<?x64xf32>
    %h3 = tamoe.grouped_matmul %recv, %recv_counts, %w3 : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32> -> tensor<?x64xf32>
    %ae = tensor.empty(%n) : tensor<?x64xf32>
    %act = linalg.mul ins(%gate, %h3 : tensor<?x64xf32>, tensor<?x64xf32>) outs(%ae : tensor<?x64xf32>) -> tensor<?x64xf32>
    %y = tamoe.grouped_matmul %act, %recv_counts, %w2 : tensor<?x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf32> -> tensor<?x32xf32>
    %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<?x32xf32>, tensor<8x2xi32> -> tensor<32x32xf32>
    %out = tamoe.combine %back, %positions, %weights : tensor<32x32xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x32xf32>
    %loss = tamoe.aux_loss switch %probs, %ids : tensor<16x16xf32>, tensor<16x2xi32> -> tensor<f32>
    return %out, %loss, %recv_counts, %dropped : tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>
  }
  func.func private @tamoeRandomF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI32(memref<*xi32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputI64(memref<*xi64>, i64) attributes {llvm.emit_c_interface}
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
    %w3 = memref.alloc() : memref<2x32x64xf32>
    %c5000 = arith.constant 5000 : i64
    %s3 = arith.addi %c5000, %r : i64
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
    %u4 = memref.cast %w3 : memref<2x32x64xf32> to memref<*xf32>
    call @tamoeRandomF32(%u4, %s3) : (memref<*xf32>, i64) -> ()
    %t4 = bufferization.to_tensor %w3 restrict : memref<2x32x64xf32> to tensor<2x32x64xf32>
    %t0 = bufferization.to_tensor %tokens restrict : memref<16x32xf32> to tensor<16x32xf32>
    %t1 = bufferization.to_tensor %router restrict : memref<32x16xf32> to tensor<32x16xf32>
    %t2 = bufferization.to_tensor %w1 restrict : memref<2x32x64xf32> to tensor<2x32x64xf32>
    %t3 = bufferization.to_tensor %w2 restrict : memref<2x64x32xf32> to tensor<2x64x32xf32>
    %out, %loss, %counts, %dropped = call @moe_layer(%t0, %t1, %t2, %t4, %t3) : (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x64xf32>, tensor<2x32x64xf32>, tensor<2x64x32xf32>) -> (tensor<16x32xf32>, tensor<f32>, tensor<8x2xi32>, tensor<i64>)
    %b0 = bufferization.to_buffer %out read_only : tensor<16x32xf32> to memref<16x32xf32>
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
