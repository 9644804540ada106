// RUN: tamoe-opt %s -split-input-file --convert-tamoe-to-runtime --canonicalize -verify-diagnostics | FileCheck %s
// RUN: not tamoe-opt %s --tamoe-to-llvm="x=1" 2>&1 | FileCheck %s --check-prefix=OPTIONS
// OPTIONS: error: tamoe-to-llvm: cannot read the options 'x=1': <Pass-Options-Parser>: no such option x

// Every op becomes its runtime call on the buffers' pointers; results are
// fresh buffers handed back as tensors. The all-to-all sizes its receive
// buffer with the counts exchange first.
module {
  // CHECK-NOT: shard.grid
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @layer
  func.func @layer(%logits: tensor<16x8xf32>, %tokens: tensor<16x64xf32>) -> (tensor<?x64xf32>, tensor<8xi32>, tensor<f32>) {
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
    // CHECK-DAG: %[[C3:.*]] = arith.constant 3 : index
    // CHECK-DAG: %[[C24:.*]] = arith.constant 24 : index
    // CHECK-DAG: %[[ROW:.*]] = arith.constant 256 : index
    // CHECK-DAG: %[[SOFTMAX:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[ONE:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[NULL:.*]] = llvm.mlir.zero : !llvm.ptr
    // The slot for an exchange's total is in the entry block.
    // CHECK-DAG: %[[TOTAL:.*]] = memref.alloca() : memref<index>
    // host_loops = 1: the rest of the program runs as host loops. Every
    // function asks first (before the slot above), so that a cuda backend
    // is refused before any allocation (program-errors.test); then each op.
    // The second 1 is the interface version, TAMOE_RT_ABI_VERSION.
    // CHECK: %[[CTX:.*]] = call @tamoe_rt_program_enter(%[[ONE]], %[[ONE]])
    // CHECK: %[[IDS:.*]] = memref.alloc() : memref<16x2xi32>
    // CHECK: %[[STATUS:.*]] = call @tamoe_rt_gate(%[[CTX]], %{{.*}}, %[[C16]], %[[C8]], %[[C2]], %[[SOFTMAX]], %[[ONE]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}})
    // CHECK: call @tamoe_rt_program_check(%[[STATUS]])
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    // Capacity 3 per expert, dropped by position, no weights (null).
    // CHECK: call @tamoe_rt_dispatch(%{{.*}}, %{{.*}}, %[[C16]], %[[ROW]], %{{.*}}, %[[C2]], %[[C8]], %[[NULL]], %[[C3]], %[[SOFTMAX]], %{{.*}}, %[[C24]], %{{.*}}, %{{.*}}, %{{.*}})
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids capacity 3 : tensor<16x64xf32>, tensor<16x2xi32> -> tensor<24x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    // First the world must be the grid (2x4, host constant, 2 axes, whole
    // grid: no node split), then world group (0), 8 peers, no split; the
    // total sizes the buffer.
    // CHECK: %[[GRID:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<2xi64> to memref<2xi64>
    // CHECK: memref.extract_aligned_pointer_as_index %[[GRID]]
    // CHECK: call @tamoe_rt_program_check_grid(%{{.*}}, %[[C2]], %[[SOFTMAX]]) : (!llvm.ptr, index, i32) -> ()
    // CHECK: call @tamoe_rt_all_to_all_counts(%{{.*}}, %{{.*}}, %{{.*}}, %[[C8]], %{{.*}}, %{{.*}}, %{{.*}})
    // CHECK: %[[ROWS:.*]] = memref.load %[[TOTAL]][] : memref<index>
    // CHECK: %[[RECV:.*]] = memref.alloc(%[[ROWS]]) : memref<?x64xf32>
    // CHECK: call @tamoe_rt_all_to_all(%{{.*}}, %{{.*}}, %{{.*}}, %[[C24]], %[[ROW]], %{{.*}}, %[[C8]], %{{.*}}, %{{.*}}, %[[ROWS]], %{{.*}})
    // CHECK: bufferization.to_tensor %[[RECV]] restrict writable
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<24x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    // No positions (null): every assignment counts.
    // CHECK: call @tamoe_rt_aux_loss(%{{.*}}, %{{.*}}, %{{.*}}, %[[NULL]], %[[C16]], %[[C8]], %[[C2]], %[[NULL]], %{{.*}})
    %loss = tamoe.aux_loss switch %probs, %ids : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    return %recv, %recv_counts, %loss : tensor<?x64xf32>, tensor<8xi32>, tensor<f32>
  }
  // CHECK-DAG: func.func private @tamoe_rt_gate(!llvm.ptr, !llvm.ptr, index, index, index, i32, i32, index, index, !llvm.ptr, !llvm.ptr, !llvm.ptr) -> i32
  // CHECK-DAG: func.func private @tamoe_rt_all_to_all(!llvm.ptr, i32, !llvm.ptr, index, index, !llvm.ptr, index, index, !llvm.ptr, index, !llvm.ptr) -> i32
}

// -----

