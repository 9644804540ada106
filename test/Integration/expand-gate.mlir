// tamoe-expand-gate computes the gate and the losses correctly: lowered to
// LLVM with upstream passes and run with mlir-runner.
// RUN: tamoe-opt %s --tamoe-expand-gate --one-shot-bufferize=bufferize-function-boundaries \
// RUN:   --convert-linalg-to-loops --convert-scf-to-cf --expand-strided-metadata \
// RUN:   --lower-affine --convert-to-llvm --reconcile-unrealized-casts \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils.so,%mlir_lib_dir/libmlir_c_runner_utils.so \
// RUN: | FileCheck %s

func.func private @printMemrefI32(memref<*xi32>)
func.func private @printMemrefF32(memref<*xf32>)

func.func @main() {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %logits = arith.constant dense<[[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 5.0, 0.0]]> : tensor<3x4xf32>

  // Softmax top-2, renormalised. softmax([1, 2, 3, 4]) =
  // [0.0320586, 0.0871443, 0.236883, 0.643914]; the top two, renormalised:
  // 0.731059 and 0.268941. In the third row the runner-up ties three ways
  // and goes to the lowest id.
  %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<3x4xf32> -> tensor<3x2xi32>, tensor<3x2xf32>, tensor<3x4xf32>
  %ids_m = bufferization.to_buffer %ids : tensor<3x2xi32> to memref<3x2xi32>
  %ids_u = memref.cast %ids_m : memref<3x2xi32> to memref<*xi32>
  call @printMemrefI32(%ids_u) : (memref<*xi32>) -> ()
  // CHECK: {{\[\[}}3,   2]
  // CHECK-NEXT: [0,   1]
  // CHECK-NEXT: [2,   0]
  %weights_m = bufferization.to_buffer %weights : tensor<3x2xf32> to memref<3x2xf32>
  %weights_u = memref.cast %weights_m : memref<3x2xf32> to memref<*xf32>
  call @printMemrefF32(%weights_u) : (memref<*xf32>) -> ()
  // CHECK: [0.731059,   0.268941]
  // CHECK-NEXT: [0.731059,   0.268941]
  // CHECK-NEXT: [0.993307,   0.00669285]
  %probs_m = bufferization.to_buffer %probs : tensor<3x4xf32> to memref<3x4xf32>
  %probs_u = memref.cast %probs_m : memref<3x4xf32> to memref<*xf32>
  call @printMemrefF32(%probs_u) : (memref<*xf32>) -> ()
  // CHECK: [0.0320586,   0.0871443,   0.236883,   0.643914]

  // Switch loss: counts [2, 1, 2, 1] of the k S = 6 assignments and the
  // mean probabilities over the three rows: E sum_e f_e P_e = 1.10818.
  %switch = tamoe.aux_loss switch %probs, %ids : tensor<3x4xf32>, tensor<3x2xi32> -> tensor<f32>
  // With unit weights the topology loss is the switch loss exactly.
  %ones = arith.constant dense<1.0> : tensor<4xf32>
  %same = tamoe.aux_loss topology %probs, %ids weights %ones : tensor<3x4xf32>, tensor<3x2xi32>, tensor<4xf32> -> tensor<f32>
  // Dropped assignments (id -1) are not counted: 0.818351.
  %dropped = arith.constant dense<[[3, -1], [0, 1], [2, 0]]> : tensor<3x2xi32>
  %partial = tamoe.aux_loss switch %probs, %dropped : tensor<3x4xf32>, tensor<3x2xi32> -> tensor<f32>
  // The same assignment dropped by the dispatch (position -1): 0.818351.
  %positions = arith.constant dense<[[0, -1], [0, 0], [1, 1]]> : tensor<3x2xi32>
  %dispatched = tamoe.aux_loss switch %probs, %ids dispatched %positions : tensor<3x4xf32>, tensor<3x2xi32>, tensor<3x2xi32> -> tensor<f32>
  // Weights [2, 1, 1, 0.5] (a plan that favours expert 0): 1.3357.
  %w = arith.constant dense<[2.0, 1.0, 1.0, 0.5]> : tensor<4xf32>
  %weighted = tamoe.aux_loss topology %probs, %ids weights %w : tensor<3x4xf32>, tensor<3x2xi32>, tensor<4xf32> -> tensor<f32>
  %l0 = tensor.extract %switch[] : tensor<f32>
  %l1 = tensor.extract %same[] : tensor<f32>
  %l2 = tensor.extract %partial[] : tensor<f32>
  %l3 = tensor.extract %weighted[] : tensor<f32>
  %l4 = tensor.extract %dispatched[] : tensor<f32>
  %losses = tensor.from_elements %l0, %l1, %l2, %l3, %l4 : tensor<5xf32>
  %losses_m = bufferization.to_buffer %losses : tensor<5xf32> to memref<5xf32>
  %losses_u = memref.cast %losses_m : memref<5xf32> to memref<*xf32>
  call @printMemrefF32(%losses_u) : (memref<*xf32>) -> ()
  // CHECK: [1.10818,  1.10818,  0.818351,  1.3357,  0.818351]

  // Sigmoid scores, 2 groups of 2 experts, keep 1: the best group of row 0
  // is {2, 3} (0.952574 + 0.982014), so both picks come from it.
  %gids, %gw, %gp = tamoe.gate %logits top 2 sigmoid groups 2 keep 1 : tensor<3x4xf32> -> tensor<3x2xi32>, tensor<3x2xf32>, tensor<3x4xf32>
  %gids_m = bufferization.to_buffer %gids : tensor<3x2xi32> to memref<3x2xi32>
  %gids_u = memref.cast %gids_m : memref<3x2xi32> to memref<*xi32>
  call @printMemrefI32(%gids_u) : (memref<*xi32>) -> ()
  // CHECK: {{\[\[}}3,   2]
  // CHECK-NEXT: [0,   1]
  // CHECK-NEXT: [2,   3]
  %gw_m = bufferization.to_buffer %gw : tensor<3x2xf32> to memref<3x2xf32>
  %gw_u = memref.cast %gw_m : memref<3x2xf32> to memref<*xf32>
  call @printMemrefF32(%gw_u) : (memref<*xf32>) -> ()
  // CHECK: [0.982014,   0.952574]

  // Sigmoid top-2 renormalised, where every score of row 0 underflows to 0
  // in f32: its weights are 0 over (0 + 1e-20), not NaN; row 1 keeps
  // sigmoid(2) / (sigmoid(2) + sigmoid(1)) = 0.546449.
  %under = arith.constant dense<[[-100.0, -101.0, -102.0, -103.0], [1.0, -1.0, 2.0, 0.0]]> : tensor<2x4xf32>
  %uids, %uw, %up = tamoe.gate %under top 2 sigmoid renormalize : tensor<2x4xf32> -> tensor<2x2xi32>, tensor<2x2xf32>, tensor<2x4xf32>
  %uw_m = bufferization.to_buffer %uw : tensor<2x2xf32> to memref<2x2xf32>
  %uw_u = memref.cast %uw_m : memref<2x2xf32> to memref<*xf32>
  call @printMemrefF32(%uw_u) : (memref<*xf32>) -> ()
  // CHECK: {{\[\[}}0,   0]
  // CHECK-NEXT: [0.546449,   0.453551]

  // The same in f16, whose scores are computed in f32 and rounded once:
  // sigmoid(-20) is no f16 0 there, and the weights are the f32 runtime's
  // 0.731059 and 0.268941, rounded to f16. Logits whose f32 sigmoid
  // underflows too give weights 0, not NaN.
  %under16 = arith.constant dense<[[-20.0, -21.0, -22.0, -23.0], [-200.0, -210.0, -220.0, -230.0]]> : tensor<2x4xf16>
  %hids, %hw, %hp = tamoe.gate %under16 top 2 sigmoid renormalize : tensor<2x4xf16> -> tensor<2x2xi32>, tensor<2x2xf16>, tensor<2x4xf16>
  %h0 = tensor.extract %hw[%c0, %c0] : tensor<2x2xf16>
  %h1 = tensor.extract %hw[%c0, %c1] : tensor<2x2xf16>
  %h2 = tensor.extract %hw[%c1, %c0] : tensor<2x2xf16>
  %h3 = tensor.extract %hw[%c1, %c1] : tensor<2x2xf16>
  %h0f = arith.extf %h0 : f16 to f32
  %h1f = arith.extf %h1 : f16 to f32
  %h2f = arith.extf %h2 : f16 to f32
  %h3f = arith.extf %h3 : f16 to f32
  %hwf = tensor.from_elements %h0f, %h1f, %h2f, %h3f : tensor<4xf32>
  %hw_m = bufferization.to_buffer %hwf : tensor<4xf32> to memref<4xf32>
  %hw_u = memref.cast %hw_m : memref<4xf32> to memref<*xf32>
  call @printMemrefF32(%hw_u) : (memref<*xf32>) -> ()
  // CHECK: [0.730957,  0.269043,  0,  0]

  // A bf16 softmax over 512 equal logits: 1/512 = 0.00195312 each. Summed
  // in bf16 the row stopped at 256 (256 + 1 rounds to 256), which gave
  // 1/256 = 0.00390625.
  %flat = arith.constant dense<0.0> : tensor<1x512xbf16>
  %bids, %bw, %bp = tamoe.gate %flat top 2 softmax : tensor<1x512xbf16> -> tensor<1x2xi32>, tensor<1x2xbf16>, tensor<1x512xbf16>
  %b0 = tensor.extract %bw[%c0, %c0] : tensor<1x2xbf16>
  %b1 = tensor.extract %bw[%c0, %c1] : tensor<1x2xbf16>
  %b0f = arith.extf %b0 : bf16 to f32
  %b1f = arith.extf %b1 : bf16 to f32
  %bwf = tensor.from_elements %b0f, %b1f : tensor<2xf32>
  %bw_m = bufferization.to_buffer %bwf : tensor<2xf32> to memref<2xf32>
  %bw_u = memref.cast %bw_m : memref<2xf32> to memref<*xf32>
  call @printMemrefF32(%bw_u) : (memref<*xf32>) -> ()
  // CHECK: [0.00195312,  0.00195312]

  // NaN logits (overflowed) rank as -inf, as the runtime's gate ranks them.
  // Row 0, 2 groups of 2, keep 1: group 0 holds NaN only and scores -inf,
  // so both picks come from group 1. Row 1, NaN everywhere: the lower group
  // and ids, weights NaN; no expert twice.
  %nan = arith.constant dense<[[0x7FC00000, 0x7FC00000, 1.0, 0.5], [0x7FC00000, 0x7FC00000, 0x7FC00000, 0x7FC00000]]> : tensor<2x4xf32>
  %nids, %nw, %np = tamoe.gate %nan top 2 sigmoid groups 2 keep 1 : tensor<2x4xf32> -> tensor<2x2xi32>, tensor<2x2xf32>, tensor<2x4xf32>
  %nids_m = bufferization.to_buffer %nids : tensor<2x2xi32> to memref<2x2xi32>
  %nids_u = memref.cast %nids_m : memref<2x2xi32> to memref<*xi32>
  call @printMemrefI32(%nids_u) : (memref<*xi32>) -> ()
  // CHECK: {{\[\[}}2,   3]
  // CHECK-NEXT: [0,   1]
  %nw_m = bufferization.to_buffer %nw : tensor<2x2xf32> to memref<2x2xf32>
  %nw_u = memref.cast %nw_m : memref<2x2xf32> to memref<*xf32>
  call @printMemrefF32(%nw_u) : (memref<*xf32>) -> ()
  // CHECK: {{\[\[}}0.731059,   0.622459]
  // CHECK-NEXT: [{{-?nan}},   {{-?nan}}]

  // Fewer experts than k, known at run time only (the runtime's gate
  // refuses it): the picks past the last expert are id -1 with weight 0,
  // and renormalisation spreads over the real picks. Not expert 0 again,
  // which sent a token to it twice with its weight counted twice. Two
  // experts, top 3; then none, where every pick is missing and nothing is
  // read.
  %two = arith.constant dense<[[1.0, 2.0], [4.0, 3.0]]> : tensor<2x2xf32>
  %two_d = tensor.cast %two : tensor<2x2xf32> to tensor<?x?xf32>
  %fids, %fw = call @top3(%two_d) : (tensor<?x?xf32>) -> (tensor<?x3xi32>, tensor<?x3xf32>)
  %fids_m = bufferization.to_buffer %fids : tensor<?x3xi32> to memref<?x3xi32>
  %fids_u = memref.cast %fids_m : memref<?x3xi32> to memref<*xi32>
  call @printMemrefI32(%fids_u) : (memref<*xi32>) -> ()
  // CHECK: {{\[\[}}1,   0,   -1]
  // CHECK-NEXT: [0,   1,   -1]
  %fw_m = bufferization.to_buffer %fw : tensor<?x3xf32> to memref<?x3xf32>
  %fw_u = memref.cast %fw_m : memref<?x3xf32> to memref<*xf32>
  call @printMemrefF32(%fw_u) : (memref<*xf32>) -> ()
  // CHECK: {{\[\[}}0.731059,   0.268941,   0]
  // CHECK-NEXT: [0.731059,   0.268941,   0]
  // The loss counts the real picks only (over all k S assignments, as for
  // dropped ones): E / (k S^2) * sum_e count_e * sum_s probs[s, e]
  // = 2 / (3 * 4) * (2 * 1 + 2 * 1) = 0.666667.
  %fp = call @top3_probs(%two_d) : (tensor<?x?xf32>) -> tensor<?x?xf32>
  %floss = tamoe.aux_loss switch %fp, %fids : tensor<?x?xf32>, tensor<?x3xi32> -> tensor<f32>
  %fl = tensor.extract %floss[] : tensor<f32>
  %fl_t = tensor.from_elements %fl : tensor<1xf32>
  %fl_m = bufferization.to_buffer %fl_t : tensor<1xf32> to memref<1xf32>
  %fl_u = memref.cast %fl_m : memref<1xf32> to memref<*xf32>
  call @printMemrefF32(%fl_u) : (memref<*xf32>) -> ()
  // CHECK: [0.666667]
  %none = tensor.empty() : tensor<2x0xf32>
  %none_d = tensor.cast %none : tensor<2x0xf32> to tensor<?x?xf32>
  %zids, %zw = call @top3(%none_d) : (tensor<?x?xf32>) -> (tensor<?x3xi32>, tensor<?x3xf32>)
  %zids_m = bufferization.to_buffer %zids : tensor<?x3xi32> to memref<?x3xi32>
  %zids_u = memref.cast %zids_m : memref<?x3xi32> to memref<*xi32>
  call @printMemrefI32(%zids_u) : (memref<*xi32>) -> ()
  // CHECK: {{\[\[}}-1,   -1,   -1]
  // CHECK-NEXT: [-1,   -1,   -1]
  %zw_m = bufferization.to_buffer %zw : tensor<?x3xf32> to memref<?x3xf32>
  %zw_u = memref.cast %zw_m : memref<?x3xf32> to memref<*xf32>
  call @printMemrefF32(%zw_u) : (memref<*xf32>) -> ()
  // CHECK: {{\[\[}}0,   0,   0]
  // CHECK-NEXT: [0,   0,   0]
  return
}

func.func @top3(%logits: tensor<?x?xf32>) -> (tensor<?x3xi32>, tensor<?x3xf32>) {
  %ids, %weights, %probs = tamoe.gate %logits top 3 softmax renormalize : tensor<?x?xf32> -> tensor<?x3xi32>, tensor<?x3xf32>, tensor<?x?xf32>
  return %ids, %weights : tensor<?x3xi32>, tensor<?x3xf32>
}

func.func @top3_probs(%logits: tensor<?x?xf32>) -> tensor<?x?xf32> {
  %ids, %weights, %probs = tamoe.gate %logits top 3 softmax renormalize : tensor<?x?xf32> -> tensor<?x3xi32>, tensor<?x3xf32>, tensor<?x?xf32>
  return %probs : tensor<?x?xf32>
}
