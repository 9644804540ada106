#!/usr/bin/env python3
"""e2e_report.py - the per-stage table of bench/gpu/e2e.sh.

Reads the runtime's profile (TAMOE_RT_PROFILE=1: median microseconds per
call of each tamoe_rt operation, and its number of calls) and, optionally,
torch_layer.py's CSV (stage,median_us), and prints one markdown table of a
layer forward by stage: an operation's share of a layer is its median times
its calls per layer.

  e2e_report.py --profile FILE --iterations N [--torch CSV]
                [--torch-grouped-mm CSV] [--title TEXT]

--torch-grouped-mm adds the same layer with its expert stage in
torch._grouped_mm (torch_layer.py --experts-impl grouped_mm) as a second
PyTorch column.
"""

import argparse
import csv
import sys

# The runtime's operations in the stages of an MoE layer.
STAGES = [
    ("router matmul", ["tamoe_rt_matmul"]),
    ("gate", ["tamoe_rt_gate"]),
    ("dispatch", ["tamoe_rt_dispatch", "tamoe_rt_dedup_pack"]),
    ("all-to-all (both)", ["tamoe_rt_all_to_all_counts",
                           "tamoe_rt_all_to_all_totals", "tamoe_rt_all_to_all",
                           "tamoe_rt_all_to_all_start", "tamoe_rt_all_to_all_wait",
                           "tamoe_rt_regroup", "tamoe_rt_dedup_expand"]),
    # A chunked layer's parts (tamoe-overlap).
    ("chunk + unchunk", ["tamoe_rt_chunk", "tamoe_rt_unchunk",
                         "tamoe_rt_chunk_positions", "tamoe_rt_add_counts"]),
    ("expert GEMMs + activation", ["tamoe_rt_grouped_matmul", "tamoe_rt_map"]),
    ("combine", ["tamoe_rt_combine"]),
    ("aux loss", ["tamoe_rt_aux_loss"]),
]


def read_profile(path):
    """{operation: (calls, median_us)} from the profile's markdown rows."""
    rows = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].startswith("tamoe_rt_"):
                rows[cells[0]] = (int(cells[1]), float(cells[2]))
    if not rows:
        sys.exit(f"e2e_report.py: no profile rows in {path}")
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--torch")
    parser.add_argument("--torch-grouped-mm")
    parser.add_argument("--title", default="One MoE layer forward")
    args = parser.parse_args()

    profile = read_profile(args.profile)
    # The PyTorch columns: (heading, {stage: us}).
    columns = []
    for heading, path in (("PyTorch", args.torch),
                          ("PyTorch, _grouped_mm experts", args.torch_grouped_mm)):
        if path:
            with open(path) as f:
                columns.append((heading, {row["stage"]: float(row["median_us"])
                                          for row in csv.DictReader(f)}))

    print(f"### {args.title}\n")
    header = "| stage | tamoe (us per layer) |"
    rule = "|---|---:|"
    for heading, _ in columns:
        header += f" {heading} (us) | {heading} / tamoe |"
        rule += "---:|---:|"
    print(header)
    print(rule)

    def cells(us, values):
        """A PyTorch column's cells for a row where tamoe took `us`."""
        if values is None:
            return " - | - |"
        theirs = sum(values)
        return f" {theirs:.1f} | {theirs / us:.2f}x |" if us > 0 else f" {theirs:.1f} | - |"

    total = 0.0
    totals = [0.0 for _ in columns]
    for stage, operations in STAGES:
        us = sum(profile[op][1] * profile[op][0] / args.iterations
                 for op in operations if op in profile)
        total += us
        row = f"| {stage} | {us:.1f} |"
        for i, (_, theirs) in enumerate(columns):
            value = theirs.get(stage)
            if value is not None:
                totals[i] += value
            row += cells(us, None if value is None else [value])
        print(row)
    # Operations no stage names still count, so that the layer is whole.
    named = {op for _, operations in STAGES for op in operations}
    other = sorted(op for op in profile if op not in named)
    if other:
        us = sum(profile[op][1] * profile[op][0] / args.iterations for op in other)
        total += us
        row = f"| other ({', '.join(op[len('tamoe_rt_'):] for op in other)}) | {us:.1f} |"
        row += " - | - |" * len(columns)
        print(row)
    row = f"| **layer** | **{total:.1f}** |"
    for theirs in totals:
        row += f" **{theirs:.1f}** | **{theirs / total:.2f}x** |"
    print(row)
    print("\nMedians per call from the runtime's profile (each call timed until "
          "its work finished); a stage is the sum of its operations' medians "
          "times their calls per layer.")


if __name__ == "__main__":
    main()