// Stages of the hierarchical rewrite map to the runtime's node (1) and peers
// (2) groups; regroup, grouped matmul and this rank's grid index too. Both
// stages' counts follow from %counts, so one round of them sizes both
// receive buffers: the node stage's exchange (step 0), the regroup (1), the
// peers stage's (2), as tamoe_rt_counts_step_t words.
module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @stages
  func.func @stages(%rows: tensor<32x64xf32>, %counts: tensor<4x2x2xi32>, %w: tensor<2x64x16xf32>) -> (tensor<?x16xf32>, index, index) {
    // CHECK-DAG: %[[WORLD:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[NODE:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[PEERS:.*]] = arith.constant 2 : i32
    // CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
    // CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
    // CHECK-DAG: %[[C3:.*]] = arith.constant 3 : index
    // CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[STEPS:.*]] = arith.constant dense<{{\[}}[2, 0, 1, 4, 0], [1, 1, 4, 2, 2], [2, 2, 2, 2, 0]]> : tensor<3x5xi64>
    // CHECK: %[[TOTALS:.*]] = memref.alloca() : memref<3xindex>
    // The node stage needs the grid's last axis to be a node (1).
    // CHECK: call @tamoe_rt_program_check_grid(%{{.*}}, %[[C2]], %[[NODE]])
    // CHECK: bufferization.to_buffer %[[STEPS]]
    // CHECK: call @tamoe_rt_all_to_all_totals(%{{.*}}, %[[WORLD]], %{{.*}}, %[[C16]], %{{.*}}, %[[C3]], %{{.*}})
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: %[[T0:.*]] = memref.load %[[TOTALS]][%[[C0]]]
    // CHECK: memref.alloc(%[[T0]])
    // CHECK: call @tamoe_rt_all_to_all(%{{.*}}, %[[NODE]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C4]], %[[C4]],
    %s1, %c1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>
    // CHECK: call @tamoe_rt_regroup(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C4]], %[[C2]], %[[C2]],
    %r, %rc = tamoe.regroup %s1, %c1 : tensor<?x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>, tensor<2x4x2xi32>
    // CHECK: %[[T2:.*]] = memref.load %[[TOTALS]][%[[C2]]]
    // CHECK: memref.alloc(%[[T2]])
    // CHECK: call @tamoe_rt_all_to_all(%{{.*}}, %[[PEERS]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C2]],
    %s2, %c2 = tamoe.all_to_all %r, %rc on @ep axes = [0] level "cluster" : tensor<?x64xf32>, tensor<2x4x2xi32> -> tensor<?x64xf32>
    // 16 chunks of 2 local experts.
    // CHECK: call @tamoe_rt_grouped_matmul(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C2]], %{{.*}}, %{{.*}}, %{{.*}})
    %h = tamoe.grouped_matmul %s2, %c2, %w : tensor<?x64xf32>, tensor<2x4x2xi32>, tensor<2x64x16xf32> -> tensor<?x16xf32>
    // CHECK: call @tamoe_rt_program_check_grid
    // CHECK: %[[RANK:.*]] = call @tamoe_rt_program_rank() : () -> index
    // CHECK: affine.delinearize_index %[[RANK]] into (2, 4)
    %i:2 = shard.process_multi_index on @ep : index, index
    return %h, %i#0, %i#1 : tensor<?x16xf32>, index, index
  }
}

// -----

// Rows may be bf16 or f16: each row op passes its tamoe_rt_dtype_t (bf16 1,
// f16 2) first; routing (the combine weights, the gate's outputs) stays f32.
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @half_rows
  func.func @half_rows(%rows: tensor<32x64xbf16>, %counts: tensor<8x2xi32>, %w: tensor<2x64x16xbf16>, %back: tensor<32x16xf16>, %positions: tensor<16x2xi32>, %weights: tensor<16x2xf32>, %d: tensor<16x16xf16>) -> (tensor<?x64xbf16>, tensor<32x16xbf16>, tensor<16x16xf16>, tensor<32x16xf16>, tensor<16x2xf32>) {
    // CHECK-DAG: %[[BF16:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[F16:.*]] = arith.constant 2 : i32
    // Rows are bytes to an exchange: 64 bf16 are 128 of them.
    // CHECK-DAG: %[[ROW:.*]] = arith.constant 128 : index
    // CHECK: call @tamoe_rt_all_to_all(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[ROW]],
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xbf16>, tensor<8x2xi32> -> tensor<?x64xbf16>
    // CHECK: call @tamoe_rt_grouped_matmul(%{{.*}}, %[[BF16]],
    %h = tamoe.grouped_matmul %rows, %counts, %w : tensor<32x64xbf16>, tensor<8x2xi32>, tensor<2x64x16xbf16> -> tensor<32x16xbf16>
    // CHECK: call @tamoe_rt_combine(%{{.*}}, %[[F16]],
    %out = tamoe.combine %back, %positions, %weights : tensor<32x16xf16>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x16xf16>
    // CHECK: call @tamoe_rt_combine_grad(%{{.*}}, %[[F16]],
    %g:2 = tamoe.combine_grad %d, %back, %positions weights %weights : tensor<16x16xf16>, tensor<32x16xf16>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<32x16xf16>, tensor<16x2xf32>
    return %recv, %h, %out, %g#0, %g#1 : tensor<?x64xbf16>, tensor<32x16xbf16>, tensor<16x16xf16>, tensor<32x16xf16>, tensor<16x2xf32>
  }
}

// -----

module {
  func.func @f64_rows(%rows: tensor<32x64xf64>, %counts: tensor<8xi32>, %w: tensor<8x64x16xf64>) {
    // expected-error @+1 {{'tamoe.grouped_matmul' op cannot be lowered to the runtime: rows are f32, bf16 or f16, got 'tensor<32x64xf64>'}}
    %h = tamoe.grouped_matmul %rows, %counts, %w : tensor<32x64xf64>, tensor<8xi32>, tensor<8x64x16xf64> -> tensor<32x16xf64>
    return
  }
}

// -----

