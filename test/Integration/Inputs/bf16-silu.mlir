// A bf16 silu and its gradient, elementwise generics of several ops each.
// bf16-rounds-once.test runs it with host loops and device-resident.
// Outputs (widened to f32): x (out0), dy (out1), y = silu(x) (out2), dx
// (out3).
func.func private @tamoeOutputBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}
func.func private @tamoeRandomBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}

#map = affine_map<(d0, d1) -> (d0, d1)>
func.func @layer(%x: tensor<64x8xbf16>) -> tensor<64x8xbf16> {
  %empty = tensor.empty() : tensor<64x8xbf16>
  %y = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<64x8xbf16>) outs(%empty : tensor<64x8xbf16>) {
  ^bb0(%v: bf16, %o: bf16):
    %one = arith.constant 1.0 : bf16
    %n = arith.negf %v : bf16
    %e = math.exp %n : bf16
    %d = arith.addf %one, %e : bf16
    %s = arith.divf %v, %d : bf16
    linalg.yield %s : bf16
  } -> tensor<64x8xbf16>
  return %y : tensor<64x8xbf16>
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
  %xm = memref.alloc() : memref<64x8xbf16>
  %dm = memref.alloc() : memref<64x8xbf16>
  %xu = memref.cast %xm : memref<64x8xbf16> to memref<*xbf16>
  %du = memref.cast %dm : memref<64x8xbf16> to memref<*xbf16>
  call @tamoeRandomBF16(%xu, %c0) : (memref<*xbf16>, i64) -> ()
  call @tamoeRandomBF16(%du, %c1) : (memref<*xbf16>, i64) -> ()
  call @tamoeOutputBF16(%xu, %c0) : (memref<*xbf16>, i64) -> ()
  call @tamoeOutputBF16(%du, %c1) : (memref<*xbf16>, i64) -> ()
  %x = bufferization.to_tensor %xm restrict : memref<64x8xbf16> to tensor<64x8xbf16>
  %dy = bufferization.to_tensor %dm restrict : memref<64x8xbf16> to tensor<64x8xbf16>
  %y, %dx = tamoe.vjp @layer(%x) cotangents(%dy) : (tensor<64x8xbf16>), (tensor<64x8xbf16>) -> (tensor<64x8xbf16>), (tensor<64x8xbf16>)
  %yd = tensor.cast %y : tensor<64x8xbf16> to tensor<?x?xbf16>
  %dxd = tensor.cast %dx : tensor<64x8xbf16> to tensor<?x?xbf16>
  call @output(%yd, %c2) : (tensor<?x?xbf16>, i64) -> ()
  call @output(%dxd, %c3) : (tensor<?x?xbf16>, i64) -> ()
  return
}
