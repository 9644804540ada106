// RUN: tamoe-opt %s -split-input-file --convert-tamoe-to-runtime=device-resident --canonicalize -verify-diagnostics | FileCheck %s

// device-resident: the dense compute around a layer becomes runtime calls
// too, so no loop is left on the host. The context is asked for without
// host loops (0).
#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  // CHECK-LABEL: func.func @dense
  // CHECK-SAME: (%[[X:.*]]: tensor<16x32xf32>, %[[W:.*]]: tensor<32x8xf32>, %[[C:.*]]: tensor<16x8xf32>, %[[H:.*]]: tensor<?x8xf32>)
  func.func @dense(%x: tensor<16x32xf32>, %w: tensor<32x8xf32>, %c: tensor<16x8xf32>, %h: tensor<?x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<?x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) {
    // CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[C32:.*]] = arith.constant 32 : index
    // CHECK-DAG: %[[C128:.*]] = arith.constant 128 : index
    // CHECK-DAG: %[[ADD:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[SUB:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[MUL:.*]] = arith.constant 2 : i32
    // CHECK-DAG: %[[RELU:.*]] = arith.constant 3 : i32
    // CHECK-DAG: %[[NULL:.*]] = llvm.mlir.zero : !llvm.ptr
    // CHECK-NOT: linalg.
    // A zero fill is what a plain product starts from: no init (null).
    // host_loops = 0; the interface version, TAMOE_RT_ABI_VERSION = 1.
    // CHECK: %[[CTX:.*]] = call @tamoe_rt_program_enter(%[[ADD]], %[[SUB]])
    // CHECK: %[[P:.*]] = memref.alloc() : memref<16x8xf32>
    // Neither operand transposed (0, 0).
    // Every operand f32 (0, the code of ADD too).
    // CHECK: call @tamoe_rt_matmul(%[[CTX]], %[[ADD]], %[[ADD]], %[[ADD]], %{{.*}}, %{{.*}}, %[[C16]], %[[C32]], %[[C8]], %[[ADD]], %[[ADD]], %[[NULL]], %{{.*}})
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<16x8xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<16x8xf32>) -> tensor<16x8xf32>
    %p = linalg.matmul ins(%x, %w : tensor<16x32xf32>, tensor<32x8xf32>) outs(%f : tensor<16x8xf32>) -> tensor<16x8xf32>
    // Any other init is accumulated into.
    // CHECK: %[[INIT:.*]] = bufferization.to_buffer %[[C]] read_only
    // CHECK: %[[INITPTR:.*]] = memref.extract_aligned_pointer_as_index %[[INIT]]
    // CHECK: %[[INITP:.*]] = llvm.inttoptr
    // CHECK: %[[ACC:.*]] = memref.alloc() : memref<16x8xf32>
    // CHECK: call @tamoe_rt_matmul(%{{.*}}, %[[ADD]], %[[ADD]], %[[ADD]], %{{.*}}, %{{.*}}, %[[C16]], %[[C32]], %[[C8]], %[[ADD]], %[[ADD]], %[[INITP]], %{{.*}})
    %acc = linalg.matmul ins(%x, %w : tensor<16x32xf32>, tensor<32x8xf32>) outs(%c : tensor<16x8xf32>) -> tensor<16x8xf32>
    // relu over a dynamic number of rows (n = rows * 8), max(0, x) too.
    // CHECK: %[[ROWS:.*]] = tensor.dim %[[H]], %[[C0]]
    // CHECK: memref.alloc(%[[ROWS]]) : memref<?x8xf32>
    // CHECK: %[[N:.*]] = arith.muli %[[ROWS]], %[[C8]] : index
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[RELU]], %[[ADD]], %{{.*}}, %[[NULL]], %[[N]], %{{.*}})
    %c0 = arith.constant 0 : index
    %n = tensor.dim %h, %c0 : tensor<?x8xf32>
    %he = tensor.empty(%n) : tensor<?x8xf32>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<?x8xf32>) outs(%he : tensor<?x8xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = arith.maximumf %zero, %in : f32
      linalg.yield %m : f32
    } -> tensor<?x8xf32>
    // Operands in the body's order: acc - p.
    // CHECK: %[[ACCPTR:.*]] = memref.extract_aligned_pointer_as_index %[[ACC]]
    // CHECK: %[[ACCP:.*]] = llvm.inttoptr
    // CHECK: %[[PPTR:.*]] = memref.extract_aligned_pointer_as_index %[[P]]
    // CHECK: %[[PP:.*]] = llvm.inttoptr
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[SUB]], %[[ADD]], %[[ACCP]], %[[PP]], %[[C128]], %{{.*}})
    %sub = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel"]} ins(%p, %acc : tensor<16x8xf32>, tensor<16x8xf32>) outs(%e : tensor<16x8xf32>) {
    ^bb0(%a: f32, %b: f32, %out: f32):
      %s = arith.subf %b, %a : f32
      linalg.yield %s : f32
    } -> tensor<16x8xf32>
    // Named linalg ops and arith on tensors.
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[ADD]], %[[ADD]], %{{.*}}, %{{.*}}, %[[C128]], %{{.*}})
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[MUL]], %[[ADD]], %{{.*}}, %{{.*}}, %[[C128]], %{{.*}})
    %add = linalg.add ins(%p, %sub : tensor<16x8xf32>, tensor<16x8xf32>) outs(%e : tensor<16x8xf32>) -> tensor<16x8xf32>
    %mul = arith.mulf %add, %c : tensor<16x8xf32>
    // CHECK-NOT: linalg.
    return %p, %acc, %relu, %sub, %mul : tensor<16x8xf32>, tensor<16x8xf32>, tensor<?x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>
  }
  // CHECK-DAG: func.func private @tamoe_rt_program_enter(i32, i32) -> !llvm.ptr
  // CHECK-DAG: func.func private @tamoe_rt_matmul(!llvm.ptr, i32, i32, i32, !llvm.ptr, !llvm.ptr, index, index, index, i32, i32, !llvm.ptr, !llvm.ptr) -> i32
  // CHECK-DAG: func.func private @tamoe_rt_map(!llvm.ptr, i32, i32, !llvm.ptr, !llvm.ptr, index, !llvm.ptr) -> i32
}