module {
  func.func @bf16(%logits: tensor<16x8xbf16>) {
    // expected-error @+1 {{'tamoe.gate' op cannot be lowered to the runtime: routing (logits, probabilities, weights, losses) is f32, got 'tensor<16x8xbf16>'}}
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax : tensor<16x8xbf16> -> tensor<16x2xi32>, tensor<16x2xbf16>, tensor<16x8xbf16>
    return
  }
}

// -----

module {
  func.func @i64_ids(%tokens: tensor<16x64xf32>, %ids: tensor<16x2xi64>) {
    // expected-error @+1 {{'tamoe.dispatch' op cannot be lowered to the runtime: ids, positions and counts must be i32, got 'tensor<16x2xi64>'}}
    %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x64xf32>, tensor<16x2xi64> -> tensor<32x64xf32>, tensor<8xi64>, tensor<16x2xi64>, tensor<i64>
    return
  }
}

// -----

module {
  shard.grid @g(shape = 2x2x2)
  func.func @middle_axis(%rows: tensor<32x64xf32>, %counts: tensor<2xi32>) {
    // expected-error @+1 {{'tamoe.all_to_all' op cannot be lowered to the runtime: its groups are the whole grid, its last axis (a node) or the axes before it}}
    %0, %1 = tamoe.all_to_all %rows, %counts on @g axes = [1] : tensor<32x64xf32>, tensor<2xi32> -> tensor<?x64xf32>
    return
  }
}

// -----

module {
  shard.grid @dyn(shape = 2x?)
  func.func @dynamic_grid() -> index {
    // expected-error @+1 {{'shard.process_multi_index' op cannot be lowered to the runtime: it needs a grid of static shape}}
    %i:2 = shard.process_multi_index on @dyn : index, index
    return %i#1 : index
  }
}

// -----

module {
  func.func @dynamic_hidden(%rows: tensor<?x?xf32>, %positions: tensor<16x2xi32>, %weights: tensor<16x2xf32>) {
    // expected-error @+1 {{'tamoe.combine' op cannot be lowered to the runtime: only the first dimension (the rows) may be dynamic, got 'tensor<?x?xf32>'}}
    %0 = tamoe.combine %rows, %positions, %weights : tensor<?x?xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<16x?xf32>
    return
  }
}

// -----

module {
  shard.grid @ep(shape = 8)
  func.func @bits(%rows: tensor<32x64xi1>, %counts: tensor<8xi32>) {
    // expected-error @+1 {{'tamoe.all_to_all' op cannot be lowered to the runtime: its elements must be whole bytes, got 'tensor<32x64xi1>'}}
    %0, %1 = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xi1>, tensor<8xi32> -> tensor<?x64xi1>
    return
  }
}

// -----

// The gradient ops are runtime calls too; an unread result of
// grouped_matmul_grad (here the rows' gradient) is passed as null and never
// allocated.
module {
  // CHECK-LABEL: func.func @gradients
  func.func @gradients(%probs: tensor<16x8xf32>, %ids: tensor<16x2xi32>, %w: tensor<16x2xf32>, %rows: tensor<32x64xf32>, %d_out: tensor<16x64xf32>, %counts: tensor<8x2xi32>, %weights: tensor<2x64x32xf32>, %d_h: tensor<32x32xf32>, %d_loss: tensor<f32>, %routes: tensor<32x2xi32>, %node_counts: tensor<2xi32>) -> (tensor<16x8xf32>, tensor<32x64xf32>, tensor<16x2xf32>, tensor<2x64x32xf32>, tensor<16x8xf32>, tensor<16x64xf32>, tensor<32x64xf32>) {
    // CHECK-DAG: %[[NULL:.*]] = llvm.mlir.zero : !llvm.ptr
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
    // Sigmoid (1), not renormalised, no weights' gradient.
    // CHECK: call @tamoe_rt_gate_grad(%{{.*}}, %{{.*}}, %{{.*}}, %[[C16]], %[[C8]], %[[C2]], %{{.*}}, %{{.*}}, %[[NULL]], %{{.*}}, %{{.*}})
    %0 = tamoe.gate_grad %probs, %ids sigmoid d_probs %probs : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x8xf32> -> tensor<16x8xf32>
    // CHECK: call @tamoe_rt_combine_grad(
    %1:2 = tamoe.combine_grad %d_out, %rows, %ids weights %w : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32> -> tensor<32x64xf32>, tensor<16x2xf32>
    // CHECK: call @tamoe_rt_grouped_matmul_grad(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C2]], %{{.*}}, %{{.*}}, %{{.*}}, %[[NULL]], %{{.*}})
    %2:2 = tamoe.grouped_matmul_grad %rows, %counts, %weights, %d_h : tensor<32x64xf32>, tensor<8x2xi32>, tensor<2x64x32xf32>, tensor<32x32xf32> -> tensor<32x64xf32>, tensor<2x64x32xf32>
    // CHECK: call @tamoe_rt_aux_loss_grad(%{{.*}}, %{{.*}}, %[[NULL]], %[[C16]], %[[C8]], %[[C2]], %[[NULL]], %{{.*}}, %{{.*}})
    %3 = tamoe.aux_loss_grad switch %ids, %d_loss : tensor<16x2xi32>, tensor<f32> -> tensor<16x8xf32>
    // CHECK: call @tamoe_rt_dedup_pack_grad(
    %4 = tamoe.dedup_pack_grad %rows, %ids, %ids experts_per_node 4 nodes 2 : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<16x64xf32>
    // CHECK: call @tamoe_rt_dedup_expand_grad(
    %5 = tamoe.dedup_expand_grad %rows, %routes, %node_counts experts_per_rank 1 ranks_per_node 4 : tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32> -> tensor<32x64xf32>
    return %0, %1#0, %1#1, %2#1, %3, %4, %5 : tensor<16x8xf32>, tensor<32x64xf32>, tensor<16x2xf32>, tensor<2x64x32xf32>, tensor<16x8xf32>, tensor<16x64xf32>, tensor<32x64xf32>
  }
}

