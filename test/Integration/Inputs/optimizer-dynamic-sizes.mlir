// Steps of tamoe.adam and tamoe.sgd on operands of dynamic size (4
// elements each); optimizer-dynamic-sizes.test runs it as it is and with
// one operand of 2 elements.
func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}

func.func @out(%t: tensor<?xf32>, %i: i64) {
  %m = bufferization.to_buffer %t : tensor<?xf32> to memref<?xf32>
  %u = memref.cast %m : memref<?xf32> to memref<*xf32>
  call @tamoeOutputF32(%u, %i) : (memref<*xf32>, i64) -> ()
  return
}

func.func @adam(%p: tensor<?xf32>, %g: tensor<?xf32>, %m: tensor<?xf32>, %v: tensor<?xf32>) -> tensor<?xf32> {
  %lr = arith.constant 0.1 : f32
  %step = arith.constant 1 : i64
  %r:3 = tamoe.adam %p, %g, %m, %v step %step lr %lr : tensor<?xf32>
  return %r#0 : tensor<?xf32>
}

func.func @sgd(%p: tensor<?xf32>, %g: tensor<?xf32>, %v: tensor<?xf32>) -> tensor<?xf32> {
  %lr = arith.constant 0.1 : f32
  %r:2 = tamoe.sgd %p, %g, %v lr %lr momentum 0.9 : tensor<?xf32>
  return %r#0 : tensor<?xf32>
}

func.func @main() {
  %p = arith.constant dense<[1.0, 2.0, 3.0, 4.0]> : tensor<4xf32>
  %g = arith.constant dense<[0.5, -0.5, 1.0, 2.0]> : tensor<4xf32>
  %m = arith.constant dense<0.0> : tensor<4xf32>
  %v = arith.constant dense<0.0> : tensor<4xf32>
  %pd = tensor.cast %p : tensor<4xf32> to tensor<?xf32>
  %gd = tensor.cast %g : tensor<4xf32> to tensor<?xf32>
  %md = tensor.cast %m : tensor<4xf32> to tensor<?xf32>
  %vd = tensor.cast %v : tensor<4xf32> to tensor<?xf32>
  %a = call @adam(%pd, %gd, %md, %vd) : (tensor<?xf32>, tensor<?xf32>, tensor<?xf32>, tensor<?xf32>) -> tensor<?xf32>
  %s = call @sgd(%pd, %gd, %vd) : (tensor<?xf32>, tensor<?xf32>, tensor<?xf32>) -> tensor<?xf32>
  %c0 = arith.constant 0 : i64
  %c1 = arith.constant 1 : i64
  call @out(%a, %c0) : (tensor<?xf32>, i64) -> ()
  call @out(%s, %c1) : (tensor<?xf32>, i64) -> ()
  return
}
