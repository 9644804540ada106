// A bf16 bias's gradient sums the rows' gradients: y = x + bias broadcast
// over 64 rows, so dbias = the column sums of dy (a linalg.reduce).
// bf16-rounds-once.test runs it with host loops (device-resident
// lowering takes no linalg.reduce). Outputs (widened to f32): dy (out0),
// dbias (out1).
func.func private @tamoeOutputBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}
func.func private @tamoeRandomBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}

func.func @biased(%x: tensor<64x8xbf16>, %bias: tensor<8xbf16>) -> tensor<64x8xbf16> {
  %empty = tensor.empty() : tensor<64x8xbf16>
  %b = linalg.broadcast ins(%bias : tensor<8xbf16>) outs(%empty : tensor<64x8xbf16>) dimensions = [0]
  %y = arith.addf %x, %b : tensor<64x8xbf16>
  return %y : tensor<64x8xbf16>
}

func.func @main() {
  %c0 = arith.constant 0 : i64
  %c1 = arith.constant 1 : i64
  %xm = memref.alloc() : memref<64x8xbf16>
  %bm = memref.alloc() : memref<8xbf16>
  %dm = memref.alloc() : memref<64x8xbf16>
  %xu = memref.cast %xm : memref<64x8xbf16> to memref<*xbf16>
  %bu = memref.cast %bm : memref<8xbf16> to memref<*xbf16>
  %du = memref.cast %dm : memref<64x8xbf16> to memref<*xbf16>
  call @tamoeRandomBF16(%xu, %c0) : (memref<*xbf16>, i64) -> ()
  call @tamoeRandomBF16(%bu, %c1) : (memref<*xbf16>, i64) -> ()
  call @tamoeRandomBF16(%du, %c0) : (memref<*xbf16>, i64) -> ()
  call @tamoeOutputBF16(%du, %c0) : (memref<*xbf16>, i64) -> ()
  %x = bufferization.to_tensor %xm restrict : memref<64x8xbf16> to tensor<64x8xbf16>
  %bias = bufferization.to_tensor %bm restrict : memref<8xbf16> to tensor<8xbf16>
  %dy = bufferization.to_tensor %dm restrict : memref<64x8xbf16> to tensor<64x8xbf16>
  %y, %dx, %dbias = tamoe.vjp @biased(%x, %bias) cotangents(%dy) : (tensor<64x8xbf16>, tensor<8xbf16>), (tensor<64x8xbf16>) -> (tensor<64x8xbf16>), (tensor<64x8xbf16>, tensor<8xbf16>)
  %m = bufferization.to_buffer %dbias read_only : tensor<8xbf16> to memref<8xbf16>
  %u = memref.cast %m : memref<8xbf16> to memref<*xbf16>
  call @tamoeOutputBF16(%u, %c1) : (memref<*xbf16>, i64) -> ()
  return
}
