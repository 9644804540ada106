// What convert-tamoe-to-runtime emits at a function's entry, as a tamoe-opt
// of another runtime interface version would: TAMOE_RT_ABI_VERSION 999.
// program-errors.test checks that the runtime refuses it by name.
module {
  func.func private @tamoe_rt_program_enter(i32, i32) -> !llvm.ptr
  func.func @main() {
    %host_loops = arith.constant 1 : i32
    %version = arith.constant 999 : i32
    %context = call @tamoe_rt_program_enter(%host_loops, %version) : (i32, i32) -> !llvm.ptr
    return
  }
}
