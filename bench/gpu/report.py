#!/usr/bin/env python3
"""report.py - one markdown report from the GPU run's CSVs and check log.

  python3 report.py --tamoe tamoe.csv [--torch torch.csv] [--exchange x.csv]
                    [--check check.log] [--title TEXT] [--out FILE]

Prints the report; --out also writes it to FILE. The CSVs have the columns
impl,op,tokens,hidden,experts,k,median_us,bytes and optionally flops
(tamoe_gpu_bench writes the "tamoe", "memcpy", "cublas_*" and
"tamoe_graph" rows, torch_reference.py the others).
"""

import argparse
import csv
import math
import os
import re
import sys

TORCH_IMPLS = [
    ("megatron_argsort", "Megatron argsort"),
    ("megatron_routing_map", "Megatron routing map"),
    ("deepspeed_einsum", "DeepSpeed einsum"),
]
OPS = [
    ("gate", "gate (softmax + top-k)"),
    ("permute", "permute (dispatch)"),
    ("all_to_all", "all-to-all on one rank"),
    ("unpermute_combine", "un-permute + combine"),
]
EXPERT_STAGE_IMPLS = [
    ("tamoe", "tamoe: grouped_matmul, relu, grouped_matmul"),
    ("cublas_loop", "cuBLAS, a GEMM per expert"),
    ("cublas_grouped", "cuBLAS, cublasGemmGroupedBatchedEx"),
    ("cublaslt_relu", "cuBLASLt per expert, relu in the epilogue"),
    ("cublas_dense", "cuBLAS, dense pair over all rows"),
]
# The expert stage's target: this share of the dense pair's TFLOP/s.
EXPERT_STAGE_TARGET = 0.75


def read(path):
    """The rows of `path` by (impl, op, tokens, k). A row that is cut short
    (a run stopped by its timeout leaves a partly written last line) or
    holds a timing that is not a positive number is left out with a warning:
    the rest of the report still comes out, and no ratio is taken over it."""
    rows = {}
    if not path or not os.path.exists(path):
        return rows
    with open(path, newline="", errors="replace") as f:
        for number, row in enumerate(csv.DictReader(f), start=2):
            try:
                key = (row["impl"], row["op"], int(row["tokens"]),
                       int(row["k"]))
                value = (float(row["median_us"]), int(row["bytes"]),
                         int(row["hidden"]), int(row["experts"]),
                         int(row.get("flops") or 0))
            except (KeyError, TypeError, ValueError):
                print(f"report.py: {path}:{number}: not a whole row, left out",
                      file=sys.stderr)
                continue
            if not math.isfinite(value[0]) or value[0] <= 0:
                print(f"report.py: {path}:{number}: median_us "
                      f"{row['median_us']} is not a positive time, left out",
                      file=sys.stderr)
                continue
            rows[key] = value
    return rows


def tamoe_keys(data, op):
    """The keys of tamoe's rows of `op`, by shape."""
    return sorted(key for key in data if key[0] == "tamoe" and key[1] == op)


