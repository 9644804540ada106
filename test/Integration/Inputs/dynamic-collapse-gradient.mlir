// The gradient of a collapse_shape whose group has two dynamic sizes (batch
// x sequence flattened into rows) is a tensor.reshape to the source's
// sizes: MLIR 22's expand-strided-metadata crashes on the expand_shape
// that would otherwise undo it. dynamic-collapse-gradient.test runs it with
// host loops and device-resident. Outputs: d (out0) and dx (out1).
func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}
func.func private @tamoeRandomF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}

// rows(x) = 2 * flatten(x): the gradient is 2 * d in x's shape.
func.func @rows(%x: tensor<?x?x3xf32>) -> tensor<?x3xf32> {
  %r = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x3xf32> into tensor<?x3xf32>
  %s = arith.addf %r, %r : tensor<?x3xf32>
  return %s : tensor<?x3xf32>
}

func.func @main() {
  %c0 = arith.constant 0 : i64
  %c1 = arith.constant 1 : i64
  %xm = memref.alloc() : memref<2x2x3xf32>
  %dm = memref.alloc() : memref<4x3xf32>
  %xu = memref.cast %xm : memref<2x2x3xf32> to memref<*xf32>
  %du = memref.cast %dm : memref<4x3xf32> to memref<*xf32>
  call @tamoeRandomF32(%xu, %c0) : (memref<*xf32>, i64) -> ()
  call @tamoeRandomF32(%du, %c1) : (memref<*xf32>, i64) -> ()
  %x0 = bufferization.to_tensor %xm restrict : memref<2x2x3xf32> to tensor<2x2x3xf32>
  %d0 = bufferization.to_tensor %dm restrict : memref<4x3xf32> to tensor<4x3xf32>
  %x = tensor.cast %x0 : tensor<2x2x3xf32> to tensor<?x?x3xf32>
  %d = tensor.cast %d0 : tensor<4x3xf32> to tensor<?x3xf32>
  %s, %dx = tamoe.vjp @rows(%x) cotangents(%d) : (tensor<?x?x3xf32>), (tensor<?x3xf32>) -> (tensor<?x3xf32>), (tensor<?x?x3xf32>)
  %dx0 = tensor.cast %dx : tensor<?x?x3xf32> to tensor<2x2x3xf32>
  %m = bufferization.to_buffer %dx0 read_only : tensor<2x2x3xf32> to memref<2x2x3xf32>
  %u = memref.cast %m : memref<2x2x3xf32> to memref<*xf32>
  call @tamoeOutputF32(%du, %c0) : (memref<*xf32>, i64) -> ()
  call @tamoeOutputF32(%u, %c1) : (memref<*xf32>, i64) -> ()
  return
}
