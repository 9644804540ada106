// tamoe-expand-gate's loss in half precision and without tokens: counts,
// sums and S^2 are kept in f32 (f16 overflowed S^2 = 65536 and gave 0, or
// NaN; bf16 stopped counting at 256), and no tokens give 0, as the
// runtime's tamoe_rt_aux_loss does, not 0 * inf.
// RUN: tamoe-opt %s --tamoe-expand-gate --one-shot-bufferize=bufferize-function-boundaries \
// RUN:   --convert-linalg-to-loops --convert-scf-to-cf --expand-strided-metadata \
// RUN:   --lower-affine --convert-to-llvm --reconcile-unrealized-casts \
// RUN: | mlir-runner -e main -entry-point-result=void \
// RUN:   -shared-libs=%mlir_lib_dir/libmlir_runner_utils.so,%mlir_lib_dir/libmlir_c_runner_utils.so \
// RUN: | FileCheck %s

func.func private @printMemrefF32(memref<*xf32>)

func.func @print(%value: f32) {
  %t = tensor.from_elements %value : tensor<f32>
  %m = bufferization.to_buffer %t : tensor<f32> to memref<f32>
  %u = memref.cast %m : memref<f32> to memref<*xf32>
  call @printMemrefF32(%u) : (memref<*xf32>) -> ()
  return
}

func.func @no_tokens(%probs: tensor<?x2xf32>, %ids: tensor<?x1xi32>) -> tensor<f32> {
  %l = tamoe.aux_loss switch %probs, %ids : tensor<?x2xf32>, tensor<?x1xi32> -> tensor<f32>
  return %l : tensor<f32>
}

func.func @main() {
  // Every token to expert 0 with probabilities [0.5, 0.5]: f = [1, 0],
  // P = [0.5, 0.5], L = 2 * (1 * 0.5) = 1, at any number of tokens.
  %ids256 = arith.constant dense<0> : tensor<256x1xi32>
  %probs_f16 = arith.constant dense<0.5> : tensor<256x2xf16>
  %l_f16 = tamoe.aux_loss switch %probs_f16, %ids256 : tensor<256x2xf16>, tensor<256x1xi32> -> tensor<f16>
  %x_f16 = tensor.extract %l_f16[] : tensor<f16>
  %y_f16 = arith.extf %x_f16 : f16 to f32
  call @print(%y_f16) : (f32) -> ()
  // CHECK: data =
  // CHECK-NEXT: [1]

  // Weights in the type of the probabilities: 1 / 2 for expert 0.
  %ids512 = arith.constant dense<0> : tensor<512x1xi32>
  %probs_bf16 = arith.constant dense<0.5> : tensor<512x2xbf16>
  %w_bf16 = arith.constant dense<[0.5, 4.0]> : tensor<2xbf16>
  %l_bf16 = tamoe.aux_loss topology %probs_bf16, %ids512 weights %w_bf16 : tensor<512x2xbf16>, tensor<512x1xi32>, tensor<2xbf16> -> tensor<bf16>
  %x_bf16 = tensor.extract %l_bf16[] : tensor<bf16>
  %y_bf16 = arith.extf %x_bf16 : bf16 to f32
  call @print(%y_bf16) : (f32) -> ()
  // CHECK: data =
  // CHECK-NEXT: [0.5]

  %c0 = arith.constant 0 : index
  %p0 = tensor.empty(%c0) : tensor<?x2xf32>
  %i0 = tensor.empty(%c0) : tensor<?x1xi32>
  %l0 = call @no_tokens(%p0, %i0) : (tensor<?x2xf32>, tensor<?x1xi32>) -> tensor<f32>
  %x0 = tensor.extract %l0[] : tensor<f32>
  call @print(%x0) : (f32) -> ()
  // CHECK: data =
  // CHECK-NEXT: [0]
  return
}
