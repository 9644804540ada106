// Layers tamoe-overlap leaves whole, each with the reason, and requests it
// refuses.
// RUN: tamoe-opt %s --tamoe-overlap=chunks=2 -split-input-file -verify-diagnostics -o /dev/null

shard.grid @ep(shape = 8)
func.func @no_return(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>) -> tensor<?x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-remark @+1 {{kept in one chunk: no exchange in its block sends the results back with the counts it received}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  return %recv : tensor<?x32xf32>
}

// -----

// A matmul mixes rows (through a weight that is not per expert): fine. A
// reduction over the rows is not row-wise: a cut would change it.
shard.grid @ep(shape = 8)
func.func @reduction(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>, %init: tensor<32xf32>) -> (tensor<32x32xf32>, tensor<32xf32>) {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-remark @+1 {{kept in one chunk: 'linalg.generic' reads what it received but is not a row-wise step of the experts before the exchange back (grouped_matmul, element-wise linalg ops)}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  %sum = linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1)>], iterator_types = ["reduction", "parallel"]} ins(%recv : tensor<?x32xf32>) outs(%init : tensor<32xf32>) {
  ^bb0(%in: f32, %acc: f32):
    %s = arith.addf %in, %acc : f32
    linalg.yield %s : f32
  } -> tensor<32xf32>
  %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  return %back, %sum : tensor<32x32xf32>, tensor<32xf32>
}

// -----

shard.grid @ep(shape = 8)
func.func @escapes(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>, %w: tensor<1x32x32xf32>) -> (tensor<32x32xf32>, tensor<?x32xf32>) {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 1] : tensor<8xi32> into tensor<8x1xi32>
  // expected-remark @+1 {{kept in one chunk: 'func.return' reads what it received but is not a row-wise step of the experts before the exchange back}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<32x32xf32>, tensor<8x1xi32> -> tensor<?x32xf32>
  %y = tamoe.grouped_matmul %recv, %recv_counts, %w : tensor<?x32xf32>, tensor<8x1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
  %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<?x32xf32>, tensor<8x1xi32> -> tensor<32x32xf32>
  return %back, %y : tensor<32x32xf32>, tensor<?x32xf32>
}

// -----

shard.grid @ep(shape = 8)
func.func private @observe(tensor<8xi32>)
func.func @counts_early(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>) -> tensor<32x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-remark @+1 {{kept in one chunk: the counts it received are read by 'func.call' before the exchange back}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  func.call @observe(%recv_counts) : (tensor<8xi32>) -> ()
  %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  return %back : tensor<32x32xf32>
}

// -----

// With a capacity of one row per expert, a second chunk of a full expert
// carries nothing.
shard.grid @ep(shape = 8)
func.func @capacity(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>) -> tensor<8x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids capacity 1 : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<8x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-error @+1 {{chunks=2 is more than the dispatch's capacity of 1 rows per expert: a chunk of a full expert would carry no row}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<8x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<8x32xf32>
  return %back : tensor<8x32xf32>
}

// -----

// A capacity_factor of a dynamic token count gives no capacity before run
// time: nothing to check the chunks against (the layer is cut).
shard.grid @ep(shape = 8)
func.func @dynamic_capacity_factor(%tokens: tensor<?x32xf32>, %ids: tensor<?x2xi32>) -> tensor<?x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids capacity_factor 1.0 : tensor<?x32xf32>, tensor<?x2xi32> -> tensor<?x32xf32>, tensor<8xi32>, tensor<?x2xi32>, tensor<i64>
  // expected-remark @+1 {{cut into 2 chunks along the tokens (chunks=2; no prediction: the module has no tamoe.topology)}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  return %back : tensor<?x32xf32>
}

// -----

// An exchange that does not send a dispatch's rows is not a layer's.
shard.grid @ep(shape = 8)
func.func @plain(%rows: tensor<32x32xf32>, %counts: tensor<8xi32>) -> tensor<32x32xf32> {
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  return %back : tensor<32x32xf32>
}

// -----

// Only ops of the exchanges' block are cut per chunk: a read of the rows in
// a nested region keeps the layer whole.
shard.grid @ep(shape = 8)
func.func @nested(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>, %cond: i1) -> tensor<32x32xf32> {
  %c0 = arith.constant 0 : index
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-remark @+1 {{kept in one chunk: 'tensor.dim' reads what it received but is not a row-wise step of the experts before the exchange back}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  scf.if %cond {
    %d = tensor.dim %recv, %c0 : tensor<?x32xf32>
  }
  %back, %back_counts = tamoe.all_to_all %recv, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  return %back : tensor<32x32xf32>
}

// -----

// A grouped_matmul with the received counts over rows that did not arrive
// with them cannot be cut with those rows.
shard.grid @ep(shape = 8)
func.func @foreign_rows(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>, %other: tensor<?x32xf32>, %w: tensor<1x32x32xf32>) -> tensor<32x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  %split = tensor.expand_shape %counts [[0, 1]] output_shape [8, 1] : tensor<8xi32> into tensor<8x1xi32>
  // expected-remark @+1 {{kept in one chunk: 'tamoe.grouped_matmul' reads rows that did not arrive with the exchange}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %split on @ep : tensor<32x32xf32>, tensor<8x1xi32> -> tensor<?x32xf32>
  %y = tamoe.grouped_matmul %other, %recv_counts, %w : tensor<?x32xf32>, tensor<8x1xi32>, tensor<1x32x32xf32> -> tensor<?x32xf32>
  %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<?x32xf32>, tensor<8x1xi32> -> tensor<32x32xf32>
  return %back : tensor<32x32xf32>
}

// -----

// A named element-wise op is row-wise only on rows that arrived with the
// exchange: here it multiplies them with rows from elsewhere.
shard.grid @ep(shape = 8)
func.func @named_foreign_rows(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>, %other: tensor<?x32xf32>) -> tensor<32x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-remark @+1 {{kept in one chunk: 'linalg.mul' reads rows that did not arrive with the exchange}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<?x32xf32>
  %c0 = arith.constant 0 : index
  %n = tensor.dim %recv, %c0 : tensor<?x32xf32>
  %e = tensor.empty(%n) : tensor<?x32xf32>
  %y = linalg.mul ins(%recv, %other : tensor<?x32xf32>, tensor<?x32xf32>) outs(%e : tensor<?x32xf32>) -> tensor<?x32xf32>
  %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<?x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  return %back : tensor<32x32xf32>
}

// -----

// A named op that is not element-wise (a transpose) keeps the layer whole.
shard.grid @ep(shape = 8)
func.func @named_not_rowwise(%tokens: tensor<16x32xf32>, %ids: tensor<16x2xi32>, %t: tensor<32x32xf32>) -> tensor<32x32xf32> {
  %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids : tensor<16x32xf32>, tensor<16x2xi32> -> tensor<32x32xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
  // expected-remark @+1 {{kept in one chunk: 'linalg.transpose' reads what it received but is not a row-wise step}}
  %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  %y = linalg.transpose ins(%recv : tensor<32x32xf32>) outs(%t : tensor<32x32xf32>) permutation = [1, 0]
  %back, %back_counts = tamoe.all_to_all %y, %recv_counts on @ep : tensor<32x32xf32>, tensor<8xi32> -> tensor<32x32xf32>
  return %back : tensor<32x32xf32>
}
