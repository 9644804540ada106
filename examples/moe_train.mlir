// Training a small MoE on 8 ranks (2 nodes x 4, a DGX-1 scaled to 2 x 4:
// NVLink inside a node, a shared InfiniBand link between nodes) so that the
// topology-aware loss can teach the router to follow the interconnect.
//
// Task: teacher-student. A fixed teacher MoE (8 experts, top-1, all on every
// rank: @teacher) maps random tokens x (uniform in [-1, 1), 16 features, a
// fresh batch per step and rank) to targets y. Its router splits the input
// space into regions with a different expert function each, so the student
// must route: an expert can only fit the regions it is sent. Every node of
// the student holds 8 of its 16 experts, enough to cover the teacher's 8
// regions, so routing that stays inside a node can still learn the task.
//
// Student (@model): x W_in -> MoE layer (16 experts, 2 per rank, top-2,
// dropless, relu FFN 32 -> 128 -> 32) with a residual -> W_out; the task loss
// is the mean squared error, and the layer's load-balancing loss is a
// `switch` loss, which --tamoe-pipeline makes topology-aware.
//
// @main trains for STEPS steps with Adam: tamoe.vjp @model gives the losses
// and every gradient; W_in and W_out are replicated (their gradients are
// averaged over the ranks with tamoe.all_reduce), the router is this rank's
// own (as in the TA-MoE implementation: each sender learns its own
// preference), the experts are this rank's shard. The router's and the
// experts' gradients are thus of the sum of the ranks' losses, W_in's and
// W_out's of their mean: Adam does not see that scale, SGD would (scale
// its learning rates by the ranks, or average those gradients too). Per
// step it appends to
// $TAMOE_RT_OUTPUT_DIR the task loss (out0), the auxiliary loss (out1), the
// rows it received per source rank and local expert (out2) and the bytes it
// sent within and across nodes (out3); bench/training.sh turns them into
// docs/results/training.md.
//
//   tamoe-opt moe_train.mlir --tamoe-pipeline --tamoe-to-llvm -o train.llvm.mlir
//   mpirun -np 8 mlir-runner train.llvm.mlir -e main -entry-point-result=void \
//     --shared-libs=libtamoe_rt.so
#map = affine_map<(d0, d1) -> (d0, d1)>
#map3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
module attributes {tamoe.topology = #tamoe.topology<"dgx1-v100-2x4", [<"node", fanout = 4, up_bandwidth = 1.500000e+02, down_bandwidth = 1.500000e+02, latency = 3.000000e+00, per_message = 3.000000e+00, uplink = per_rank>, <"cluster", fanout = 2, up_bandwidth = 2.500000e+01, down_bandwidth = 2.500000e+01, latency = 7.000000e+00, per_message = 7.000000e+00, uplink = shared>], "a DGX-1 (dgx1-v100) scaled to 2 nodes of 4 GPUs: the inter-node link shared by 4 GPUs">} {
  shard.grid @ep(shape = 2x4)