// -----

// The runtime fills (or reads) a regroup's two row buffers, and dedup_pack's
// and dedup_expand's unique rows and routes, up to one capacity: it gets the
// smaller, so that a static result of fewer rows than the other's capacity
// refuses rows that do not fit instead of being overrun.
module {
  // CHECK-LABEL: func.func @capacities
  func.func @capacities(%rows: tensor<?x64xf32>, %counts: tensor<2x2xi32>, %tokens: tensor<16x64xf32>, %ids: tensor<16x2xi32>, %unique: tensor<?x64xf32>, %routes: tensor<4x2xi32>, %nc: tensor<2xi32>) -> (tensor<8x64xf32>, tensor<3x2xi32>, tensor<?x64xf32>) {
    // CHECK-DAG: %[[C3:.*]] = arith.constant 3 : index
    // CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK: %[[ROWS:.*]] = tensor.dim %{{.*}}, %{{.*}} : tensor<?x64xf32>
    // CHECK: %[[REGROUP_CAP:.*]] = arith.minsi %[[ROWS]], %[[C8]] : index
    // CHECK: call @tamoe_rt_regroup(%{{.*}}, %{{.*}}, %[[REGROUP_CAP]],
    %r, %rc = tamoe.regroup %rows, %counts : tensor<?x64xf32>, tensor<2x2xi32> -> tensor<8x64xf32>, tensor<2x2xi32>
    // Unique rows for 32, routes for 3.
    // CHECK: call @tamoe_rt_dedup_pack(
    // CHECK-SAME: , %[[C3]], %{{[^,]*}}) :
    %u, %ro, %c = tamoe.dedup_pack %tokens, %ids, %ids experts_per_node 4 : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32> -> tensor<?x64xf32>, tensor<3x2xi32>, tensor<2xi32>
    // CHECK: %[[EXPAND_CAP:.*]] = arith.minsi %{{.*}}, %[[C4]] : index
    // CHECK: call @tamoe_rt_dedup_expand(%{{.*}}, %{{.*}}, %{{.*}}, %[[EXPAND_CAP]],
    %e, %ec = tamoe.dedup_expand %unique, %routes, %nc experts_per_rank 1 : tensor<?x64xf32>, tensor<4x2xi32>, tensor<2xi32> -> tensor<?x64xf32>, tensor<4x2x1xi32>
    return %r, %ro, %e : tensor<8x64xf32>, tensor<3x2xi32>, tensor<?x64xf32>
  }
}

// -----

// Reductions and optimizer steps update their operands' buffers in place
// (to_buffer without read_only, handed back as the results).
module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @training
  func.func @training(%p: tensor<64xf32>, %g: tensor<64xf32>, %m: tensor<64xf32>, %v: tensor<64xf32>, %lr: f32, %step: i64) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>) {
    // Node group (1), average.
    // CHECK: %[[G:.*]] = bufferization.to_buffer %{{.*}} : tensor<64xf32> to memref<64xf32>
    // CHECK: call @tamoe_rt_all_reduce(%{{.*}}, %[[ONE:.*]], %{{.*}}, %[[C64:.*]], %[[ONE]])
    // CHECK: bufferization.to_tensor %[[G]] restrict writable
    %r = tamoe.all_reduce %g on @ep axes = [1] average : tensor<64xf32>
    // CHECK: call @tamoe_rt_sgd(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C64]], %{{.*}}, %{{.*}}, %{{.*}})
    %s:2 = tamoe.sgd %p, %r, %m lr %lr momentum 0.9 : tensor<64xf32>
    // CHECK: call @tamoe_rt_adam(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[C64]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}})
    %a:3 = tamoe.adam %s#0, %r, %s#1, %v step %step lr %lr : tensor<64xf32>
    return %r, %s#0, %a#0, %a#1, %a#2 : tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>
  }
  // CHECK-DAG: func.func private @tamoe_rt_sgd(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, index, f32, f32, f32) -> i32
  // CHECK-DAG: func.func private @tamoe_rt_adam(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, index, i64, f32, f32, f32, f32, f32) -> i32
}

// -----

