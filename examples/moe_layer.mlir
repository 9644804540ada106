// One MoE layer of a per-rank SPMD program: 8 ranks (2 nodes x 4), 8 experts
// (one per rank), top-2 routing, 16 tokens of hidden size 64 per rank.
// gate -> dispatch -> all_to_all -> expert FFN (linalg) -> all_to_all ->
// combine, plus the load-balancing loss.
module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [#tamoe.level<"node", fanout = 4, up_bandwidth = 2.000000e+01, down_bandwidth = 2.000000e+01, latency = 1.000000e+00, uplink = per_rank>, #tamoe.level<"cluster", fanout = 2, up_bandwidth = 5.000000e+00, down_bandwidth = 5.000000e+00, latency = 1.000000e+01, uplink = shared>], "two nodes of four CPU ranks">} {
  shard.grid @ep(shape = 2x4)
  func.func @moe_layer(%tokens: tensor<16x64xf32>, %router: tensor<64x8xf32>, %w_in: tensor<64x256xf32>, %w_out: tensor<256x64xf32>) -> (tensor<16x64xf32>, tensor<f32>) {
    %c0 = arith.constant 0 : index
    %zero = arith.constant 0.000000e+00 : f32
    %logits_init = tensor.empty() : tensor<16x8xf32>
    %logits_zero = linalg.fill ins(%zero : f32) outs(%logits_init : tensor<16x8xf32>) -> tensor<16x8xf32>
    %logits = linalg.matmul ins(%tokens, %router : tensor<16x64xf32>, tensor<64x8xf32>) outs(%logits_zero : tensor<16x8xf32>) -> tensor<16x8xf32>
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    %received, %received_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %n = tensor.dim %received, %c0 : tensor<?x64xf32>
    %hidden_init = tensor.empty(%n) : tensor<?x256xf32>
    %hidden_zero = linalg.fill ins(%zero : f32) outs(%hidden_init : tensor<?x256xf32>) -> tensor<?x256xf32>
    %hidden = linalg.matmul ins(%received, %w_in : tensor<?x64xf32>, tensor<64x256xf32>) outs(%hidden_zero : tensor<?x256xf32>) -> tensor<?x256xf32>
    %relu = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%hidden : tensor<?x256xf32>) outs(%hidden_init : tensor<?x256xf32>) {
    ^bb0(%in: f32, %out: f32):
      %max = arith.maximumf %in, %zero : f32
      linalg.yield %max : f32
    } -> tensor<?x256xf32>
    %expert_init = tensor.empty(%n) : tensor<?x64xf32>
    %expert_zero = linalg.fill ins(%zero : f32) outs(%expert_init : tensor<?x64xf32>) -> tensor<?x64xf32>
    %expert_out = linalg.matmul ins(%relu, %w_out : tensor<?x256xf32>, tensor<256x64xf32>) outs(%expert_zero : tensor<?x64xf32>) -> tensor<?x64xf32>
    %returned, %returned_counts = tamoe.all_to_all %expert_out, %received_counts on @ep : tensor<?x64xf32>, tensor<8xi32> -> tensor<32x64xf32>
    %combined = tamoe.combine %returned, %positions, %weights : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x64xf32>
    %loss = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    return %combined, %loss : tensor<16x64xf32>, tensor<f32>
  }
}