// -----

// A constant operand goes to the backend once (tamoe_rt_program_constant);
// a row of a constant table is its address plus row * 4 floats * 4 bytes.
module {
  // CHECK-LABEL: func.func @constants
  // CHECK-SAME: (%[[PROBS:.*]]: tensor<8x4xf32>, %[[IDS:.*]]: tensor<8x1xi32>, %[[ROW:.*]]: index)
  func.func @constants(%probs: tensor<8x4xf32>, %ids: tensor<8x1xi32>, %row: index) -> tensor<f32> {
    // CHECK-DAG: %[[C16:.*]] = arith.constant 16 : index
    // CHECK-DAG: %[[TABLE:.*]] = arith.constant dense<{{.*}}> : tensor<2x4xf32>
    // CHECK-NOT: tensor.extract_slice
    // CHECK: bufferization.to_buffer %[[TABLE]] read_only
    // CHECK: %[[BASE:.*]] = llvm.inttoptr
    // CHECK: %[[BYTES:.*]] = arith.muli %[[ROW]], %[[C16]] : index
    // CHECK: %[[OFFSET:.*]] = arith.index_cast %[[BYTES]] : index to i64
    // CHECK: %[[HOST:.*]] = llvm.getelementptr %[[BASE]][%[[OFFSET]]] : (!llvm.ptr, i64) -> !llvm.ptr, i8
    // CHECK: %[[DEVICE:.*]] = call @tamoe_rt_program_constant(%[[HOST]], %[[C16]])
    // CHECK: call @tamoe_rt_aux_loss(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[DEVICE]], %{{.*}})
    %table = arith.constant dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]> : tensor<2x4xf32>
    %weights = tensor.extract_slice %table[%row, 0] [1, 4] [1, 1] : tensor<2x4xf32> to tensor<4xf32>
    %loss = tamoe.aux_loss topology %probs, %ids weights %weights : tensor<8x4xf32>, tensor<8x1xi32>, tensor<4xf32> -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

module {
  func.func @not_elementwise(%x: tensor<16xf32>) -> tensor<16xf32> {
    %e = tensor.empty() : tensor<16xf32>
    // expected-error @+1 {{'linalg.generic' op would run on the host: a device-resident program lowers only tamoe ops, linalg.matmul, elementwise add, sub, mul, neg, relu, silu and their gradients, and extf/truncf, on f32, bf16 or f16 tensors, and linalg.add of i32 counts to the runtime}}
    %y = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%x : tensor<16xf32>) outs(%e : tensor<16xf32>) {
    ^bb0(%in: f32, %out: f32):
      %m = math.exp %in : f32
      linalg.yield %m : f32
    } -> tensor<16xf32>
    return %y : tensor<16xf32>
  }
}

