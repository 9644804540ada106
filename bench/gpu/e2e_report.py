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
import math
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


def number(text):
    """`text` as a finite float, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_torch(path):
    """{stage: us} from torch_layer.py's CSV, or a reason it has none."""
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    except OSError as error:
        return f"{path}: {error.strerror}"
    if not rows or "stage" not in rows[0] or "median_us" not in rows[0]:
        return f"{path}: no stage,median_us rows"
    values = {}
    for row in rows:
        us = number(row["median_us"] or "")
        if us is None or us < 0:
            return f"{path}: stage '{row['stage']}' has median '{row['median_us']}' us"
        values[row["stage"]] = us
    return values


def ratio(theirs, ours):
    """theirs / ours as "N.NNx", or "-" where tamoe took no time."""
    return f"{theirs / ours:.2f}x" if ours > 0 else "-"


def read_profile(path):
    """{operation: (calls, median_us)} from the profile's markdown rows."""
    rows = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0].startswith("tamoe_rt_"):
                # A NaN or missing median made the layer "nan" and a
                # truncated row a traceback.
                calls, median = number(cells[1]), number(cells[2])
                if calls is None or calls < 0 or calls != int(calls) or \
                        median is None or median < 0:
                    sys.exit(f"e2e_report.py: {path}: bad row for {cells[0]}: "
                             f"calls '{cells[1]}', median '{cells[2]}' us")
                rows[cells[0]] = (int(calls), median)
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
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")

    profile = read_profile(args.profile)
    # The PyTorch columns: (heading, {stage: us}). A column whose CSV cannot
    # be read (a failed or cut-short PyTorch run) is left out, and the table
    # says so, rather than costing the tamoe table.
    columns = []
    left_out = []
    for heading, path in (("PyTorch", args.torch),
                          ("PyTorch, _grouped_mm experts", args.torch_grouped_mm)):
        if path:
            values = read_torch(path)
            if isinstance(values, str):
                left_out.append(f"{heading}: {values}")
            else:
                columns.append((heading, values))

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
        return f" {theirs:.1f} | {ratio(theirs, us)} |"

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
        row += f" **{theirs:.1f}** | **{ratio(theirs, total)}** |"
    print(row)
    for reason in left_out:
        print(f"\nNo {reason}.")
    print("\nMedians per call from the runtime's profile (each call timed until "
          "its work finished); a stage is the sum of its operations' medians "
          "times their calls per layer.")


if __name__ == "__main__":
    main()
