// Found by tamoe-fuzz ir (seed 1): a bf16 layer whose tensor.dim index is
// the constant -1. MLIR 22's rewrites in tamoe-to-llvm crashed on it; the
// lowering now refuses it with a message (fuzz-ir.test replays it).
module {
  shard.grid @ep(shape = 4x8)
  func.func @layer(%tokens: tensor<512x1024xbf16>, %logits: tensor<512x32xf32>, %w: tensor<1024x1024xbf16>) -> (tensor<512x1024xbf16>, tensor<f32>) {
    %c0 = arith.constant -1 : index
    %zero = arith.constant 0.0 : bf16
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<512x32xf32> -> tensor<512x2xi32>, tensor<512x2xf32>, tensor<512x32xf32>
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<512x1024xbf16>, tensor<512x2xi32> -> tensor<1024x1024xbf16>, tensor<32xi32>, tensor<512x2xi32>, tensor<i64>
    %received, %received_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<1024x1024xbf16>, tensor<32xi32> -> tensor<?x1024xbf16>
    %n = tensor.dim %received, %c0 : tensor<?x1024xbf16>
    %init = tensor.empty(%n) : tensor<?x1024xbf16>
    %fill = linalg.fill ins(%zero : bf16) outs(%init : tensor<?x1024xbf16>) -> tensor<?x1024xbf16>
    %expert = linalg.matmul ins(%received, %w : tensor<?x1024xbf16>, tensor<1024x1024xbf16>) outs(%fill : tensor<?x1024xbf16>) -> tensor<?x1024xbf16>
    %back, %back_counts = tamoe.all_to_all %expert, %received_counts on @ep : tensor<?x1024xbf16>, tensor<32xi32> -> tensor<1024x1024xbf16>
    %combined = tamoe.combine %back, %positions, %weights : tensor<1024x1024xbf16>, tensor<512x2xi32>, tensor<512x2xf32> -> tensor<512x1024xbf16>
    %loss = tamoe.aux_loss switch %probs, %ids : tensor<512x32xf32>, tensor<512x2xi32> -> tensor<f32>
    return %combined, %loss : tensor<512x1024xbf16>, tensor<f32>
  }
}