// -----

// The counts a chunked layer's parts received, summed (tamoe-overlap), stay
// on the device: tamoe_rt_add_counts.
module {
  // CHECK-LABEL: func.func @counts_add
  // CHECK: %[[OUT:.*]] = memref.alloc() : memref<4x2xi32>
  // CHECK: call @tamoe_rt_add_counts(%{{.*}}, %{{.*}}, %{{.*}}, %c8{{.*}}, %{{.*}}) : (!llvm.ptr, !llvm.ptr, !llvm.ptr, index, !llvm.ptr) -> i32
  // CHECK-NOT: linalg.add
  func.func @counts_add(%a: tensor<4x2xi32>, %b: tensor<4x2xi32>) -> tensor<4x2xi32> {
    %e = tensor.empty() : tensor<4x2xi32>
    %c = linalg.add ins(%a, %b : tensor<4x2xi32>, tensor<4x2xi32>) outs(%e : tensor<4x2xi32>) -> tensor<4x2xi32>
    return %c : tensor<4x2xi32>
  }
}

// -----

module {
  func.func @counts_of_two_shapes(%a: tensor<?x2xi32>, %b: tensor<4x2xi32>) -> tensor<4x2xi32> {
    %e = tensor.empty() : tensor<4x2xi32>
    // expected-error @+1 {{'linalg.add' op cannot be lowered to the runtime: a sum of counts takes operands and a result of one type, got 'tensor<?x2xi32>', 'tensor<4x2xi32>' -> 'tensor<4x2xi32>'}}
    %c = linalg.add ins(%a, %b : tensor<?x2xi32>, tensor<4x2xi32>) outs(%e : tensor<4x2xi32>) -> tensor<4x2xi32>
    return %c : tensor<4x2xi32>
  }
}

// -----

module {
  func.func @integer_add(%a: tensor<4xi64>, %b: tensor<4xi64>) -> tensor<4xi64> {
    %e = tensor.empty() : tensor<4xi64>
    // expected-error @+1 {{'linalg.add' op would run on the host: a device-resident program lowers only tamoe ops, linalg.matmul, elementwise add, sub, mul, neg, relu, silu and their gradients, and extf/truncf, on f32, bf16 or f16 tensors, and linalg.add of i32 counts to the runtime}}
    %c = linalg.add ins(%a, %b : tensor<4xi64>, tensor<4xi64>) outs(%e : tensor<4xi64>) -> tensor<4xi64>
    return %c : tensor<4xi64>
  }
}

// -----

// A branch that passes tensors between blocks: bufferization does not
// handle it, which the message says (rather than that the branch computes
// on the host).
module {
  func.func @branch(%a: tensor<4xf32>, %b: tensor<4xf32>, %p: i1) -> tensor<4xf32> {
    // expected-error @+1 {{'cf.cond_br' op passes tensors between blocks, which bufferization does not handle: write the branch or loop with scf.if, scf.for or scf.while, whose tensors stay in the backend's memory}}
    cf.cond_br %p, ^bb1(%a : tensor<4xf32>), ^bb1(%b : tensor<4xf32>)
  ^bb1(%x: tensor<4xf32>):
    return %x : tensor<4xf32>
  }
}

