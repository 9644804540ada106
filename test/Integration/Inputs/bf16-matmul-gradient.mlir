// A bf16 layer's weight gradient sums over its tokens: c = a b sums 8
// products per element, db = a^T dc sums 64. bf16-rounds-once.test
// runs it with host loops and device-resident. Outputs (widened to f32):
// a (out0), b (out1), dc (out2), c (out3), db (out4).
func.func private @tamoeOutputBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}
func.func private @tamoeRandomBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}

func.func @layer(%a: tensor<64x8xbf16>, %b: tensor<8x8xbf16>) -> tensor<64x8xbf16> {
  %zero = arith.constant 0.0 : bf16
  %empty = tensor.empty() : tensor<64x8xbf16>
  %init = linalg.fill ins(%zero : bf16) outs(%empty : tensor<64x8xbf16>) -> tensor<64x8xbf16>
  %c = linalg.matmul ins(%a, %b : tensor<64x8xbf16>, tensor<8x8xbf16>) outs(%init : tensor<64x8xbf16>) -> tensor<64x8xbf16>
  return %c : tensor<64x8xbf16>
}

func.func @output(%t: tensor<?x?xbf16>, %index: i64) {
  %m = bufferization.to_buffer %t read_only : tensor<?x?xbf16> to memref<?x?xbf16>
  %u = memref.cast %m : memref<?x?xbf16> to memref<*xbf16>
  call @tamoeOutputBF16(%u, %index) : (memref<*xbf16>, i64) -> ()
  return
}

func.func @main() {
  %c0 = arith.constant 0 : i64
  %c1 = arith.constant 1 : i64
  %c2 = arith.constant 2 : i64
  %c3 = arith.constant 3 : i64
  %c4 = arith.constant 4 : i64
  %am = memref.alloc() : memref<64x8xbf16>
  %bm = memref.alloc() : memref<8x8xbf16>
  %dm = memref.alloc() : memref<64x8xbf16>
  %au = memref.cast %am : memref<64x8xbf16> to memref<*xbf16>
  %bu = memref.cast %bm : memref<8x8xbf16> to memref<*xbf16>
  %du = memref.cast %dm : memref<64x8xbf16> to memref<*xbf16>
  call @tamoeRandomBF16(%au, %c0) : (memref<*xbf16>, i64) -> ()
  call @tamoeRandomBF16(%bu, %c1) : (memref<*xbf16>, i64) -> ()
  call @tamoeRandomBF16(%du, %c2) : (memref<*xbf16>, i64) -> ()
  call @tamoeOutputBF16(%au, %c0) : (memref<*xbf16>, i64) -> ()
  call @tamoeOutputBF16(%bu, %c1) : (memref<*xbf16>, i64) -> ()
  call @tamoeOutputBF16(%du, %c2) : (memref<*xbf16>, i64) -> ()
  %a = bufferization.to_tensor %am restrict : memref<64x8xbf16> to tensor<64x8xbf16>
  %b = bufferization.to_tensor %bm restrict : memref<8x8xbf16> to tensor<8x8xbf16>
  %dc = bufferization.to_tensor %dm restrict : memref<64x8xbf16> to tensor<64x8xbf16>
  %c, %da, %db = tamoe.vjp @layer(%a, %b) cotangents(%dc) : (tensor<64x8xbf16>, tensor<8x8xbf16>), (tensor<64x8xbf16>) -> (tensor<64x8xbf16>), (tensor<64x8xbf16>, tensor<8x8xbf16>)
  %cd = tensor.cast %c : tensor<64x8xbf16> to tensor<?x?xbf16>
  %dbd = tensor.cast %db : tensor<8x8xbf16> to tensor<?x?xbf16>
  call @output(%cd, %c3) : (tensor<?x?xbf16>, i64) -> ()
  call @output(%dbd, %c4) : (tensor<?x?xbf16>, i64) -> ()
  return
}