// The runtime's steps take one element count, the parameters': with
// dynamic sizes the program first checks that every operand has as many
// (tamoe_rt_program_check_extent, with the message's bytes, its length, the
// operand's count and the parameters'; static sizes are equal by the ops'
// types).
// CHECK-LABEL: func.func @dynamic_steps
// CHECK-SAME: (%[[P:.*]]: tensor<?x8xf32>, %[[G:.*]]: tensor<?x8xf32>, %[[M:.*]]: tensor<?x8xf32>, %[[V:.*]]: tensor<?x8xf32>
func.func @dynamic_steps(%p: tensor<?x8xf32>, %g: tensor<?x8xf32>, %m: tensor<?x8xf32>, %v: tensor<?x8xf32>, %lr: f32, %step: i64) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  // CHECK: %[[PR:.*]] = tensor.dim %[[P]], %{{.*}}
  // CHECK: %[[PN:.*]] = arith.muli %[[PR]], %{{.*}}
  // CHECK: %[[GR:.*]] = tensor.dim %[[G]], %{{.*}}
  // CHECK: %[[GN:.*]] = arith.muli %[[GR]], %{{.*}}
  // CHECK: %[[MSG:.*]] = bufferization.to_buffer %{{.*}} read_only : tensor<[[LEN:[0-9]+]]xi8>
  // CHECK: memref.extract_aligned_pointer_as_index %[[MSG]]
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %c[[LEN]], %[[GN]], %[[PN]])
  // CHECK: %[[VR:.*]] = tensor.dim %[[V]], %{{.*}}
  // CHECK: %[[VN:.*]] = arith.muli %[[VR]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[VN]], %[[PN]])
  // CHECK: call @tamoe_rt_sgd(
  %s:2 = tamoe.sgd %p, %g, %v lr %lr momentum 0.9 : tensor<?x8xf32>
  // grads, m and v.
  // CHECK-COUNT-3: call @tamoe_rt_program_check_extent(
  // CHECK: call @tamoe_rt_adam(
  %a:3 = tamoe.adam %p, %g, %m, %v step %step lr %lr : tensor<?x8xf32>
  return %s#0, %a#0 : tensor<?x8xf32>, tensor<?x8xf32>
}
// CHECK-DAG: func.func private @tamoe_rt_program_check_extent(!llvm.ptr, index, index, index)

// -----

// CHECK-LABEL: func.func @static_steps
// CHECK-NOT: tamoe_rt_program_check_extent
// CHECK: call @tamoe_rt_sgd(
func.func @static_steps(%p: tensor<4x8xf32>, %g: tensor<4x8xf32>, %v: tensor<4x8xf32>, %lr: f32) -> tensor<4x8xf32> {
  %s:2 = tamoe.sgd %p, %g, %v lr %lr momentum 0.9 : tensor<4x8xf32>
  return %s#0 : tensor<4x8xf32>
}

// -----

// A runtime call that reads several operands up to one extent taken from
// one of them gets only that extent: where the others' sizes are dynamic,
// the program first checks that they have as many rows (or experts), and
// ends with a message that names both operands rather than let the runtime
// read past the end of a smaller one.
// CHECK-LABEL: func.func @dynamic_rows
// CHECK-SAME: (%[[OUT:.*]]: tensor<8x16xf32>, %[[POS:.*]]: tensor<?x2xi32>, %[[W:.*]]: tensor<?x2xf32>, %[[TOKENS:.*]]: tensor<?x16xf32>, %[[IDS:.*]]: tensor<?x2xi32>, %[[PROBS:.*]]: tensor<?x4xf32>, %[[EW:.*]]: tensor<?xf32>, %[[ROWS:.*]]: tensor<?x16xf32>, %[[COUNTS:.*]]: tensor<2xi32>, %[[WEIGHTS:.*]]: tensor<?x16x8xf32>, %[[D:.*]]: tensor<?x16xf32>)
func.func @dynamic_rows(%outputs: tensor<8x16xf32>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf32>, %tokens: tensor<?x16xf32>, %ids: tensor<?x2xi32>, %probs: tensor<?x4xf32>, %ew: tensor<?xf32>, %rows: tensor<?x16xf32>, %counts: tensor<2xi32>, %weights: tensor<?x16x8xf32>, %d: tensor<?x16xf32>) -> (tensor<?x16xf32>, tensor<?x16xf32>, tensor<f32>, tensor<?x8xf32>, tensor<8x16xf32>) {
  // CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
  // CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
  // The weights against the positions.
  // CHECK: %[[TOKENS_0:.*]] = tensor.dim %[[POS]], %{{.*}}
  // CHECK: %[[W_ROWS:.*]] = tensor.dim %[[W]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[W_ROWS]], %[[TOKENS_0]])
  // CHECK: call @tamoe_rt_combine(
  %c = tamoe.combine %outputs, %pos, %w : tensor<8x16xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x16xf32>
  // The ids against the tokens.
  // CHECK: %[[TOKENS_1:.*]] = tensor.dim %[[TOKENS]], %{{.*}}
  // CHECK: %[[IDS_ROWS:.*]] = tensor.dim %[[IDS]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[IDS_ROWS]], %[[TOKENS_1]])
  // CHECK: call @tamoe_rt_dispatch(
  %r, %rc, %rp, %dr = tamoe.dispatch %tokens, %ids : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<4xi32>, tensor<?x2xi32>, tensor<i64>
  // The ids and positions against the probs, the weights against the
  // experts.
  // CHECK: %[[TOKENS_2:.*]] = tensor.dim %[[PROBS]], %{{.*}}
  // CHECK: %[[IDS_ROWS_2:.*]] = tensor.dim %[[IDS]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[IDS_ROWS_2]], %[[TOKENS_2]])
  // CHECK: %[[POS_ROWS:.*]] = tensor.dim %[[POS]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[POS_ROWS]], %[[TOKENS_2]])
  // CHECK: %[[EXPERTS:.*]] = tensor.dim %[[EW]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[EXPERTS]], %[[C4]])
  // CHECK: call @tamoe_rt_aux_loss(
  %l = tamoe.aux_loss topology %probs, %ids weights %ew dispatched %pos : tensor<?x4xf32>, tensor<?x2xi32>, tensor<?xf32>, tensor<?x2xi32> -> tensor<f32>
  // The weights' matrices against the experts of the counts.
  // CHECK: %[[MATRICES:.*]] = tensor.dim %[[WEIGHTS]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[MATRICES]], %[[C2]])
  // CHECK: call @tamoe_rt_grouped_matmul(
  %m = tamoe.grouped_matmul %rows, %counts, %weights : tensor<?x16xf32>, tensor<2xi32>, tensor<?x16x8xf32> -> tensor<?x8xf32>
  // The weights and d_combined against the positions.
  // CHECK: %[[TOKENS_4:.*]] = tensor.dim %[[POS]], %{{.*}}
  // CHECK: %[[W_ROWS_2:.*]] = tensor.dim %[[W]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[W_ROWS_2]], %[[TOKENS_4]])
  // CHECK: %[[D_ROWS:.*]] = tensor.dim %[[D]], %{{.*}}
  // CHECK: call @tamoe_rt_program_check_extent(%{{.*}}, %{{.*}}, %[[D_ROWS]], %[[TOKENS_4]])
  // CHECK: call @tamoe_rt_combine_grad(
  %g:2 = tamoe.combine_grad %d, %outputs, %pos weights %w : tensor<?x16xf32>, tensor<8x16xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<8x16xf32>, tensor<?x2xf32>
  return %c, %r, %l, %m, %g#0 : tensor<?x16xf32>, tensor<?x16xf32>, tensor<f32>, tensor<?x8xf32>, tensor<8x16xf32>
}