// -----

// Rows of bf16 and f16: each operand's tamoe_rt_dtype_t (f32 0, bf16 1,
// f16 2) goes with it, as in mixed-precision programs (bf16 tokens times a
// bf16 router into f32 logits); conversions are tamoe_rt_convert.
#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  // CHECK-LABEL: func.func @half_precision
  func.func @half_precision(%x: tensor<4x8xbf16>, %w: tensor<8x2xbf16>, %h: tensor<4x2xf16>) -> (tensor<4x2xf32>, tensor<4x2xbf16>, tensor<4x2xf32>, tensor<4x2xf16>) {
    // CHECK-DAG: %[[F32:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[BF16:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[F16:.*]] = arith.constant 2 : i32
    // CHECK-DAG: %[[RELU:.*]] = arith.constant 3 : i32
    // CHECK-DAG: %[[C8:.*]] = arith.constant 8 : index
    // CHECK: call @tamoe_rt_matmul(%{{.*}}, %[[BF16]], %[[BF16]], %[[F32]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[F32]], %[[F32]], %{{.*}}, %{{.*}})
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<4x2xf32>
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4x2xf32>) -> tensor<4x2xf32>
    %logits = linalg.matmul ins(%x, %w : tensor<4x8xbf16>, tensor<8x2xbf16>) outs(%f : tensor<4x2xf32>) -> tensor<4x2xf32>
    // CHECK: call @tamoe_rt_convert(%{{.*}}, %[[F32]], %{{.*}}, %[[BF16]], %{{.*}}, %[[C8]])
    %eb = tensor.empty() : tensor<4x2xbf16>
    %narrow = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%logits : tensor<4x2xf32>) outs(%eb : tensor<4x2xbf16>) {
    ^bb0(%in: f32, %out: bf16):
      %t = arith.truncf %in : f32 to bf16
      linalg.yield %t : bf16
    } -> tensor<4x2xbf16>
    // CHECK: call @tamoe_rt_convert(%{{.*}}, %[[F16]], %{{.*}}, %[[F32]], %{{.*}}, %[[C8]])
    %wide = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<4x2xf16>) outs(%e : tensor<4x2xf32>) {
    ^bb0(%in: f16, %out: f32):
      %t = arith.extf %in : f16 to f32
      linalg.yield %t : f32
    } -> tensor<4x2xf32>
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[RELU]], %[[F16]], %{{.*}}, %{{.*}}, %[[C8]], %{{.*}})
    %zh = arith.constant 0.0 : f16
    %eh = tensor.empty() : tensor<4x2xf16>
    %relu = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<4x2xf16>) outs(%eh : tensor<4x2xf16>) {
    ^bb0(%in: f16, %out: f16):
      %m = arith.maximumf %in, %zh : f16
      linalg.yield %m : f16
    } -> tensor<4x2xf16>
    // CHECK-NOT: linalg.
    return %logits, %narrow, %wide, %relu : tensor<4x2xf32>, tensor<4x2xbf16>, tensor<4x2xf32>, tensor<4x2xf16>
  }
  // CHECK-DAG: func.func private @tamoe_rt_convert(!llvm.ptr, i32, !llvm.ptr, i32, !llvm.ptr, index) -> i32
}

// -----

module {
  func.func @f64_matmul(%x: tensor<4x8xf64>, %w: tensor<8x2xf64>, %c: tensor<4x2xf64>) -> tensor<4x2xf64> {
    // expected-error @+1 {{'linalg.matmul' op cannot be lowered to the runtime: it takes a matmul of f32, bf16 or f16 tensors with the default indexing maps or one operand transposed}}
    %y = linalg.matmul ins(%x, %w : tensor<4x8xf64>, tensor<8x2xf64>) outs(%c : tensor<4x2xf64>) -> tensor<4x2xf64>
    return %y : tensor<4x2xf64>
  }
}

