// One MoE layer of a per-rank SPMD program: 8 ranks (2 nodes x 4, the grid
// @ep), 8 experts (one per rank), top-2 routing, 16 tokens of hidden size 64
// per rank. Arguments: tokens [16, 64], router weights [64, 8], expert FFN
// weights [64, 256] and [256, 64]. Results: the layer output and the
// load-balancing loss.
//
// gate -> dispatch -> all_to_all -> expert FFN (linalg) -> all_to_all ->
// combine, plus aux_loss. The file is in tamoe-opt's printed form: it prints
// back identically.
#map = affine_map<(d0, d1) -> (d0, d1)>
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [<"node", fanout = 4, up_bandwidth = 2.000000e+01, down_bandwidth = 2.000000e+01, latency = 1.000000e+00, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 5.000000e+00, down_bandwidth = 5.000000e+00, latency = 1.000000e+01, uplink = shared>], "two nodes of four CPU ranks">} {
  shard.grid @ep(shape = 2x4)
  func.func @moe_layer(%arg0: tensor<16x64xf32>, %arg1: tensor<64x8xf32>, %arg2: tensor<64x256xf32>, %arg3: tensor<256x64xf32>) -> (tensor<16x64xf32>, tensor<f32>) {
    %c0 = arith.constant 0 : index
    %cst = arith.constant 0.000000e+00 : f32
    %0 = tensor.empty() : tensor<16x8xf32>
    %1 = linalg.fill ins(%cst : f32) outs(%0 : tensor<16x8xf32>) -> tensor<16x8xf32>
    %2 = linalg.matmul ins(%arg0, %arg1 : tensor<16x64xf32>, tensor<64x8xf32>) outs(%1 : tensor<16x8xf32>) -> tensor<16x8xf32>
    %expert_ids, %weights, %probs = tamoe.gate %2 top 2 softmax renormalize : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    %dispatched, %expert_counts, %positions, %num_dropped = tamoe.dispatch %arg0, %expert_ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    %received, %recv_counts = tamoe.all_to_all %dispatched, %expert_counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %dim = tensor.dim %received, %c0 : tensor<?x64xf32>
    %3 = tensor.empty(%dim) : tensor<?x256xf32>
    %4 = linalg.fill ins(%cst : f32) outs(%3 : tensor<?x256xf32>) -> tensor<?x256xf32>
    %5 = linalg.matmul ins(%received, %arg2 : tensor<?x64xf32>, tensor<64x256xf32>) outs(%4 : tensor<?x256xf32>) -> tensor<?x256xf32>
    %6 = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%5 : tensor<?x256xf32>) outs(%3 : tensor<?x256xf32>) {
    ^bb0(%in: f32, %out: f32):
      %12 = arith.maximumf %in, %cst : f32
      linalg.yield %12 : f32
    } -> tensor<?x256xf32>
    %7 = tensor.empty(%dim) : tensor<?x64xf32>
    %8 = linalg.fill ins(%cst : f32) outs(%7 : tensor<?x64xf32>) -> tensor<?x64xf32>
    %9 = linalg.matmul ins(%6, %arg3 : tensor<?x256xf32>, tensor<256x64xf32>) outs(%8 : tensor<?x64xf32>) -> tensor<?x64xf32>
    %received_0, %recv_counts_1 = tamoe.all_to_all %9, %recv_counts on @ep : tensor<?x64xf32>, tensor<8xi32> -> tensor<32x64xf32>
    %10 = tamoe.combine %received_0, %positions, %weights : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x64xf32>
    %11 = tamoe.aux_loss switch %probs, %expert_ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    return %10, %11 : tensor<16x64xf32>, tensor<f32>
  }
}