def fmt(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tamoe", required=True)
    parser.add_argument("--torch")
    parser.add_argument("--exchange")
    parser.add_argument("--check")
    parser.add_argument("--title", default="tamoe cuda backend on GPU")
    parser.add_argument("--out")
    args = parser.parse_args()

    data = read(args.tamoe)
    data.update(read(args.torch))
    lines = [f"# {args.title}", ""]

    if args.check and os.path.exists(args.check):
        with open(args.check) as f:
            log = f.read().splitlines()
        passed = [l for l in log if " PASS " in l]
        failed = [l for l in log if " FAIL " in l]
        # tamoe_gpu_bench ends its checks with "N passed, M failed"; a log
        # without that line was cut short (a timeout, a crash), and the
        # cases it never reached are not a pass.
        finished = any(re.search(r"\] \d+ passed, \d+ failed$", l)
                       for l in log)
        if failed:
            verdict = f"{len(failed)} FAILED"
        elif not finished:
            verdict = "INCOMPLETE: the log has no final count (the checks " \
                      "stopped early)"
        else:
            verdict = "all passed"
        lines += [f"Correctness (`tamoe_gpu_bench check`): {len(passed)} "
                  f"cases passed, {len(failed)} failed: {verdict}.", ""]
        for l in failed:
            lines.append(f"- {l}")
        if failed:
            lines.append("")

    op_names = {op for op, _ in OPS}
    shapes = sorted({(key[2], key[3]) for key in data
                     if key[0] == "tamoe" and key[1] in op_names})
    if shapes:
        any_key = next(key for key in data
                       if key[0] == "tamoe" and key[1] in op_names)
        _, _, hidden, experts, _ = data[any_key]
        header = ["op", "tokens", "k", "tamoe µs", "memcpy µs",
                  "tamoe / memcpy", "tamoe GB/s"]
        header += [f"{name} µs" for _, name in TORCH_IMPLS]
        header += ["fastest torch / tamoe"]
        lines += [f"Medians of CUDA-event timings; hidden {hidden} (bf16 "
                  f"token rows, f32 expert outputs), {experts} experts.", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for op, label in OPS:
            for tokens, k in shapes:
                tamoe = data.get(("tamoe", op, tokens, k))
                memcpy = data.get(("memcpy", op, tokens, k))
                if tamoe is None:
                    continue
                t_us, moved = tamoe[0], tamoe[1]
                m_us = memcpy[0] if memcpy else None
                torch_us = [data.get((impl, op, tokens, k)) for impl, _ in
                            TORCH_IMPLS]
                torch_us = [v[0] if v else None for v in torch_us]
                present = [v for v in torch_us if v is not None]
                cells = [label, str(tokens), str(k), fmt(t_us), fmt(m_us),
                         fmt(t_us / m_us, 2) if m_us else "n/a",
                         fmt(moved / t_us / 1e3) if t_us > 0 else "n/a"]
                cells += [fmt(v) for v in torch_us]
                cells.append(fmt(min(present) / t_us, 2) if present else "n/a")
                lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "- memcpy: a device-to-device `cudaMemcpy` whose reads plus "
            "writes equal the operation's (tamoe / memcpy = 1 is the copy "
            "bound).",
            "- tamoe's dispatch and combine validate their data on the "
            "device and wait for it before returning (so that an invalid id "
            "comes back as a status): their times include that round trip; "
            "gate does not wait.",
            "- Megatron argsort: Megatron-Core <= 0.8 `permute`/`unpermute` "
            "(stable argsort + index_select; index_copy, * probs, sum). "
            "Megatron routing map: Megatron-Core >= 0.9 (masked_select + "
            "index_select; scatter_add). DeepSpeed einsum: "
            "`topkgating` masks [S, E, C] and the dispatch/combine einsums, "
            "capacity = largest expert load (no drops).",
            "- fastest torch / tamoe > 1: tamoe is faster.",
            "",
        ]

    steps = tamoe_keys(data, "layer_step")
    if steps:
        lines += ["A bf16 layer step (router GEMM, gate, dispatch with a "
                  "capacity of 1.25, the one-rank exchanges, the experts' "
                  "GEMMs and relu, combine), its operations called one by "
                  "one (each waits for its work) and recorded as one graph "
                  "(`tamoe_rt_graph_*`: one launch, one wait):", "",
                  "| tokens | hidden | experts | k | eager µs | graph µs | "
                  "eager / graph |", "|---|---|---|---|---|---|---|"]
        for key in steps:
            eager_us, _, hidden, experts, _ = data[key]
            graph = data.get(("tamoe_graph",) + key[1:])
            graph_us = graph[0] if graph else None
            ratio = eager_us / graph_us if graph_us else None
            lines.append(f"| {key[2]} | {hidden} | {experts} | {key[3]} | "
                         f"{fmt(eager_us)} | {fmt(graph_us)} | "
                         f"{fmt(ratio, 2)} |")
        lines.append("")

    stages = tamoe_keys(data, "expert_stage")
    if stages:
        lines += ["The expert stage in bf16 (f32 sums), rows spread over the "
                  "experts at random; the cuBLAS rows are the two GEMMs "
                  "alone (cuBLASLt's with relu fused into the first), the "
                  "dense pair the same FLOPs over all rows at once:", "",
                  "| tokens | hidden | ffn | experts | k | implementation | "
                  "µs | TFLOP/s | of dense |", "|---|---|---|---|---|---|---|"
                  "---|---|"]
        verdicts = []
        for key in stages:
            _, _, hidden, experts, flops = data[key]
            rows = key[2] * key[3]
            ffn = flops // (4 * rows * hidden)
            dense = data.get(("cublas_dense",) + key[1:])
            dense_tflops = dense[4] / dense[0] / 1e6 if dense else None
            for impl, label in EXPERT_STAGE_IMPLS:
                entry = data.get((impl,) + key[1:])
                if entry is None:
                    continue
                tflops = entry[4] / entry[0] / 1e6
                share = tflops / dense_tflops if dense_tflops else None
                lines.append(f"| {key[2]} | {hidden} | {ffn} | {experts} | "
                             f"{key[3]} | {label} | {fmt(entry[0])} | "
                             f"{fmt(tflops)} | {fmt(share, 2)} |")
                if impl == "tamoe" and share is not None:
                    met = "meets" if share >= EXPERT_STAGE_TARGET else "MISSES"
                    verdicts.append(
                        f"- {key[2]} tokens x {hidden}: tamoe's expert stage "
                        f"reaches {share:.2f} of the dense pair's TFLOP/s: "
                        f"{met} the target of {EXPERT_STAGE_TARGET}.")
        lines += [""] + verdicts + [""]

    exchange = read(args.exchange)
    if exchange:
        lines += ["Exchanges over all GPUs (rank 0's medians):", "",
                  "| op | tokens | k | µs | GB/s sent per rank |",
                  "|---|---|---|---|---|"]
        for (impl, op, tokens, k), (us, moved, *_) in sorted(
                exchange.items()):
            lines.append(f"| {op} | {tokens} | {k} | {fmt(us)} | "
                         f"{fmt(moved / us / 1e3 if us > 0 else None)} |")
        lines.append("")

    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
