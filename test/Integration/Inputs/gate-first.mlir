// A program whose first runtime call is a lowered tamoe op (no allocation
// or input before it): what program-errors.test needs to see the backend
// checks of tamoe_rt_program_enter before a context exists.
module {
  func.func @main() {
    %logits = arith.constant dense<[[1.0, 2.0], [3.0, 0.5]]> : tensor<2x2xf32>
    %ids, %weights, %probs = tamoe.gate %logits top 1 softmax : tensor<2x2xf32> -> tensor<2x1xi32>, tensor<2x1xf32>, tensor<2x2xf32>
    return
  }
}