// -----

#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  func.func @f64_conversion(%x: tensor<4x2xf32>) -> tensor<4x2xf64> {
    %e = tensor.empty() : tensor<4x2xf64>
    // expected-error @+1 {{'linalg.generic' op would run on the host: a device-resident program lowers only tamoe ops, linalg.matmul, elementwise add, sub, mul, neg, relu, silu and their gradients, and extf/truncf, on f32, bf16 or f16 tensors, and linalg.add of i32 counts to the runtime}}
    %y = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x2xf32>) outs(%e : tensor<4x2xf64>) {
    ^bb0(%in: f32, %out: f64):
      %t = arith.extf %in : f32 to f64
      linalg.yield %t : f64
    } -> tensor<4x2xf64>
    return %y : tensor<4x2xf64>
  }
}

// -----

module {
  func.func @both_transposed(%x: tensor<8x4xf32>, %w: tensor<2x8xf32>, %c: tensor<4x2xf32>) -> tensor<4x2xf32> {
    // expected-error @+1 {{'linalg.matmul' op cannot be lowered to the runtime: it takes a matmul of f32, bf16 or f16 tensors with the default indexing maps or one operand transposed}}
    %y = linalg.matmul indexing_maps = [affine_map<(d0, d1, d2) -> (d2, d0)>, affine_map<(d0, d1, d2) -> (d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1)>] ins(%x, %w : tensor<8x4xf32>, tensor<2x8xf32>) outs(%c : tensor<4x2xf32>) -> tensor<4x2xf32>
    return %y : tensor<4x2xf32>
  }
}

// -----

#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  func.func @mixed_shapes(%a: tensor<?x4xf32>, %b: tensor<8x4xf32>) -> tensor<8x4xf32> {
    %e = tensor.empty() : tensor<8x4xf32>
    // expected-error @+1 {{'linalg.generic' op cannot be lowered to the runtime: an elementwise op takes operands and a result of one type, got 'tensor<?x4xf32>', 'tensor<8x4xf32>' -> 'tensor<8x4xf32>'}}
    %y = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel"]} ins(%a, %b : tensor<?x4xf32>, tensor<8x4xf32>) outs(%e : tensor<8x4xf32>) {
    ^bb0(%x: f32, %z: f32, %out: f32):
      %s = arith.addf %x, %z : f32
      linalg.yield %s : f32
    } -> tensor<8x4xf32>
    return %y : tensor<8x4xf32>
  }
}

// -----

module {
  func.func @slice_of_a_result(%x: tensor<16x4xf32>, %y: tensor<8x4xf32>) -> tensor<8x4xf32> {
    // expected-error @+1 {{'tensor.extract_slice' op would run on the host}}
    %s = tensor.extract_slice %x[0, 0] [8, 4] [1, 1] : tensor<16x4xf32> to tensor<8x4xf32>
    %z = arith.addf %s, %y : tensor<8x4xf32>
    return %z : tensor<8x4xf32>
  }
}

// -----

