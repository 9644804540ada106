// A branch that yields views of its operands: bufferization copies its
// results out of strided memrefs (memref.copy, lowered to a memrefCopy
// call), which libtamoe_rt provides; memref-copy.test runs it.
func.func private @tamoeOutputF32(memref<*xf32>, i64) attributes {llvm.emit_c_interface}

func.func @pick(%c: i1, %a: tensor<4x6xf32>, %b: tensor<4x6xf32>) -> tensor<2x3xf32> {
  %r = scf.if %c -> tensor<2x3xf32> {
    %s = tensor.extract_slice %a[1, 2] [2, 3] [1, 1] : tensor<4x6xf32> to tensor<2x3xf32>
    scf.yield %s : tensor<2x3xf32>
  } else {
    %s = tensor.extract_slice %b[0, 0] [2, 3] [2, 2] : tensor<4x6xf32> to tensor<2x3xf32>
    scf.yield %s : tensor<2x3xf32>
  }
  return %r : tensor<2x3xf32>
}

func.func @main() {
  %a = arith.constant dense<[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 11.0, 12.0, 13.0, 14.0, 15.0], [20.0, 21.0, 22.0, 23.0, 24.0, 25.0], [30.0, 31.0, 32.0, 33.0, 34.0, 35.0]]> : tensor<4x6xf32>
  %b = arith.constant dense<[[100.0, 101.0, 102.0, 103.0, 104.0, 105.0], [110.0, 111.0, 112.0, 113.0, 114.0, 115.0], [120.0, 121.0, 122.0, 123.0, 124.0, 125.0], [130.0, 131.0, 132.0, 133.0, 134.0, 135.0]]> : tensor<4x6xf32>
  %true = arith.constant true
  %false = arith.constant false
  %x = call @pick(%true, %a, %b) : (i1, tensor<4x6xf32>, tensor<4x6xf32>) -> tensor<2x3xf32>
  %y = call @pick(%false, %a, %b) : (i1, tensor<4x6xf32>, tensor<4x6xf32>) -> tensor<2x3xf32>
  %xm = bufferization.to_buffer %x : tensor<2x3xf32> to memref<2x3xf32>
  %ym = bufferization.to_buffer %y : tensor<2x3xf32> to memref<2x3xf32>
  %xu = memref.cast %xm : memref<2x3xf32> to memref<*xf32>
  %yu = memref.cast %ym : memref<2x3xf32> to memref<*xf32>
  %c0 = arith.constant 0 : i64
  %c1 = arith.constant 1 : i64
  call @tamoeOutputF32(%xu, %c0) : (memref<*xf32>, i64) -> ()
  call @tamoeOutputF32(%yu, %c1) : (memref<*xf32>, i64) -> ()
  return
}
