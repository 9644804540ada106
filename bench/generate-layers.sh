#!/usr/bin/env bash
# Prints a module with N MoE layers (32 ranks as 4 x 8, 32 experts, top-2,
# 512 tokens x 1024 bf16 per rank), each in its own function: the input of
# the pipeline compile-time benchmark.
#   bash bench/generate-layers.sh 1000 > layers.mlir
set -euo pipefail
layers=${1:?usage: generate-layers.sh N}
echo "module {"
echo "  shard.grid @ep(shape = 4x8)"
for ((i = 0; i < layers; i++)); do
  cat <<LAYER
  func.func @layer$i(%tokens: tensor<512x1024xbf16>, %logits: tensor<512x32xf32>, %w: tensor<1024x1024xbf16>) -> (tensor<512x1024xbf16>, tensor<f32>) {
    %c0 = arith.constant 0 : index
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
LAYER
done
echo "}"
