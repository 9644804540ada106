// tamoe-schedule-exchanges on a two-stage (hierarchical) exchange written
// by hand: the later stage's start, the wait that feeds it and the regroup
// between them move down past compute that needs none of them, so that the
// first stage travels meanwhile; a first stage whose rows are also used
// elsewhere is no relay and stays where its users need it. The ops that
// compute a start's operands move up with it, each once (a chain of 40
// doublings, which a walk per path would take 2^40 steps over, is done at
// once) and only when they cannot trap; a start stays below any op with
// side effects, and a wait above it.
// RUN: timeout 60 tamoe-opt %s --tamoe-schedule-exchanges -split-input-file | FileCheck %s

module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @relay
  // CHECK: %[[NODE:.*]] = tamoe.all_to_all_start {{.*}} axes = [1] level "node"
  // CHECK-NEXT: tamoe.grouped_matmul
  // CHECK-NEXT: tamoe.all_to_all_wait %[[NODE]]
  // CHECK-NEXT: tamoe.regroup
  // CHECK-NEXT: %[[CLUSTER:.*]] = tamoe.all_to_all_start {{.*}} axes = [0] level "cluster"
  // CHECK-NEXT: tamoe.all_to_all_wait %[[CLUSTER]]
  // CHECK-NEXT: return
  func.func @relay(%rows: tensor<24x32xf32>, %counts: tensor<4x2x2xi32>, %x: tensor<8x32xf32>, %xc: tensor<1xi32>, %w: tensor<1x32x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
    %r1, %rc1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>
    %g, %gc = tamoe.regroup %r1, %rc1 : tensor<?x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>, tensor<2x4x2xi32>
    %r2, %rc2 = tamoe.all_to_all %g, %gc on @ep axes = [0] level "cluster" : tensor<?x32xf32>, tensor<2x4x2xi32> -> tensor<?x32xf32>
    %y = tamoe.grouped_matmul %x, %xc, %w : tensor<8x32xf32>, tensor<1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
    return %r2, %y : tensor<?x32xf32>, tensor<?x32xf32>
  }
}

// -----

module {
  shard.grid @ep(shape = 2x4)
  // CHECK-LABEL: func.func @not_a_relay
  // CHECK: %[[NODE:.*]] = tamoe.all_to_all_start {{.*}} axes = [1] level "node"
  // CHECK-NEXT: %[[R1:.*]], %{{.*}} = tamoe.all_to_all_wait %[[NODE]]
  // CHECK-NEXT: tamoe.regroup %[[R1]]
  // CHECK-NEXT: %[[CLUSTER:.*]] = tamoe.all_to_all_start {{.*}} axes = [0] level "cluster"
  // CHECK-NEXT: tamoe.grouped_matmul
  // CHECK-NEXT: tamoe.all_to_all_wait %[[CLUSTER]]
  // CHECK-NEXT: return
  func.func @not_a_relay(%rows: tensor<24x32xf32>, %counts: tensor<4x2x2xi32>, %x: tensor<8x32xf32>, %xc: tensor<1xi32>, %w: tensor<1x32x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>) {
    %r1, %rc1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>
    %g, %gc = tamoe.regroup %r1, %rc1 : tensor<?x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>, tensor<2x4x2xi32>
    %r2, %rc2 = tamoe.all_to_all %g, %gc on @ep axes = [0] level "cluster" : tensor<?x32xf32>, tensor<2x4x2xi32> -> tensor<?x32xf32>
    %y = tamoe.grouped_matmul %x, %xc, %w : tensor<8x32xf32>, tensor<1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
    return %r2, %y, %r1 : tensor<?x32xf32>, tensor<?x32xf32>, tensor<?x32xf32>
  }
}

// -----

module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @guarded
  // CHECK: cf.assert
  // CHECK-NEXT: arith.divsi
  // CHECK-NEXT: tensor.splat
  // CHECK-NEXT: tamoe.all_to_all_start
  func.func @guarded(%rows: tensor<16x4xf32>, %a: i32, %b: i32) -> tensor<?x4xf32> {
    %c0 = arith.constant 0 : i32
    %nz = arith.cmpi ne, %b, %c0 : i32
    cf.assert %nz, "per-peer divisor must be nonzero"
    %q = arith.divsi %a, %b : i32
    %counts = tensor.splat %q : tensor<8xi32>
    %r, %rc = tamoe.all_to_all %rows, %counts on @ep : tensor<16x4xf32>, tensor<8xi32> -> tensor<?x4xf32>
    return %r : tensor<?x4xf32>
  }
}

// -----

