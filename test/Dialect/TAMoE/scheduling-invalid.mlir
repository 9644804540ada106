// RUN: tamoe-opt %s -split-input-file -verify-diagnostics

shard.grid @ep(shape = 8)
func.func @never_waited(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{must be waited on exactly once, by one tamoe.all_to_all_wait; it has 0 uses}}
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  return
}

// -----

shard.grid @ep(shape = 8)
func.func @waited_twice(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{must be waited on exactly once, by one tamoe.all_to_all_wait; it has 2 uses}}
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  %a, %ac = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
  %b, %bc = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
  return
}

// -----

shard.grid @ep(shape = 8)
func.func private @keep(!tamoe.exchange)
func.func @escapes(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{its exchange may only be used by tamoe.all_to_all_wait, not by 'func.call'}}
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  func.call @keep(%x) : (!tamoe.exchange) -> ()
  return
}

// -----

shard.grid @ep(shape = 8)
func.func @nested(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>, %flag: i1) {
  // expected-error @+1 {{must be waited on in its own block}}
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  scf.if %flag {
    %a, %ac = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
  }
  return
}

// -----

func.func @no_start(%x: !tamoe.exchange) {
  // expected-error @+1 {{waits on an exchange that no tamoe.all_to_all_start returns}}
  %a, %ac = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
  return
}

// -----

shard.grid @ep(shape = 8)
func.func @wrong_rows(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  // expected-error @+1 {{received rows must have the shape and element type of send rows}}
  %a, %ac = tamoe.all_to_all_wait %x : tensor<?x32xf32>, tensor<8xi32>
  return
}

// -----

shard.grid @ep(shape = 8)
func.func @wrong_counts(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  // expected-error @+1 {{recv_counts must have the type of the start's send_counts, 'tensor<8xi32>'}}
  %a, %ac = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<4x2xi32>
  return
}

// -----

shard.grid @ep(shape = 4)
func.func @wrong_group(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{send_counts has 8 peers but the group on @ep has 4 ranks}}
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  %a, %ac = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
  return
}

// -----

func.func @chunk_out_of_range(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{chunk must be in [0, 4), got 4}}
  %p, %c = tamoe.chunk %rows, %counts chunk 4 of 4 : tensor<32x64xf32>, tensor<8xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @no_chunks(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{chunks must be at least 1, got 0}}
  %p, %c = tamoe.chunk %rows, %counts chunk 0 of 0 : tensor<32x64xf32>, tensor<8xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @chunk_rows(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{chunk_rows must have the rows of rows: [?, 64] of 'f32'}}
  %p, %c = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x64xf32>, tensor<8xi32> -> tensor<32x64xf16>
  return
}

// -----

func.func @chunk_counts(%rows: tensor<32x64xf32>, %counts: tensor<?xi32>) {
  // expected-error @+1 {{counts must have a static shape}}
  %p, %c = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x64xf32>, tensor<?xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @unchunk_rows(%a: tensor<32x64xf32>, %b: tensor<32x32xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{part 1 must have the rows of rows: [?, 64] of 'f32'}}
  %r = tamoe.unchunk %a, %b counts %counts : (tensor<32x64xf32>, tensor<32x32xf32>), tensor<8xi32> -> tensor<32x64xf32>
  return
}

// -----

func.func @unchunk_nothing(%counts: tensor<8xi32>) {
  // expected-error @+1 {{needs at least one part}}
  %r = "tamoe.unchunk"(%counts) : (tensor<8xi32>) -> tensor<32x64xf32>
  return
}

// -----

func.func @part_positions_shape(%positions: tensor<16x2xi32>, %ids: tensor<16x4xi32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{expert_ids must have shape [S, k] (the shape of positions) = [16, 2], got [16, 4]}}
  %p = tamoe.chunk_positions %positions, %ids, %counts chunk 0 of 2 : tensor<16x2xi32>, tensor<16x4xi32>, tensor<8xi32>
  return
}

// -----

func.func @part_positions_experts(%positions: tensor<16x2xi32>, %ids: tensor<16x2xi32>, %counts: tensor<0xi32>) {
  // expected-error @+1 {{expert_counts must have a static size >= 1 (the number of experts)}}
  %p = tamoe.chunk_positions %positions, %ids, %counts chunk 0 of 2 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<0xi32>
  return
}

// -----

func.func @part_positions_range(%positions: tensor<16x2xi32>, %ids: tensor<16x2xi32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{chunk must be in [0, 2), got 2}}
  %p = tamoe.chunk_positions %positions, %ids, %counts chunk 2 of 2 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<8xi32>
  return
}

// -----

func.func @part_positions_none(%positions: tensor<16x2xi32>, %ids: tensor<16x2xi32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{chunks must be at least 1, got 0}}
  %p = tamoe.chunk_positions %positions, %ids, %counts chunk 0 of 0 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<8xi32>
  return
}

// -----

func.func @scalar_counts(%rows: tensor<32x64xf32>, %counts: tensor<i32>) {
  // expected-error @+1 {{counts must have at least one dimension}}
  %p, %c = tamoe.chunk %rows, %counts chunk 0 of 2 : tensor<32x64xf32>, tensor<i32> -> tensor<32x64xf32>
  return
}

// -----

shard.grid @ep(shape = 8)
func.func @sibling_block(%rows: tensor<32x64xf32>, %counts: tensor<8xi32>) {
  // expected-error @+1 {{must be waited on in its own block}}
  %x = tamoe.all_to_all_start %rows, %counts on @ep : tensor<32x64xf32>, tensor<8xi32>
  cf.br ^next
^next:
  %a, %ac = tamoe.all_to_all_wait %x : tensor<?x64xf32>, tensor<8xi32>
  return
}
