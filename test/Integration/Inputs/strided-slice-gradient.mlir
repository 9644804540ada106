// The gradient of a strided slice at a dynamic offset is an insert_slice
// at that offset: its lowering computes the view's offset with affine.apply
// (expand-strided-metadata), which lower-affine must then lower.
// strided-slice-gradient.test runs it.
func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}

// Rows i and i + 2 of x.
func.func @rows(%x: tensor<6x3xf32>, %i: index) -> tensor<2x3xf32> {
  %s = tensor.extract_slice %x[%i, 0] [2, 3] [2, 1] : tensor<6x3xf32> to tensor<2x3xf32>
  return %s : tensor<2x3xf32>
}

func.func @main() {
  %x = arith.constant dense<0.5> : tensor<6x3xf32>
  %d = arith.constant dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]> : tensor<2x3xf32>
  %i = arith.constant 1 : index
  %s, %dx = tamoe.vjp @rows(%x, %i) cotangents(%d) : (tensor<6x3xf32>, index), (tensor<2x3xf32>) -> (tensor<2x3xf32>), (tensor<6x3xf32>)
  %m = bufferization.to_buffer %dx : tensor<6x3xf32> to memref<6x3xf32>
  %u = memref.cast %m : memref<6x3xf32> to memref<*xf32>
  %c0 = arith.constant 0 : i64
  call @tamoeOutputF32(%u, %c0) : (memref<*xf32>, i64) -> ()
  return
}