// A start does not rise above an op with side effects (an assert, a call):
// a rank stopped there would leave the others' collective waiting for it.
module {
  shard.grid @ep(shape = 8)
  func.func private @log(i32)
  // CHECK-LABEL: func.func @barriers
  // CHECK: cf.assert
  // CHECK-NEXT: call @log
  // CHECK-NEXT: tamoe.all_to_all_start
  func.func @barriers(%rows: tensor<16x4xf32>, %counts: tensor<8xi32>, %ok: i1, %step: i32) -> tensor<?x4xf32> {
    cf.assert %ok, "the counts were checked"
    func.call @log(%step) : (i32) -> ()
    %r, %rc = tamoe.all_to_all %rows, %counts on @ep : tensor<16x4xf32>, tensor<8xi32> -> tensor<?x4xf32>
    return %r : tensor<?x4xf32>
  }
}

// -----

// Nor does a wait sink below one: the rows in flight are still read, and
// the call overwrites the buffer they were read from.
module {
  shard.grid @ep(shape = 8)
  func.func private @refill(memref<16x4xf32>)
  // CHECK-LABEL: func.func @refilled
  // CHECK: tamoe.all_to_all_start
  // CHECK-NEXT: tamoe.all_to_all_wait
  // CHECK-NEXT: call @refill
  func.func @refilled(%buffer: memref<16x4xf32>, %counts: tensor<8xi32>) -> tensor<?x4xf32> {
    %rows = bufferization.to_tensor %buffer restrict : memref<16x4xf32> to tensor<16x4xf32>
    %r, %rc = tamoe.all_to_all %rows, %counts on @ep : tensor<16x4xf32>, tensor<8xi32> -> tensor<?x4xf32>
    func.call @refill(%buffer) : (memref<16x4xf32>) -> ()
    return %r : tensor<?x4xf32>
  }
}

// -----

// The same for the wait of a staged exchange's first stage: its relay does
// not move down past the call that overwrites the rows it sent.
module {
  shard.grid @ep(shape = 2x4)
  func.func private @refill(memref<24x32xf32>)
  // CHECK-LABEL: func.func @refilled_relay
  // CHECK: tamoe.all_to_all_start {{.*}} level "node"
  // CHECK-NEXT: tamoe.all_to_all_wait
  // CHECK-NEXT: call @refill
  // CHECK-NEXT: tamoe.regroup
  // CHECK-NEXT: tamoe.all_to_all_start {{.*}} level "cluster"
  func.func @refilled_relay(%buffer: memref<24x32xf32>, %counts: tensor<4x2x2xi32>, %x: tensor<8x32xf32>, %xc: tensor<1xi32>, %w: tensor<1x32x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>) {
    %rows = bufferization.to_tensor %buffer restrict : memref<24x32xf32> to tensor<24x32xf32>
    %r1, %rc1 = tamoe.all_to_all %rows, %counts on @ep axes = [1] level "node" : tensor<24x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>
    %g, %gc = tamoe.regroup %r1, %rc1 : tensor<?x32xf32>, tensor<4x2x2xi32> -> tensor<?x32xf32>, tensor<2x4x2xi32>
    func.call @refill(%buffer) : (memref<24x32xf32>) -> ()
    %r2, %rc2 = tamoe.all_to_all %g, %gc on @ep axes = [0] level "cluster" : tensor<?x32xf32>, tensor<2x4x2xi32> -> tensor<?x32xf32>
    %y = tamoe.grouped_matmul %x, %xc, %w : tensor<8x32xf32>, tensor<1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
    return %r2, %y : tensor<?x32xf32>, tensor<?x32xf32>
  }
}

// -----