// Gradients: matmuls with one operand transposed (the transpose flags),
// neg and relu's gradient as maps.
#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  // CHECK-LABEL: func.func @gradients
  // CHECK-SAME: (%[[X:.*]]: tensor<8x4xf32>, %[[W:.*]]: tensor<8x2xf32>, %[[Y:.*]]: tensor<4x2xf32>, %[[D:.*]]: tensor<4x2xf32>)
  func.func @gradients(%x: tensor<8x4xf32>, %w: tensor<8x2xf32>, %y: tensor<4x2xf32>, %d: tensor<4x2xf32>) -> (tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>) {
    %zero = arith.constant 0.0 : f32
    %e = tensor.empty() : tensor<4x2xf32>
    %z = linalg.fill ins(%zero : f32) outs(%e : tensor<4x2xf32>) -> tensor<4x2xf32>
    // x^T w: transpose_a = 1, m = 4, k = 8, n = 2.
    // CHECK-DAG: %[[ONE:.*]] = arith.constant 1 : i32
    // CHECK-DAG: %[[ZERO:.*]] = arith.constant 0 : i32
    // CHECK-DAG: %[[NEG:.*]] = arith.constant 4 : i32
    // CHECK-DAG: %[[RELUGRAD:.*]] = arith.constant 5 : i32
    // CHECK: call @tamoe_rt_matmul(%{{.*}}, %{{.*}}, %{{.*}}, %[[C4:.*]], %[[C8:.*]], %[[C2:.*]], %[[ONE]], %[[ZERO]], %{{.*}}, %{{.*}})
    %t = linalg.matmul indexing_maps = [affine_map<(d0, d1, d2) -> (d2, d0)>, affine_map<(d0, d1, d2) -> (d2, d1)>, affine_map<(d0, d1, d2) -> (d0, d1)>] ins(%x, %w : tensor<8x4xf32>, tensor<8x2xf32>) outs(%z : tensor<4x2xf32>) -> tensor<4x2xf32>
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[NEG]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}})
    %n = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%d : tensor<4x2xf32>) outs(%e : tensor<4x2xf32>) {
    ^bb0(%in: f32, %out: f32):
      %v = arith.negf %in : f32
      linalg.yield %v : f32
    } -> tensor<4x2xf32>
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[RELUGRAD]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}})
    %r = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel"]} ins(%y, %d : tensor<4x2xf32>, tensor<4x2xf32>) outs(%e : tensor<4x2xf32>) {
    ^bb0(%a: f32, %b: f32, %out: f32):
      %c = arith.cmpf ogt, %a, %zero : f32
      %v = arith.select %c, %b, %zero : f32
      linalg.yield %v : f32
    } -> tensor<4x2xf32>
    return %t, %n, %r : tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>
  }
}

// -----

// silu (x / (1 + exp(-x)), either order of the sum) and its gradient as
// tamoe-differentiate writes it are maps SILU (6) and SILU_GRAD (7); a body
// that is almost silu (exp(x) in place of exp(-x)) is not.
#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  // CHECK-LABEL: func.func @silu
  func.func @silu(%x: tensor<4x8xf32>, %d: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
    // CHECK-DAG: %[[SILU:.*]] = arith.constant 6 : i32
    // CHECK-DAG: %[[GRAD:.*]] = arith.constant 7 : i32
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[SILU]],
    // CHECK: call @tamoe_rt_map(%{{.*}}, %[[GRAD]],
    // CHECK-NOT: linalg.generic
    %one = arith.constant 1.0 : f32
    %e = tensor.empty() : tensor<4x8xf32>
    %s = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
    ^bb0(%in: f32, %out: f32):
      %n = arith.negf %in : f32
      %p = math.exp %n : f32
      %den = arith.addf %one, %p : f32
      %r = arith.divf %in, %den : f32
      linalg.yield %r : f32
    } -> tensor<4x8xf32>
    %g = linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel", "parallel"]} ins(%x, %d : tensor<4x8xf32>, tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
    ^bb0(%in: f32, %dd: f32, %out: f32):
      %n = arith.negf %in : f32
      %p = math.exp %n : f32
      %den = arith.addf %p, %one : f32
      %sig = arith.divf %one, %den : f32
      %t = arith.subf %one, %sig : f32
      %u = arith.mulf %in, %t : f32
      %v = arith.addf %one, %u : f32
      %w = arith.mulf %sig, %v : f32
      %r = arith.mulf %dd, %w : f32
      linalg.yield %r : f32
    } -> tensor<4x8xf32>
    return %s, %g : tensor<4x8xf32>, tensor<4x8xf32>
  }
}

// -----

