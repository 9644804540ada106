#===- bench/gpu/layer.sh - The benchmark layer of moe_layer.mlir.in -------===#
#
# Sourced by bench/gpu/e2e.sh and bench/overlap.sh: layer_mlir prints
# moe_layer.mlir.in instantiated from these variables:
#
#   GRID (e.g. 1x8), RANKS, EXPERTS, EXPERTS_PER_RANK, TOP_K, TOKENS, HIDDEN,
#   FFN, DTYPE (f32 | bf16), ACTIVATION (relu | swiglu), ITERATIONS (the
#   forwards its main runs)
#
#===----------------------------------------------------------------------===#

layer_mlir() {
  local here rows_name=F32 rows_decls="" template activation w3_init=""
  local w3_param="" w3_arg="" w3_type=""
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  local w1='tensor<@EXPERTS_PER_RANK@x@HIDDEN@x@FFN@x@DTYPE@>'
  local w1_memref='memref<@EXPERTS_PER_RANK@x@HIDDEN@x@FFN@x@DTYPE@>'
  # The program's helpers for rows of that type (tamoe_rt/program.h).
  if [[ "$DTYPE" == bf16 ]]; then
    rows_name=BF16
    rows_decls='  func.func private @tamoeRandomBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}
  func.func private @tamoeOutputBF16(memref<*xbf16>, i64) attributes {llvm.emit_c_interface}'
  fi
  if [[ "$ACTIVATION" == swiglu ]]; then
    # silu(x W1) * (x W3): a silu linalg.generic and a linalg.mul, which
    # become runtime maps (SILU, MUL) in a device-resident program.
    activation='    %one_row = arith.constant 1.0 : @DTYPE@
    %gate_h = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<?x@FFN@x@DTYPE@>) outs(%he : tensor<?x@FFN@x@DTYPE@>) {
    ^bb0(%in: @DTYPE@, %out: @DTYPE@):
      %neg = arith.negf %in : @DTYPE@
      %exp = math.exp %neg : @DTYPE@
      %den = arith.addf %exp, %one_row : @DTYPE@
      %silu = arith.divf %in, %den : @DTYPE@
      linalg.yield %silu : @DTYPE@
    } -> tensor<?x@FFN@x@DTYPE@>
    %h3 = tamoe.grouped_matmul %recv, %recv_counts, %w3 : tensor<?x@HIDDEN@x@DTYPE@>, tensor<@RANKS@x@EXPERTS_PER_RANK@xi32>, '"$w1"' -> tensor<?x@FFN@x@DTYPE@>
    %ae = tensor.empty(%n) : tensor<?x@FFN@x@DTYPE@>
    %act = linalg.mul ins(%gate_h, %h3 : tensor<?x@FFN@x@DTYPE@>, tensor<?x@FFN@x@DTYPE@>) outs(%ae : tensor<?x@FFN@x@DTYPE@>) -> tensor<?x@FFN@x@DTYPE@>'
    w3_init='    %w3 = memref.alloc() : '"$w1_memref"'
    %c5000 = arith.constant 5000 : i64
    %s3 = arith.addi %c5000, %r : i64
    %u4 = memref.cast %w3 : '"$w1_memref"' to memref<*x@DTYPE@>
    call @tamoeRandom@ROWS_NAME@(%u4, %s3) : (memref<*x@DTYPE@>, i64) -> ()
    %t4 = bufferization.to_tensor %w3 restrict : '"$w1_memref"' to '"$w1"
    w3_param=", %w3: $w1"
    w3_arg=", %t4"
    w3_type=", $w1"
  else
    activation='    %act = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel", "parallel"]} ins(%h : tensor<?x@FFN@x@DTYPE@>) outs(%he : tensor<?x@FFN@x@DTYPE@>) {
    ^bb0(%in: @DTYPE@, %out: @DTYPE@):
      %m = arith.maximumf %in, %zero_row : @DTYPE@
      linalg.yield %m : @DTYPE@
    } -> tensor<?x@FFN@x@DTYPE@>'
  fi
  template=$(<"$here/moe_layer.mlir.in")
  # Literal replacements (bash 5.2 would otherwise read & in them).
  shopt -u patsub_replacement 2>/dev/null || true
  template=${template//@ACTIVATION@/$activation}
  template=${template//@W3_INIT@/$w3_init}
  template=${template//@W3_PARAM@/$w3_param}
  template=${template//@W3_ARG@/$w3_arg}
  template=${template//@W3_TYPE@/$w3_type}
  template=${template//@ROWS_DECLS@/$rows_decls}
  printf '%s\n' "$template" | sed \
      -e "s/1x@RANKS@/$GRID/" -e "s/@RANKS@/$RANKS/g" \
      -e "s/@EXPERTS_PER_RANK@/$EXPERTS_PER_RANK/g" \
      -e "s/@EXPERTS@/$EXPERTS/g" -e "s/@TOP_K@/$TOP_K/g" \
      -e "s/@TOKENS@/$TOKENS/g" -e "s/@HIDDEN@/$HIDDEN/g" -e "s/@FFN@/$FFN/g" \
      -e "s/@ROWS@/$((TOKENS * TOP_K))/g" \
      -e "s/@ITERATIONS@/$ITERATIONS/g" \
      -e "s/@WARM_ITERATIONS@/$((ITERATIONS - 1))/g" \
      -e "s/@DTYPE@/$DTYPE/g" -e "s/@ROWS_NAME@/$rows_name/g" \
      -e "s/@ACTIVATION_NAME@/$ACTIVATION/g"
}
