#!/usr/bin/env python3
"""Summarises the timeline files of TAMOE_RT_TIMELINE as markdown.

    python3 bench/timeline.py [--width N] PREFIX.rank0.csv [PREFIX.rank1.csv ...]

Each file has one line per interval (rank, stream, name, begin_us, end_us):
the runtime's operations on the "compute" stream and each exchange's rows
on "comm", from when they were posted until they were in. Per rank the
table gives the span, the time the ranks computed (every operation but the
exchange calls themselves: tamoe_rt_all_to_all*, whose time is the host
settling or waiting), the time rows were in flight, and how much of that
overlapped the compute: what a chunked layer hides. A chart of the first
rank follows, one character per slice of its span: '#' where the row is
busy for most of the slice, '+' where partly.
"""

import argparse
import csv
import math
import sys


def read(path):
    intervals = []
    try:
        file = open(path, newline="", errors="replace")
    except OSError as error:
        raise SystemExit(f"timeline.py: cannot read {path}: {error.strerror}")
    with file:
        rows = csv.reader(line for line in file if not line.startswith("#"))
        header = next(rows, None)
        if header != ["rank", "stream", "name", "begin_us", "end_us"]:
            raise SystemExit(f"timeline.py: {path}: not a timeline file "
                             f"(header {header})")
        for number, row in enumerate(rows, start=2):
            if len(row) != 5:
                raise SystemExit(f"timeline.py: {path}:{number}: expected 5 "
                                 f"fields, got {len(row)}")
            try:
                rank = int(row[0])
            except ValueError:
                raise SystemExit(f"timeline.py: {path}:{number}: the rank must "
                                 f"be an integer, got '{row[0]}'")
            try:
                begin, end = float(row[3]), float(row[4])
            except ValueError:
                begin = end = math.nan
            # nan or inf would carry into every sum and print in the table.
            if not (math.isfinite(begin) and math.isfinite(end)):
                raise SystemExit(f"timeline.py: {path}:{number}: begin_us and "
                                 f"end_us must be numbers")
            if end < begin:
                raise SystemExit(f"timeline.py: {path}:{number}: ends before "
                                 f"it begins")
            intervals.append((rank, row[1], row[2], begin, end))
    return intervals


def union(spans):
    """Sorted, disjoint intervals covering `spans`."""
    merged = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    return merged


def length(spans):
    return sum(end - begin for begin, end in spans)


def intersection(a, b):
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        begin, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, end - begin)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def is_exchange_call(name):
    return name.startswith("tamoe_rt_all_to_all")


def lanes(intervals):
    compute = union((b, e) for _, s, n, b, e in intervals
                    if s == "compute" and not is_exchange_call(n))
    calls = union((b, e) for _, s, n, b, e in intervals
                  if s == "compute" and is_exchange_call(n))
    comm = union((b, e) for _, s, _, b, e in intervals if s == "comm")
    return compute, calls, comm


def chart(rows, begin, end, width):
    lines = []
    step = (end - begin) / width if end > begin else 1.0
    for label, spans in rows:
        cells = []
        for i in range(width):
            lo, hi = begin + i * step, begin + (i + 1) * step
            busy = intersection(spans, [[lo, hi]]) / step
            cells.append("#" if busy >= 0.5 else "+" if busy > 0 else ".")
        lines.append(f"{label:<15}|{''.join(cells)}|")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--width", type=int, default=100)
    args = parser.parse_args()
    if args.width < 1:
        raise SystemExit("timeline.py: --width must be at least 1")
    ranks = {}
    for path in args.files:
        for interval in read(path):
            ranks.setdefault(interval[0], []).append(interval)
    if not ranks:
        raise SystemExit("timeline.py: the files hold no intervals")
    print("| rank | span (ms) | compute (ms) | rows in flight (ms) | "
          "rows in flight while computing (ms) | hidden |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rank in sorted(ranks):
        intervals = ranks[rank]
        compute, _, comm = lanes(intervals)
        span = (max(i[4] for i in intervals) - min(i[3] for i in intervals))
        hidden = intersection(compute, comm)
        share = (f"{100 * hidden / length(comm):.0f}%" if length(comm) > 0
                 else "-")
        print(f"| {rank} | {span / 1000:.2f} | {length(compute) / 1000:.2f} | "
              f"{length(comm) / 1000:.2f} | {hidden / 1000:.2f} | {share} |")
    first = min(ranks)
    intervals = ranks[first]
    begin = min(i[3] for i in intervals)
    end = max(i[4] for i in intervals)
    compute, calls, comm = lanes(intervals)
    print()
    print(f"Rank {first}, {(end - begin) / 1000:.2f} ms in {args.width} "
          f"slices:")
    print()
    print("```")
    print("\n".join(chart([("compute", compute), ("exchange calls", calls),
                           ("rows in flight", comm)], begin, end, args.width)))
    print("```")


if __name__ == "__main__":
    sys.exit(main())