module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @doublings
  // CHECK: %39 = arith.addi %38, %38 : tensor<8xi32>
  // CHECK-NEXT: tamoe.all_to_all_start %{{.*}}, %39
  func.func @doublings(%rows: tensor<16x4xf32>, %c0: tensor<8xi32>) -> tensor<?x4xf32> {
    %c1 = arith.addi %c0, %c0 : tensor<8xi32>
    %c2 = arith.addi %c1, %c1 : tensor<8xi32>
    %c3 = arith.addi %c2, %c2 : tensor<8xi32>
    %c4 = arith.addi %c3, %c3 : tensor<8xi32>
    %c5 = arith.addi %c4, %c4 : tensor<8xi32>
    %c6 = arith.addi %c5, %c5 : tensor<8xi32>
    %c7 = arith.addi %c6, %c6 : tensor<8xi32>
    %c8 = arith.addi %c7, %c7 : tensor<8xi32>
    %c9 = arith.addi %c8, %c8 : tensor<8xi32>
    %c10 = arith.addi %c9, %c9 : tensor<8xi32>
    %c11 = arith.addi %c10, %c10 : tensor<8xi32>
    %c12 = arith.addi %c11, %c11 : tensor<8xi32>
    %c13 = arith.addi %c12, %c12 : tensor<8xi32>
    %c14 = arith.addi %c13, %c13 : tensor<8xi32>
    %c15 = arith.addi %c14, %c14 : tensor<8xi32>
    %c16 = arith.addi %c15, %c15 : tensor<8xi32>
    %c17 = arith.addi %c16, %c16 : tensor<8xi32>
    %c18 = arith.addi %c17, %c17 : tensor<8xi32>
    %c19 = arith.addi %c18, %c18 : tensor<8xi32>
    %c20 = arith.addi %c19, %c19 : tensor<8xi32>
    %c21 = arith.addi %c20, %c20 : tensor<8xi32>
    %c22 = arith.addi %c21, %c21 : tensor<8xi32>
    %c23 = arith.addi %c22, %c22 : tensor<8xi32>
    %c24 = arith.addi %c23, %c23 : tensor<8xi32>
    %c25 = arith.addi %c24, %c24 : tensor<8xi32>
    %c26 = arith.addi %c25, %c25 : tensor<8xi32>
    %c27 = arith.addi %c26, %c26 : tensor<8xi32>
    %c28 = arith.addi %c27, %c27 : tensor<8xi32>
    %c29 = arith.addi %c28, %c28 : tensor<8xi32>
    %c30 = arith.addi %c29, %c29 : tensor<8xi32>
    %c31 = arith.addi %c30, %c30 : tensor<8xi32>
    %c32 = arith.addi %c31, %c31 : tensor<8xi32>
    %c33 = arith.addi %c32, %c32 : tensor<8xi32>
    %c34 = arith.addi %c33, %c33 : tensor<8xi32>
    %c35 = arith.addi %c34, %c34 : tensor<8xi32>
    %c36 = arith.addi %c35, %c35 : tensor<8xi32>
    %c37 = arith.addi %c36, %c36 : tensor<8xi32>
    %c38 = arith.addi %c37, %c37 : tensor<8xi32>
    %c39 = arith.addi %c38, %c38 : tensor<8xi32>
    %c40 = arith.addi %c39, %c39 : tensor<8xi32>
    %r, %rc = tamoe.all_to_all %rows, %c40 on @ep : tensor<16x4xf32>, tensor<8xi32> -> tensor<?x4xf32>
    return %r : tensor<?x4xf32>
  }
}

// -----

// An exchange's expected counts travel with it into its start.
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @expecting
  // CHECK-SAME: %[[COUNTS:[^:]*]]: tensor<8xi32>, %[[SENT:[^:]*]]: tensor<8xi32>)
  // CHECK: tamoe.all_to_all_start %{{.*}}, %[[COUNTS]] expecting %[[SENT]] on @ep
  func.func @expecting(%rows: tensor<16x4xf32>, %counts: tensor<8xi32>, %sent: tensor<8xi32>) -> tensor<?x4xf32> {
    %r, %rc = tamoe.all_to_all %rows, %counts expecting %sent on @ep : tensor<16x4xf32>, tensor<8xi32> -> tensor<?x4xf32>
    return %r : tensor<?x4xf32>
  }
}

// -----

// A reshape of a wait's results that only a later block reads stays alive:
// it moves down to its block's terminator, and the wait before it; a
// reshape nothing reads goes.
module {
  shard.grid @ep(shape = 8)
  // CHECK-LABEL: func.func @read_in_a_later_block
  // CHECK: %[[X:.*]] = tamoe.all_to_all_start
  // CHECK-NEXT: arith.addi
  // CHECK-NEXT: %{{.*}}, %[[RC:.*]] = tamoe.all_to_all_wait %[[X]]
  // CHECK-NEXT: %[[FLAT:.*]] = tensor.collapse_shape %[[RC]]
  // CHECK-NEXT: cf.br ^bb1
  // CHECK: tensor.expand_shape %[[FLAT]]
  // CHECK-NOT: tensor.collapse_shape
  func.func @read_in_a_later_block(%rows: tensor<32x32xf32>, %counts: tensor<8x2xi32>, %a: tensor<8xi32>) -> (tensor<8x2xi32>, tensor<8xi32>) {
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8x2xi32> -> tensor<?x32xf32>
    %flat = tensor.collapse_shape %recv_counts [[0, 1]] : tensor<8x2xi32> into tensor<16xi32>
    %unused = tensor.collapse_shape %recv_counts [[0, 1]] : tensor<8x2xi32> into tensor<16xi32>
    %sum = arith.addi %a, %a : tensor<8xi32>
    cf.br ^bb1
  ^bb1:
    %again = tensor.expand_shape %flat [[0, 1]] output_shape [8, 2] : tensor<16xi32> into tensor<8x2xi32>
    return %again, %sum : tensor<8x2xi32>, tensor<8xi32>
  }
}