// -----

// Operands with static rows need no check, nor a dynamic operand that the
// runtime reads up to its own capacity (expert_outputs, the rows of a
// grouped matmul) or not at all (gate_grad's expert_ids without d_weights).
// CHECK-LABEL: func.func @own_rows
// CHECK-NOT: tamoe_rt_program_check_extent
// CHECK: call @tamoe_rt_combine(
// CHECK-NOT: tamoe_rt_program_check_extent
// CHECK: call @tamoe_rt_grouped_matmul(
// CHECK-NOT: tamoe_rt_program_check_extent
// CHECK: call @tamoe_rt_gate_grad(
// CHECK-NOT: tamoe_rt_program_check_extent
// CHECK-LABEL: func.func private
func.func @own_rows(%outputs: tensor<?x16xf32>, %pos: tensor<4x2xi32>, %w: tensor<4x2xf32>, %rows: tensor<?x16xf32>, %counts: tensor<2xi32>, %weights: tensor<2x16x8xf32>, %probs: tensor<?x4xf32>, %ids: tensor<?x2xi32>) -> (tensor<4x16xf32>, tensor<?x8xf32>, tensor<?x4xf32>) {
  %c = tamoe.combine %outputs, %pos, %w : tensor<?x16xf32>, tensor<4x2xi32>, tensor<4x2xf32> -> tensor<4x16xf32>
  %m = tamoe.grouped_matmul %rows, %counts, %weights : tensor<?x16xf32>, tensor<2xi32>, tensor<2x16x8xf32> -> tensor<?x8xf32>
  %d = tamoe.gate_grad %probs, %ids softmax d_probs %probs : tensor<?x4xf32>, tensor<?x2xi32>, tensor<?x4xf32> -> tensor<?x4xf32>
  return %c, %m, %d : tensor<4x16xf32>, tensor<?x8xf32>, tensor<?x4xf32>
}

// -----

func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
func.func @g(%x: tensor<4xf32>) {
  // expected-error @+1 {{'tamoe.vjp' op has no lowering to the runtime: run tamoe-differentiate (or --tamoe-pipeline) first}}
  %y, %d = tamoe.vjp @f(%x) cotangents(%x) : (tensor<4xf32>), (tensor<4xf32>) -> (tensor<4xf32>), (tensor<4xf32>)
  return
}

// -----

// A received buffer of static size (the exchange back to the tokens) needs
// no counts first: the exchange sends them once, and its capacity bounds
// what may arrive.
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @static_receive
  func.func @static_receive(%rows: tensor<?x64xf32>, %counts: tensor<8x2xi32>) -> tensor<32x64xf32> {
    // CHECK-DAG: %[[C32:.*]] = arith.constant 32 : index
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: %[[RECV:.*]] = memref.alloc() : memref<32x64xf32>
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: call @tamoe_rt_all_to_all({{.*}}, %[[C32]], %{{.*}})
    %back, %back_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<?x64xf32>, tensor<8x2xi32> -> tensor<32x64xf32>
    return %back : tensor<32x64xf32>
  }
}

// -----

// One part's positions: the dispatch's positions, ids, S and k, its counts
// and their number, the part, and a fresh [S, k] buffer.
module {
  // CHECK-LABEL: func.func @part_positions
  func.func @part_positions(%positions: tensor<16x2xi32>, %ids: tensor<16x2xi32>, %counts: tensor<8xi32>) -> tensor<16x2xi32> {
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
    // CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
    // CHECK: %[[OUT:.*]] = memref.alloc() : memref<16x2xi32>
    // CHECK: call @tamoe_rt_chunk_positions(%{{.*}}, %{{.*}}, %{{.*}}, %[[C16]], %[[C2]], %{{.*}}, %[[C8]], %[[C1]], %[[C4]], %{{.*}})
    %p = tamoe.chunk_positions %positions, %ids, %counts chunk 1 of 4 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<8xi32>
    return %p : tensor<16x2xi32>
  }
}

// -----

