// tamoe.dispatch, tamoe.combine and tamoe.combine_grad on operands whose
// rows are dynamic (4 tokens each); operand-rows.test runs it as it is and
// with one operand of 2 rows.
func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
func.func private @tamoeOutputI32(memref<*xi32>, i64) attributes {llvm.emit_c_interface}

func.func @outf(%t: tensor<?x2xf32>, %i: i64) {
  %m = bufferization.to_buffer %t : tensor<?x2xf32> to memref<?x2xf32>
  %u = memref.cast %m : memref<?x2xf32> to memref<*xf32>
  call @tamoeOutputF32(%u, %i) : (memref<*xf32>, i64) -> ()
  return
}

func.func @outi(%t: tensor<?x2xi32>, %i: i64) {
  %m = bufferization.to_buffer %t : tensor<?x2xi32> to memref<?x2xi32>
  %u = memref.cast %m : memref<?x2xi32> to memref<*xi32>
  call @tamoeOutputI32(%u, %i) : (memref<*xi32>, i64) -> ()
  return
}

func.func @dispatch(%tokens: tensor<?x2xf32>, %ids: tensor<?x2xi32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %rows, %counts, %pos, %dropped = tamoe.dispatch %tokens, %ids : tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x2xf32>, tensor<4xi32>, tensor<?x2xi32>, tensor<i64>
  return %rows, %pos : tensor<?x2xf32>, tensor<?x2xi32>
}

func.func @combine(%outputs: tensor<4x2xf32>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> tensor<?x2xf32> {
  %c = tamoe.combine %outputs, %pos, %w : tensor<4x2xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<?x2xf32>
  return %c : tensor<?x2xf32>
}

func.func @combine_grad(%d: tensor<?x2xf32>, %outputs: tensor<4x2xf32>, %pos: tensor<?x2xi32>, %w: tensor<?x2xf32>) -> (tensor<4x2xf32>, tensor<?x2xf32>) {
  %g, %gw = tamoe.combine_grad %d, %outputs, %pos weights %w : tensor<?x2xf32>, tensor<4x2xf32>, tensor<?x2xi32>, tensor<?x2xf32> -> tensor<4x2xf32>, tensor<?x2xf32>
  return %g, %gw : tensor<4x2xf32>, tensor<?x2xf32>
}

func.func @main() {
  %tokens = arith.constant dense<[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]> : tensor<4x2xf32>
  %ids = arith.constant dense<[[0, 1], [1, 2], [2, 3], [3, 0]]> : tensor<4x2xi32>
  %outputs = arith.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]> : tensor<4x2xf32>
  %pos = arith.constant dense<[[0, 1], [1, 2], [2, 3], [3, -1]]> : tensor<4x2xi32>
  %w = arith.constant dense<[[0.5, 0.5], [1.0, 0.0], [0.25, 0.75], [2.0, 0.0]]> : tensor<4x2xf32>
  %d = arith.constant dense<[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]]> : tensor<4x2xf32>
  %tokensd = tensor.cast %tokens : tensor<4x2xf32> to tensor<?x2xf32>
  %idsd = tensor.cast %ids : tensor<4x2xi32> to tensor<?x2xi32>
  %posd = tensor.cast %pos : tensor<4x2xi32> to tensor<?x2xi32>
  %wd = tensor.cast %w : tensor<4x2xf32> to tensor<?x2xf32>
  %dd = tensor.cast %d : tensor<4x2xf32> to tensor<?x2xf32>
  %rows, %rpos = call @dispatch(%tokensd, %idsd) : (tensor<?x2xf32>, tensor<?x2xi32>) -> (tensor<?x2xf32>, tensor<?x2xi32>)
  %c = call @combine(%outputs, %posd, %wd) : (tensor<4x2xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> tensor<?x2xf32>
  %g, %gw = call @combine_grad(%dd, %outputs, %posd, %wd) : (tensor<?x2xf32>, tensor<4x2xf32>, tensor<?x2xi32>, tensor<?x2xf32>) -> (tensor<4x2xf32>, tensor<?x2xf32>)
  %gd = tensor.cast %g : tensor<4x2xf32> to tensor<?x2xf32>
  %i0 = arith.constant 0 : i64
  %i1 = arith.constant 1 : i64
  %i2 = arith.constant 2 : i64
  %i3 = arith.constant 3 : i64
  %i4 = arith.constant 4 : i64
  call @outf(%rows, %i0) : (tensor<?x2xf32>, i64) -> ()
  call @outi(%rpos, %i1) : (tensor<?x2xi32>, i64) -> ()
  call @outf(%c, %i2) : (tensor<?x2xf32>, i64) -> ()
  call @outf(%gd, %i3) : (tensor<?x2xf32>, i64) -> ()
  call @outf(%gw, %i4) : (tensor<?x2xf32>, i64) -> ()
  return
}
