// The gradient of tamoe.aux_loss with respect to weights that come from an
// argument (aux-loss-weights-gradient.test runs it). S = 2 tokens, E = 2
// experts, k = 1; token 0 goes to expert 0, token 1 to expert 1, so
// f = [1/2, 1/2] and P = [(0.75 + 0.5) / 2, (0.25 + 0.5) / 2]; L = E sum_e
// w_e f_e P_e gives dL/dw = E f P = [0.625, 0.375], and dL/dprobs[t, e] =
// E w_e f_e / S = [1, 2] with w = [2, 4] in every row.
func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}

func.func @loss(%probs: tensor<2x2xf32>, %ids: tensor<2x1xi32>, %w: tensor<2xf32>) -> tensor<f32> {
  %l = tamoe.aux_loss topology %probs, %ids weights %w : tensor<2x2xf32>, tensor<2x1xi32>, tensor<2xf32> -> tensor<f32>
  return %l : tensor<f32>
}

func.func @main() {
  %probs = arith.constant dense<[[0.75, 0.25], [0.5, 0.5]]> : tensor<2x2xf32>
  %ids = arith.constant dense<[[0], [1]]> : tensor<2x1xi32>
  %w = arith.constant dense<[2.0, 4.0]> : tensor<2xf32>
  %d = arith.constant dense<1.0> : tensor<f32>
  %l, %dp, %dw = tamoe.vjp @loss(%probs, %ids, %w) cotangents(%d) : (tensor<2x2xf32>, tensor<2x1xi32>, tensor<2xf32>), (tensor<f32>) -> (tensor<f32>), (tensor<2x2xf32>, tensor<2xf32>)
  %mp = bufferization.to_buffer %dp : tensor<2x2xf32> to memref<2x2xf32>
  %up = memref.cast %mp : memref<2x2xf32> to memref<*xf32>
  %c0 = arith.constant 0 : i64
  call @tamoeOutputF32(%up, %c0) : (memref<*xf32>, i64) -> ()
  %mw = bufferization.to_buffer %dw : tensor<2xf32> to memref<2xf32>
  %uw = memref.cast %mw : memref<2xf32> to memref<*xf32>
  %c1 = arith.constant 1 : i64
  call @tamoeOutputF32(%uw, %c1) : (memref<*xf32>, i64) -> ()
  return
}