module {
  func.func @i64_part_positions(%positions: tensor<16x2xi64>, %ids: tensor<16x2xi64>, %counts: tensor<8xi64>) {
    // expected-error @+1 {{'tamoe.chunk_positions' op cannot be lowered to the runtime: ids, positions and counts must be i32, got 'tensor<16x2xi64>'}}
    %p = tamoe.chunk_positions %positions, %ids, %counts chunk 0 of 2 : tensor<16x2xi64>, tensor<16x2xi64>, tensor<8xi64>
    return
  }
}

// -----

// The parts of a layer cut in 2 (send counts that a tamoe.chunk cut) whose
// receive buffers are sized on the host share one counts round, before the
// first cut: the whole counts gathered, each part's followed on the host
// (chunk 0 of 2 (step 0), its exchange over the world's 8 ranks (1),
// chunk 1 (2), its exchange (3)). A second exchange with the same counts
// (the routes beside the rows of a de-duplicated exchange) reads the same
// step.
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @parts
  func.func @parts(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>, %routes: tensor<24x2xi32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x2xi32>) {
    // CHECK-DAG: %[[WORLD:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
    // CHECK-DAG: %[[C3:.*]] = arith.constant 3 : index
    // CHECK-DAG: %[[C4:.*]] = arith.constant 4 : index
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[STEPS:.*]] = arith.constant dense<{{\[}}[0, 0, 0, 2, 0], [2, 1, 0, 8, 0], [0, 0, 1, 2, 0], [2, 3, 0, 8, 0]]> : tensor<4x5xi64>
    // CHECK: %[[TOTALS:.*]] = memref.alloca() : memref<4xindex>
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: bufferization.to_buffer %[[STEPS]]
    // CHECK: call @tamoe_rt_all_to_all_totals(%{{.*}}, %[[WORLD]], %{{.*}}, %[[C16]], %{{.*}}, %[[C4]], %{{.*}})
    // CHECK: call @tamoe_rt_chunk(
    // CHECK: call @tamoe_rt_chunk(
    // CHECK: %[[T1:.*]] = memref.load %[[TOTALS]][%[[C1]]]
    // CHECK: memref.alloc(%[[T1]]) : memref<?x64xf32>
    // CHECK: call @tamoe_rt_all_to_all(
    // CHECK: %[[T3:.*]] = memref.load %[[TOTALS]][%[[C3]]]
    // CHECK: memref.alloc(%[[T3]]) : memref<?x64xf32>
    // CHECK: call @tamoe_rt_all_to_all(
    // CHECK: %[[T1R:.*]] = memref.load %[[TOTALS]][%[[C1]]]
    // CHECK: memref.alloc(%[[T1R]]) : memref<?x2xi32>
    // CHECK: call @tamoe_rt_all_to_all(
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    %p0, %c0 = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<24x64xf32>
    %p1, %c1 = tamoe.chunk %rows, %counts chunk 1 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<24x64xf32>
    %r0, %rc0 = tamoe.all_to_all %p0, %c0 on @ep : tensor<24x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    %r1, %rc1 = tamoe.all_to_all %p1, %c1 on @ep : tensor<24x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    %x0, %xc0 = tamoe.all_to_all %routes, %c0 on @ep : tensor<24x2xi32>, tensor<8x2xi32> -> tensor<?x2xi32>
    return %r0, %r1, %x0 : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x2xi32>
  }
}

// -----

// Exchanges in a branch get a round of their own there (the one after the
// branch must not read totals that a branch not taken never wrote). After
// it, the whole counts' exchange joins its parts' round (step 2).
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @parts_in_a_branch
  func.func @parts_in_a_branch(%rows: tensor<32x64xf32>, %counts: tensor<8x2xi32>, %routes: tensor<24x2xi32>, %flag: i1) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x64xf32>) {
    // CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
    // CHECK-DAG: %[[C2:.*]] = arith.constant 2 : index
    // CHECK-DAG: %[[OUTSIDE:.*]] = memref.alloca() : memref<3xindex>
    // CHECK-DAG: %[[INSIDE:.*]] = memref.alloca() : memref<2xindex>
    // CHECK: scf.if
    // CHECK: call @tamoe_rt_all_to_all_totals({{.*}}, %{{.*}})
    // CHECK: memref.load %[[INSIDE]][%[[C1]]]
    // CHECK: memref.load %[[INSIDE]][%[[C1]]]
    // CHECK: } else {
    // CHECK: call @tamoe_rt_all_to_all_totals({{.*}}, %{{.*}})
    // CHECK: memref.load %[[OUTSIDE]][%[[C1]]]
    // CHECK: memref.load %[[OUTSIDE]][%[[C1]]]
    // CHECK: memref.load %[[OUTSIDE]][%[[C2]]]
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    %r1, %x1 = scf.if %flag -> (tensor<?x64xf32>, tensor<?x2xi32>) {
      %p1, %c1 = tamoe.chunk %rows, %counts chunk 1 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<24x64xf32>
      %y1, %yc1 = tamoe.all_to_all %p1, %c1 on @ep : tensor<24x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
      %z1, %zc1 = tamoe.all_to_all %routes, %c1 on @ep : tensor<24x2xi32>, tensor<8x2xi32> -> tensor<?x2xi32>
      scf.yield %y1, %z1 : tensor<?x64xf32>, tensor<?x2xi32>
    } else {
      %e = tensor.empty() : tensor<0x64xf32>
      %c = tensor.cast %e : tensor<0x64xf32> to tensor<?x64xf32>
      %er = tensor.empty() : tensor<0x2xi32>
      %cr = tensor.cast %er : tensor<0x2xi32> to tensor<?x2xi32>
      scf.yield %c, %cr : tensor<?x64xf32>, tensor<?x2xi32>
    }
    %p0, %c0 = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<24x64xf32>
    %r0, %rc0 = tamoe.all_to_all %p0, %c0 on @ep : tensor<24x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    %s0, %sc0 = tamoe.all_to_all %routes, %c0 on @ep : tensor<24x2xi32>, tensor<8x2xi32> -> tensor<?x2xi32>
    %w, %wc = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<?x64xf32>
    return %r0, %r1, %x1, %w : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x2xi32>, tensor<?x64xf32>
  }
}

