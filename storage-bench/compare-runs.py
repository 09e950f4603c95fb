#!/usr/bin/env python3
"""Compares two run-suite.sh result files line by line (the same workloads in the same order):
each workload's MB/s and records/s before and after, the change, and the fresh-file durable
limit (fdatasync-1MiB, mean of the measurements around it) each run saw, for the noise.
Usage: storage-bench/compare-runs.py BEFORE.jsonl AFTER.jsonl"""
import json
import sys


def load(path):
    """The workload lines of a result file, each with the fresh-file limits measured around it."""
    runs, limits = [], []
    with open(path) as lines:
        for line in lines:
            row = json.loads(line)
            if row["mode"] == "limit":
                if row["test"] == "fdatasync-1MiB":
                    limits.append(row["mb_per_sec"])
                continue
            row["fresh_limit"] = sum(limits[-2:]) / max(1, len(limits[-2:]))
            limits = []
            runs.append(row)
    return runs


def name(row):
    keys = ["shards", "writers", "batch", "record_size", "durability", "inflight"]
    return row["mode"] + " " + " ".join(f"{k}={row[k]}" for k in keys if k in row)


before, after = load(sys.argv[1]), load(sys.argv[2])
if [name(r) for r in before] != [name(r) for r in after]:
    sys.exit("the two files do not hold the same workloads in the same order")
print(f"{'workload':<78} {'MB/s before':>11} {'after':>8} {'change':>7}   fresh-file limit before / after")
for old, new in zip(before, after):
    change = (new["mb_per_sec"] / old["mb_per_sec"] - 1) * 100 if old["mb_per_sec"] else 0
    print(f"{name(old):<78} {old['mb_per_sec']:>11.1f} {new['mb_per_sec']:>8.1f} {change:>+6.1f}%"
          f"   {old['fresh_limit']:.0f} / {new['fresh_limit']:.0f}")