#map = affine_map<(d0, d1) -> (d0, d1)>
module {
  func.func @not_silu(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %one = arith.constant 1.0 : f32
    %e = tensor.empty() : tensor<4x8xf32>
    // expected-error @+1 {{'linalg.generic' op would run on the host}}
    %s = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%x : tensor<4x8xf32>) outs(%e : tensor<4x8xf32>) {
    ^bb0(%in: f32, %out: f32):
      %p = math.exp %in : f32
      %den = arith.addf %one, %p : f32
      %r = arith.divf %in, %den : f32
      linalg.yield %r : f32
    } -> tensor<4x8xf32>
    return %s : tensor<4x8xf32>
  }
}

// -----

// A dense constant that a loop carries (it would be copied on the host):
// named with the op that takes it.
module {
  func.func @carried(%x: tensor<4xf32>) -> tensor<4xf32> {
    // expected-error @+1 {{'arith.constant' op would run on the host: a dense constant becomes device memory (tamoe_rt_program_constant) where runtime calls read it, but 'scf.for' takes it as a tensor (a loop's initial value or a call's argument is copied on the host); compute it with a runtime op, or pass it in}}
    %c = arith.constant dense<0.0> : tensor<4xf32>
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c3 = arith.constant 3 : index
    %r = scf.for %i = %c0 to %c3 step %c1 iter_args(%acc = %c) -> tensor<4xf32> {
      %e = tensor.empty() : tensor<4xf32>
      %s = linalg.add ins(%acc, %x : tensor<4xf32>, tensor<4xf32>) outs(%e : tensor<4xf32>) -> tensor<4xf32>
      scf.yield %s : tensor<4xf32>
    }
    return %r : tensor<4xf32>
  }
}

// -----

// max(x, -0.0) is -0.0 for a negative x, which relu (tamoe_rt_map RELU
// writes +0) is not: it is not taken for relu.
module {
  func.func @max_negative_zero(%x: tensor<16xf32>) -> tensor<16xf32> {
    %e = tensor.empty() : tensor<16xf32>
    // expected-error @+1 {{'linalg.generic' op would run on the host}}
    %y = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%x : tensor<16xf32>) outs(%e : tensor<16xf32>) {
    ^bb0(%in: f32, %out: f32):
      %z = arith.constant -0.0 : f32
      %m = arith.maximumf %in, %z : f32
      linalg.yield %m : f32
    } -> tensor<16xf32>
    return %y : tensor<16xf32>
  }
}

// -----

// Nor is a select of -0.0 where a <= 0 relu's gradient (RELU_GRAD writes
// +0 there).
module {
  func.func @select_negative_zero(%a: tensor<16xf32>, %b: tensor<16xf32>) -> tensor<16xf32> {
    %e = tensor.empty() : tensor<16xf32>
    // expected-error @+1 {{'linalg.generic' op would run on the host}}
    %y = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%a, %b : tensor<16xf32>, tensor<16xf32>) outs(%e : tensor<16xf32>) {
    ^bb0(%in: f32, %g: f32, %out: f32):
      %z = arith.constant 0.0 : f32
      %nz = arith.constant -0.0 : f32
      %p = arith.cmpf ogt, %in, %z : f32
      %s = arith.select %p, %g, %nz : f32
      linalg.yield %s : f32
    } -> tensor<16xf32>
    return %y : tensor<16xf32>
  }
}

// -----

// A matmul into a fill of -0.0 starts from it, not from no init: a sum of
// -0.0 products (or of none) is -0.0 there. The fill itself then has no
// runtime call.
module {
  func.func @matmul_negative_zero_init(%a: tensor<4x8xf32>, %b: tensor<8x2xf32>) -> tensor<4x2xf32> {
    %zero = arith.constant -0.0 : f32
    %e = tensor.empty() : tensor<4x2xf32>
    // expected-error @+1 {{'linalg.fill' op would run on the host}}
    %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4x2xf32>) -> tensor<4x2xf32>
    %c = linalg.matmul ins(%a, %b : tensor<4x8xf32>, tensor<8x2xf32>) outs(%f : tensor<4x2xf32>) -> tensor<4x2xf32>
    return %c : tensor<4x2xf32>
  }
}