  // The student on one rank's batch: the task loss, the layer's
  // load-balancing loss and the rows this rank's experts received.
  func.func @model(%x: tensor<64x16xf32>, %y: tensor<64x16xf32>, %w_in: tensor<16x32xf32>, %router: tensor<32x16xf32>, %w1: tensor<2x32x128xf32>, %w2: tensor<2x128x32xf32>, %w_out: tensor<32x16xf32>) -> (tensor<f32>, tensor<f32>, tensor<8x2xi32>) {
    %zero = arith.constant 0.0 : f32
    %c0 = arith.constant 0 : index
    %e_h = tensor.empty() : tensor<64x32xf32>
    %z_h = linalg.fill ins(%zero : f32) outs(%e_h : tensor<64x32xf32>) -> tensor<64x32xf32>
    %h = linalg.matmul ins(%x, %w_in : tensor<64x16xf32>, tensor<16x32xf32>) outs(%z_h : tensor<64x32xf32>) -> tensor<64x32xf32>
    %e_l = tensor.empty() : tensor<64x16xf32>
    %z_l = linalg.fill ins(%zero : f32) outs(%e_l : tensor<64x16xf32>) -> tensor<64x16xf32>
    %logits = linalg.matmul ins(%h, %router : tensor<64x32xf32>, tensor<32x16xf32>) outs(%z_l : tensor<64x16xf32>) -> tensor<64x16xf32>
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<64x16xf32> -> tensor<64x2xi32>, tensor<64x2xf32>, tensor<64x16xf32>
    %rows, %counts, %positions, %dropped = tamoe.dispatch %h, %ids : tensor<64x32xf32>, tensor<64x2xi32> -> tensor<128x32xf32>, tensor<16xi32>, tensor<64x2xi32>, tensor<i64>
    %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<128x32xf32>, tensor<8x2xi32> -> tensor<?x32xf32>
    %a = tamoe.grouped_matmul %recv, %recv_counts, %w1 : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x128xf32> -> tensor<?x128xf32>
    %n = tensor.dim %a, %c0 : tensor<?x128xf32>
    %e_a = tensor.empty(%n) : tensor<?x128xf32>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%a : tensor<?x128xf32>) outs(%e_a : tensor<?x128xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = arith.maximumf %in, %zero : f32
      linalg.yield %m : f32
    } -> tensor<?x128xf32>
    %b = tamoe.grouped_matmul %relu, %recv_counts, %w2 : tensor<?x128xf32>, tensor<8x2xi32>, tensor<2x128x32xf32> -> tensor<?x32xf32>
    %back, %back_counts = tamoe.all_to_all %b, %recv_counts on @ep : tensor<?x32xf32>, tensor<8x2xi32> -> tensor<128x32xf32>
    %moe = tamoe.combine %back, %positions, %weights : tensor<128x32xf32>, tensor<64x2xi32>, tensor<64x2xf32> -> tensor<64x32xf32>
    %res = linalg.add ins(%h, %moe : tensor<64x32xf32>, tensor<64x32xf32>) outs(%e_h : tensor<64x32xf32>) -> tensor<64x32xf32>
    %pred = linalg.matmul ins(%res, %w_out : tensor<64x32xf32>, tensor<32x16xf32>) outs(%z_l : tensor<64x16xf32>) -> tensor<64x16xf32>
    // Mean squared error over the batch.
    %diff = linalg.sub ins(%pred, %y : tensor<64x16xf32>, tensor<64x16xf32>) outs(%e_l : tensor<64x16xf32>) -> tensor<64x16xf32>
    %sq = linalg.mul ins(%diff, %diff : tensor<64x16xf32>, tensor<64x16xf32>) outs(%e_l : tensor<64x16xf32>) -> tensor<64x16xf32>
    %e_s = tensor.empty() : tensor<f32>
    %z_s = linalg.fill ins(%zero : f32) outs(%e_s : tensor<f32>) -> tensor<f32>
    %sum = linalg.reduce ins(%sq : tensor<64x16xf32>) outs(%z_s : tensor<f32>) dimensions = [0, 1]
      (%in: f32, %acc: f32) {
        %s = arith.addf %in, %acc : f32
        linalg.yield %s : f32
      }
    %inv = arith.constant dense<9.765625e-04> : tensor<f32>
    %task = linalg.mul ins(%sum, %inv : tensor<f32>, tensor<f32>) outs(%e_s : tensor<f32>) -> tensor<f32>
    %aux = tamoe.aux_loss switch %probs, %ids : tensor<64x16xf32>, tensor<64x2xi32> -> tensor<f32>
    return %task, %aux, %recv_counts : tensor<f32>, tensor<f32>, tensor<8x2xi32>
  }

  // The teacher: 8 experts, top-1, all on this rank (its dispatch is not
  // exchanged, so the passes leave it alone).
  func.func @teacher(%x: tensor<64x16xf32>, %router: tensor<16x8xf32>, %w1: tensor<8x16x32xf32>, %w2: tensor<8x32x16xf32>) -> tensor<64x16xf32> {
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<64x8xf32>
    %z = linalg.fill ins(%zero : f32) outs(%e : tensor<64x8xf32>) -> tensor<64x8xf32>
    %logits = linalg.matmul ins(%x, %router : tensor<64x16xf32>, tensor<16x8xf32>) outs(%z : tensor<64x8xf32>) -> tensor<64x8xf32>
    %ids, %weights, %probs = tamoe.gate %logits top 1 softmax renormalize : tensor<64x8xf32> -> tensor<64x1xi32>, tensor<64x1xf32>, tensor<64x8xf32>
    %rows, %counts, %positions, %dropped = tamoe.dispatch %x, %ids : tensor<64x16xf32>, tensor<64x1xi32> -> tensor<64x16xf32>, tensor<8xi32>, tensor<64x1xi32>, tensor<i64>
    %a = tamoe.grouped_matmul %rows, %counts, %w1 : tensor<64x16xf32>, tensor<8xi32>, tensor<8x16x32xf32> -> tensor<64x32xf32>
    %e_a = tensor.empty() : tensor<64x32xf32>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%a : tensor<64x32xf32>) outs(%e_a : tensor<64x32xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = arith.maximumf %in, %zero : f32
      linalg.yield %m : f32
    } -> tensor<64x32xf32>
    %b = tamoe.grouped_matmul %relu, %counts, %w2 : tensor<64x32xf32>, tensor<8xi32>, tensor<8x32x16xf32> -> tensor<64x16xf32>
    %y = tamoe.combine %b, %positions, %weights : tensor<64x16xf32>, tensor<64x1xi32>, tensor<64x1xf32> -> tensor<64x16xf32>
    return %y : tensor<64x16xf32>
  }

  func.func private @tamoeRandomF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeAppendF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeAppendI32(memref<*xi32>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeAppendTraffic(i64)

  func.func @main() {
    %rank_index = shard.process_linear_index on @ep : index
    %rank = arith.index_cast %rank_index : index to i64
    %zero = arith.constant 0.0 : f32
    // Seeds: the replicated weights and the router start equal on every
    // rank, the experts differ per rank (each is its own shard), the
    // teacher is the same everywhere.
    %c11 = arith.constant 11 : i64
    %c12 = arith.constant 12 : i64
    %c13 = arith.constant 1300 : i64
    %c14 = arith.constant 1400 : i64
    %c15 = arith.constant 15 : i64
    %c21 = arith.constant 21 : i64
    %c22 = arith.constant 22 : i64
    %c23 = arith.constant 23 : i64
    %s13 = arith.addi %c13, %rank : i64
    %s14 = arith.addi %c14, %rank : i64
    %w_in_m = memref.alloc() : memref<16x32xf32>
    %w_in_u = memref.cast %w_in_m : memref<16x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%w_in_u, %c11) : (memref<*xf32>, i64) -> ()
    %w_in_raw = bufferization.to_tensor %w_in_m restrict : memref<16x32xf32> to tensor<16x32xf32>
    %w_in_scale = arith.constant 0.4 : f32
    %w_in_e = tensor.empty() : tensor<16x32xf32>
    %w_in = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%w_in_raw : tensor<16x32xf32>) outs(%w_in_e : tensor<16x32xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %w_in_scale : f32
      linalg.yield %v : f32
    } -> tensor<16x32xf32>
    %router_m = memref.alloc() : memref<32x16xf32>
    %router_u = memref.cast %router_m : memref<32x16xf32> to memref<*xf32>
    call @tamoeRandomF32(%router_u, %c12) : (memref<*xf32>, i64) -> ()
    %router_raw = bufferization.to_tensor %router_m restrict : memref<32x16xf32> to tensor<32x16xf32>
    %router_scale = arith.constant 0.1 : f32
    %router_e = tensor.empty() : tensor<32x16xf32>
    %router = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%router_raw : tensor<32x16xf32>) outs(%router_e : tensor<32x16xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %router_scale : f32
      linalg.yield %v : f32
    } -> tensor<32x16xf32>
    %w1_m = memref.alloc() : memref<2x32x128xf32>
    %w1_u = memref.cast %w1_m : memref<2x32x128xf32> to memref<*xf32>
    call @tamoeRandomF32(%w1_u, %s13) : (memref<*xf32>, i64) -> ()
    %w1_raw = bufferization.to_tensor %w1_m restrict : memref<2x32x128xf32> to tensor<2x32x128xf32>
    %w1_scale = arith.constant 0.3 : f32
    %w1_e = tensor.empty() : tensor<2x32x128xf32>
    %w1 = linalg.generic {indexing_maps = [#map3, #map3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%w1_raw : tensor<2x32x128xf32>) outs(%w1_e : tensor<2x32x128xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %w1_scale : f32
      linalg.yield %v : f32
    } -> tensor<2x32x128xf32>
    %w2_m = memref.alloc() : memref<2x128x32xf32>
    %w2_u = memref.cast %w2_m : memref<2x128x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%w2_u, %s14) : (memref<*xf32>, i64) -> ()
    %w2_raw = bufferization.to_tensor %w2_m restrict : memref<2x128x32xf32> to tensor<2x128x32xf32>
    %w2_scale = arith.constant 0.2 : f32
    %w2_e = tensor.empty() : tensor<2x128x32xf32>
    %w2 = linalg.generic {indexing_maps = [#map3, #map3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%w2_raw : tensor<2x128x32xf32>) outs(%w2_e : tensor<2x128x32xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %w2_scale : f32
      linalg.yield %v : f32
    } -> tensor<2x128x32xf32>
    %w_out_m = memref.alloc() : memref<32x16xf32>
    %w_out_u = memref.cast %w_out_m : memref<32x16xf32> to memref<*xf32>
    call @tamoeRandomF32(%w_out_u, %c15) : (memref<*xf32>, i64) -> ()
    %w_out_raw = bufferization.to_tensor %w_out_m restrict : memref<32x16xf32> to tensor<32x16xf32>
    %w_out_scale = arith.constant 0.3 : f32
    %w_out_e = tensor.empty() : tensor<32x16xf32>
    %w_out = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%w_out_raw : tensor<32x16xf32>) outs(%w_out_e : tensor<32x16xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %w_out_scale : f32
      linalg.yield %v : f32
    } -> tensor<32x16xf32>
    %t_router_m = memref.alloc() : memref<16x8xf32>
    %t_router_u = memref.cast %t_router_m : memref<16x8xf32> to memref<*xf32>
    call @tamoeRandomF32(%t_router_u, %c21) : (memref<*xf32>, i64) -> ()
    %t_router_raw = bufferization.to_tensor %t_router_m restrict : memref<16x8xf32> to tensor<16x8xf32>
    %t_router_scale = arith.constant 1.0 : f32
    %t_router_e = tensor.empty() : tensor<16x8xf32>
    %t_router = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%t_router_raw : tensor<16x8xf32>) outs(%t_router_e : tensor<16x8xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %t_router_scale : f32
      linalg.yield %v : f32
    } -> tensor<16x8xf32>
    %t_w1_m = memref.alloc() : memref<8x16x32xf32>
    %t_w1_u = memref.cast %t_w1_m : memref<8x16x32xf32> to memref<*xf32>
    call @tamoeRandomF32(%t_w1_u, %c22) : (memref<*xf32>, i64) -> ()
    %t_w1_raw = bufferization.to_tensor %t_w1_m restrict : memref<8x16x32xf32> to tensor<8x16x32xf32>
    %t_w1_scale = arith.constant 0.5 : f32
    %t_w1_e = tensor.empty() : tensor<8x16x32xf32>
    %t_w1 = linalg.generic {indexing_maps = [#map3, #map3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%t_w1_raw : tensor<8x16x32xf32>) outs(%t_w1_e : tensor<8x16x32xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %t_w1_scale : f32
      linalg.yield %v : f32
    } -> tensor<8x16x32xf32>
    %t_w2_m = memref.alloc() : memref<8x32x16xf32>
    %t_w2_u = memref.cast %t_w2_m : memref<8x32x16xf32> to memref<*xf32>
    call @tamoeRandomF32(%t_w2_u, %c23) : (memref<*xf32>, i64) -> ()
    %t_w2_raw = bufferization.to_tensor %t_w2_m restrict : memref<8x32x16xf32> to tensor<8x32x16xf32>
    %t_w2_scale = arith.constant 0.3 : f32
    %t_w2_e = tensor.empty() : tensor<8x32x16xf32>
    %t_w2 = linalg.generic {indexing_maps = [#map3, #map3], iterator_types = ["parallel", "parallel", "parallel"]} ins(%t_w2_raw : tensor<8x32x16xf32>) outs(%t_w2_e : tensor<8x32x16xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.mulf %in, %t_w2_scale : f32
      linalg.yield %v : f32
    } -> tensor<8x32x16xf32>
    // Adam's moments start at zero.
    %m_w_in_e = tensor.empty() : tensor<16x32xf32>
    %m_w_in = linalg.fill ins(%zero : f32) outs(%m_w_in_e : tensor<16x32xf32>) -> tensor<16x32xf32>
    %v_w_in_e = tensor.empty() : tensor<16x32xf32>
    %v_w_in = linalg.fill ins(%zero : f32) outs(%v_w_in_e : tensor<16x32xf32>) -> tensor<16x32xf32>
    %m_router_e = tensor.empty() : tensor<32x16xf32>
    %m_router = linalg.fill ins(%zero : f32) outs(%m_router_e : tensor<32x16xf32>) -> tensor<32x16xf32>
    %v_router_e = tensor.empty() : tensor<32x16xf32>
    %v_router = linalg.fill ins(%zero : f32) outs(%v_router_e : tensor<32x16xf32>) -> tensor<32x16xf32>
    %m_w1_e = tensor.empty() : tensor<2x32x128xf32>
    %m_w1 = linalg.fill ins(%zero : f32) outs(%m_w1_e : tensor<2x32x128xf32>) -> tensor<2x32x128xf32>
    %v_w1_e = tensor.empty() : tensor<2x32x128xf32>
    %v_w1 = linalg.fill ins(%zero : f32) outs(%v_w1_e : tensor<2x32x128xf32>) -> tensor<2x32x128xf32>
    %m_w2_e = tensor.empty() : tensor<2x128x32xf32>
    %m_w2 = linalg.fill ins(%zero : f32) outs(%m_w2_e : tensor<2x128x32xf32>) -> tensor<2x128x32xf32>
    %v_w2_e = tensor.empty() : tensor<2x128x32xf32>
    %v_w2 = linalg.fill ins(%zero : f32) outs(%v_w2_e : tensor<2x128x32xf32>) -> tensor<2x128x32xf32>
    %m_w_out_e = tensor.empty() : tensor<32x16xf32>
    %m_w_out = linalg.fill ins(%zero : f32) outs(%m_w_out_e : tensor<32x16xf32>) -> tensor<32x16xf32>
    %v_w_out_e = tensor.empty() : tensor<32x16xf32>
    %v_w_out = linalg.fill ins(%zero : f32) outs(%v_w_out_e : tensor<32x16xf32>) -> tensor<32x16xf32>
    // The task loss's gradient is 1; the auxiliary loss's is its weight in
    // the training loss (bench/training.sh sets it per run).
    %d_task = arith.constant dense<1.0> : tensor<f32>
    %d_aux = arith.constant dense<0.02> : tensor<f32>
    %lr = arith.constant 3.0e-03 : f32
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %steps = arith.constant 2000 : index
    %c0_i64 = arith.constant 0 : i64
    %c1_i64 = arith.constant 1 : i64
    %c2_i64 = arith.constant 2 : i64
    %c3_i64 = arith.constant 3 : i64
    %c8_i64 = arith.constant 8 : i64
    %data_seed = arith.constant 100000 : i64
    %final:15 = scf.for %step = %c0 to %steps step %c1 iter_args(%p_w_in = %w_in, %p_router = %router, %p_w1 = %w1, %p_w2 = %w2, %p_w_out = %w_out, %p_m_w_in = %m_w_in, %p_m_router = %m_router, %p_m_w1 = %m_w1, %p_m_w2 = %m_w2, %p_m_w_out = %m_w_out, %p_v_w_in = %v_w_in, %p_v_router = %v_router, %p_v_w1 = %v_w1, %p_v_w2 = %v_w2, %p_v_w_out = %v_w_out) -> (tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>) {
      // A fresh batch for this step and rank; the teacher gives its targets.
      %step_i64 = arith.index_cast %step : index to i64
      %batch = arith.muli %step_i64, %c8_i64 : i64
      %batch_rank = arith.addi %batch, %rank : i64
      %seed = arith.addi %data_seed, %batch_rank : i64
      %x_m = memref.alloc() : memref<64x16xf32>
      %x_u = memref.cast %x_m : memref<64x16xf32> to memref<*xf32>
      func.call @tamoeRandomF32(%x_u, %seed) : (memref<*xf32>, i64) -> ()
      %x = bufferization.to_tensor %x_m restrict : memref<64x16xf32> to tensor<64x16xf32>
      %y = func.call @teacher(%x, %t_router, %t_w1, %t_w2) : (tensor<64x16xf32>, tensor<16x8xf32>, tensor<8x16x32xf32>, tensor<8x32x16xf32>) -> tensor<64x16xf32>
      %task, %aux, %counts, %d_x, %d_y, %d_w_in, %d_router, %d_w1, %d_w2, %d_w_out = tamoe.vjp @model(%x, %y, %p_w_in, %p_router, %p_w1, %p_w2, %p_w_out) cotangents(%d_task, %d_aux) : (tensor<64x16xf32>, tensor<64x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>), (tensor<f32>, tensor<f32>) -> (tensor<f32>, tensor<f32>, tensor<8x2xi32>), (tensor<64x16xf32>, tensor<64x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>)
      // Replicated weights: the ranks' gradients averaged.
      %g_w_in = tamoe.all_reduce %d_w_in on @ep average : tensor<16x32xf32>
      %g_w_out = tamoe.all_reduce %d_w_out on @ep average : tensor<32x16xf32>
      %t = arith.addi %step_i64, %c1_i64 : i64
      %n_w_in, %nm_w_in, %nv_w_in = tamoe.adam %p_w_in, %g_w_in, %p_m_w_in, %p_v_w_in step %t lr %lr : tensor<16x32xf32>
      %n_router, %nm_router, %nv_router = tamoe.adam %p_router, %d_router, %p_m_router, %p_v_router step %t lr %lr : tensor<32x16xf32>
      %n_w1, %nm_w1, %nv_w1 = tamoe.adam %p_w1, %d_w1, %p_m_w1, %p_v_w1 step %t lr %lr : tensor<2x32x128xf32>
      %n_w2, %nm_w2, %nv_w2 = tamoe.adam %p_w2, %d_w2, %p_m_w2, %p_v_w2 step %t lr %lr : tensor<2x128x32xf32>
      %n_w_out, %nm_w_out, %nv_w_out = tamoe.adam %p_w_out, %g_w_out, %p_m_w_out, %p_v_w_out step %t lr %lr : tensor<32x16xf32>
      %task_b = bufferization.to_buffer %task read_only : tensor<f32> to memref<f32>
      %task_u = memref.cast %task_b : memref<f32> to memref<*xf32>
      func.call @tamoeAppendF32(%task_u, %c0_i64) : (memref<*xf32>, i64) -> ()
      %aux_b = bufferization.to_buffer %aux read_only : tensor<f32> to memref<f32>
      %aux_u = memref.cast %aux_b : memref<f32> to memref<*xf32>
      func.call @tamoeAppendF32(%aux_u, %c1_i64) : (memref<*xf32>, i64) -> ()
      %counts_b = bufferization.to_buffer %counts read_only : tensor<8x2xi32> to memref<8x2xi32>
      %counts_u = memref.cast %counts_b : memref<8x2xi32> to memref<*xi32>
      func.call @tamoeAppendI32(%counts_u, %c2_i64) : (memref<*xi32>, i64) -> ()
      func.call @tamoeAppendTraffic(%c3_i64) : (i64) -> ()
      scf.yield %n_w_in, %n_router, %n_w1, %n_w2, %n_w_out, %nm_w_in, %nm_router, %nm_w1, %nm_w2, %nm_w_out, %nv_w_in, %nv_router, %nv_w1, %nv_w2, %nv_w_out : tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>, tensor<2x32x128xf32>, tensor<2x128x32xf32>, tensor<32x16xf32>
    }
    return
  }
}
