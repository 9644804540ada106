/*===- program.h - Support for programs compiled by tamoe -------*- C -*-===*\
 *
 * What the code that convert-tamoe-to-runtime emits calls besides the
 * tamoe_rt_* operations: one runtime context per process, a status check
 * that ends the program on every rank, and the allocation functions that
 * MLIR's memref lowering calls (finalize-memref-to-llvm with
 * use-generic-functions), so that a compiled layer's buffers come from the
 * runtime. Test programs also get seeded inputs and raw output files.
 *
\*===----------------------------------------------------------------------===*/

#ifndef TAMOE_RT_PROGRAM_H
#define TAMOE_RT_PROGRAM_H

#include "tamoe_rt/tamoe_rt.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called at the entry of every compiled function: the process's context,
 * created on first use with the default options, finalised at exit;
 * TAMOE_RT_BACKEND=cpu|cuda picks the backend. Code
 * lowered with host loops for its non-tamoe ops (tamoe-to-llvm without
 * device-resident) passes host_loops = 1: it reads and writes its buffers on
 * the host, so any backend but cpu ends the program with a message.
 * abi_version is the TAMOE_RT_ABI_VERSION the code was compiled against; a
 * program built for another version than this library's ends with a
 * message that names both. When the context cannot be created the program
 * ends with the runtime's message. */
tamoe_rt_context_t *tamoe_rt_program_enter(int32_t host_loops,
                                           int32_t abi_version);

/* A copy in the backend's memory of `bytes` of constant host data (a global
 * of the program), made on first use and kept until exit; on the cpu
 * backend, `host` itself. */
const void *tamoe_rt_program_constant(const void *host, intptr_t bytes);

/* Ends the program when `status` is a failure: prints
 * "tamoe_rt: rank R: <STATUS>: <message>" to stderr (the status's name, as
 * tamoe_rt_status_name gives it, then the runtime's last error) and aborts
 * every rank (a collective fails on every rank alike, so every rank prints
 * its message). */
void tamoe_rt_program_check(tamoe_rt_status_t status);

/* This rank in the program context's world. */
intptr_t tamoe_rt_program_rank(void);

/* Ends the program on every rank when the world is not the grid the program
 * was compiled for: `shape[0..rank)` must multiply to the number of ranks,
 * and with `nodes` (the program splits the grid at its last axis) the last
 * axis must be the ranks per node. The code convert-tamoe-to-runtime emits
 * calls it before each exchange and rank query, so the message comes before
 * any exchange fails: "this program was compiled for 8 ranks (grid 2x4) but
 * was launched on 4". */
void tamoe_rt_program_check_grid(const int64_t *shape, intptr_t rank,
                                 int32_t nodes);

/* Ends the program on every rank when got != want: prints
 * "tamoe_rt: rank R: <message> (<got> vs <want>)", message being
 * `length` bytes (no terminator needed). A runtime call takes one extent
 * (rows, elements) for buffers that may have different dynamic sizes at
 * run time, and would read or write past the end of a smaller one; the
 * code convert-tamoe-to-runtime emits calls this first, with a message
 * that names the op and the operands: "tamoe.combine: weights and
 * positions have different numbers of rows (2 vs 4)". */
void tamoe_rt_program_check_extent(const char *message, intptr_t length,
                                   intptr_t got, intptr_t want);

/* Fills data[0..n) with numbers uniform in [-1, 1): element i depends only on
 * (seed, i), so a reference can regenerate any part of an input. */
void tamoe_rt_program_random_f32(float *data, intptr_t n, uint64_t seed);

/* Rounds data[0..n) in place to the nearest values of `type` (to nearest
 * even, as tamoe_rt_convert), kept as f32: what a reference computes with to
 * follow a program whose rows are bf16 or f16. */
void tamoe_rt_program_round_f32(float *data, intptr_t n, tamoe_rt_dtype_t type);

/* The memref allocation functions of MLIR's LLVM lowering. */
void *_mlir_memref_to_llvm_alloc(size_t size);
void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment, size_t size);
void _mlir_memref_to_llvm_free(void *pointer);

/* The library also defines memrefCopy, what MLIR's LLVM lowering calls for
 * a memref.copy between memrefs that are not both contiguous (bufferization
 * leaves one where an scf.if yields views), as MLIR's runner utilities
 * define it (mlir/ExecutionEngine/CRunnerUtils.h declares it; a second
 * declaration here would clash with that one). Host memory only. */

/* An unranked memref as MLIR passes it to an llvm.emit_c_interface
 * function: the rank and a pointer to the ranked descriptor
 * {allocated, aligned, offset, sizes[rank], strides[rank]}. */
typedef struct tamoe_rt_unranked_memref_t {
  int64_t rank;
  void *descriptor;
} tamoe_rt_unranked_memref_t;

/* For test programs (declare them in MLIR as
 * `func.func private @tamoeRandomF32(memref<*xf32>, i64)
 * attributes {llvm.emit_c_interface}`; the memrefs must be contiguous):
 * - tamoeRandomF32 fills the memref as tamoe_rt_program_random_f32 does,
 *   tamoeRandomBF16 a bf16 memref with those numbers rounded to bf16;
 * - tamoeOutput{F32,I32,I64} write its elements, raw, to
 *   $TAMOE_RT_OUTPUT_DIR/out<index>.rank<R>.bin (nothing when the variable
 *   is not set); tamoeOutputBF16 writes a bf16 memref's elements widened
 *   to f32, so that a reference reads every output as f32;
 * - tamoeAppend{F32,I32} append them to that file instead (the process's
 *   first append replaces it): one record per training step.
 * At exit rank 0 says on stderr where the outputs went, or that none were
 * written. */
void _mlir_ciface_tamoeRandomF32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t seed);
void _mlir_ciface_tamoeRandomBF16(tamoe_rt_unranked_memref_t *memref,
                                  int64_t seed);
void _mlir_ciface_tamoeOutputF32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index);
void _mlir_ciface_tamoeOutputBF16(tamoe_rt_unranked_memref_t *memref,
                                  int64_t index);
void _mlir_ciface_tamoeOutputI32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index);
void _mlir_ciface_tamoeOutputI64(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index);
void _mlir_ciface_tamoeAppendF32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index);
void _mlir_ciface_tamoeAppendI32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index);

/* Appends the bytes this rank sent within and across nodes since the last
 * call (or the start), two int64, to out<index>.rank<R>.bin as
 * tamoeAppend* do, and resets the counters (tamoe_rt_traffic). Declare it
 * in MLIR as `func.func private @tamoeAppendTraffic(i64)`. */
void tamoeAppendTraffic(int64_t index);

#ifdef __cplusplus
}
#endif

#endif /* TAMOE_RT_PROGRAM_H */