// -----

// Exchanges all within the node share a round over the node group alone,
// so a branch that one node takes alone does not wait for the others.
module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @node_stages_in_a_branch
  func.func @node_stages_in_a_branch(%rows: tensor<32x64xf32>, %counts: tensor<4x2x2xi32>, %first: i1) -> tensor<?x64xf32> {
    // CHECK-DAG: %[[NODE:.*]] = arith.constant 1 : i32
    // CHECK: scf.if
    // CHECK: call @tamoe_rt_all_to_all_totals(%{{.*}}, %[[NODE]],
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    %r = scf.if %first -> tensor<?x64xf32> {
      %s1, %c1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<32x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>
      %s2, %c2 = tamoe.all_to_all %s1, %c1 on @ep axes = [1] level "node" : tensor<?x64xf32>, tensor<4x2x2xi32> -> tensor<?x64xf32>
      scf.yield %s2 : tensor<?x64xf32>
    } else {
      %e = tensor.empty() : tensor<0x64xf32>
      %c = tensor.cast %e : tensor<0x64xf32> to tensor<?x64xf32>
      scf.yield %c : tensor<?x64xf32>
    }
    return %r : tensor<?x64xf32>
  }
}

// -----

// Exchanges on two grids share the round of their counts; each grid is
// checked for what its own exchanges need: the node split only for the
// grid that an exchange splits at nodes.
module {
  shard.grid @a(shape = 4x2)
  shard.grid @h(shape = 2x4)
  // CHECK-LABEL: func.func @two_grids
  func.func @two_grids(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) -> (tensor<?x64xf32>, tensor<?x64xf32>) {
    // CHECK-DAG: %[[WHOLE:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[SPLIT:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[A:.*]] = arith.constant dense<[4, 2]> : tensor<2xi64>
    // CHECK-DAG: %[[H:.*]] = arith.constant dense<[2, 4]> : tensor<2xi64>
    // CHECK: bufferization.to_buffer %[[A]]
    // CHECK: call @tamoe_rt_program_check_grid(%{{.*}}, %{{.*}}, %[[WHOLE]])
    // CHECK: bufferization.to_buffer %[[H]]
    // CHECK: call @tamoe_rt_program_check_grid(%{{.*}}, %{{.*}}, %[[SPLIT]])
    // CHECK: call @tamoe_rt_all_to_all_totals(%{{.*}}, %[[WHOLE]],
    %w, %wc = tamoe.all_to_all %rows, %counts on @a : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %n = tensor.expand_shape %counts [[0, 1]] output_shape [4, 2] : tensor<8xi32> into tensor<4x2xi32>
    %x, %xc = tamoe.all_to_all %rows, %n on @h axes = [1] level "node" : tensor<32x64xf32>, tensor<4x2xi32> -> tensor<?x64xf32>
    return %w, %x : tensor<?x64xf32>, tensor<?x64xf32>
  }
}

// -----

// An exchange that expects its counts (the reverse of an earlier one)
// sizes its receive buffer from their sum on this rank: no counts round,
// and it joins no shared round either (the exchange beside it on the same
// counts keeps its own).
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @expecting
  // CHECK-SAME: %[[SENT:[^:]*]]: tensor<8xi32>, %[[SENT2:[^:]*]]: tensor<8xi32>)
  func.func @expecting(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>, %sent: tensor<8xi32>, %sent2: tensor<8xi32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK: %[[BUF:.*]] = bufferization.to_buffer %[[SENT]]
    // CHECK: %[[INT:.*]] = memref.extract_aligned_pointer_as_index %[[BUF]]
    // CHECK: %[[I64:.*]] = arith.index_cast %[[INT]]
    // CHECK: %[[PTR:.*]] = llvm.inttoptr %[[I64]]
    // CHECK: call @tamoe_rt_counts_total(%{{.*}}, %[[PTR]], %[[C8]], %{{.*}})
    // CHECK: %[[T:.*]] = memref.load %{{.*}}[] : memref<index>
    // CHECK: memref.alloc(%[[T]]) : memref<?x64xf32>
    // CHECK: call @tamoe_rt_all_to_all(
    // CHECK: call @tamoe_rt_all_to_all_counts(
    // CHECK: call @tamoe_rt_all_to_all(
    // A started one the same way.
    // CHECK: %[[BUF2:.*]] = bufferization.to_buffer %[[SENT2]]
    // CHECK: call @tamoe_rt_counts_total(
    // CHECK: call @tamoe_rt_all_to_all_start(
    // CHECK: call @tamoe_rt_all_to_all_wait(
    // CHECK-NOT: tamoe_rt_all_to_all_totals
    // CHECK-NOT: tamoe_rt_all_to_all_counts
    // CHECK: return
    %back, %back_counts = tamoe.all_to_all %rows, %counts expecting %sent on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %other, %other_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %x = tamoe.all_to_all_start %rows, %counts expecting %sent2 on @ep : tensor<32x64xf32>, tensor<8xi32>
    %started, %started_counts = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
    return %back, %other, %started : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
  }
}
