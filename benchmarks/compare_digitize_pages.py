"""Paired comparison of two digitiser benchmark runs on the same pages (``bench_digitize.py --pages``).

For each (method, condition): pages in both runs, mean aligned dB of each, the mean paired
difference B − A with a 95 % bootstrap interval (pages resampled, 2,000 times, seed 0), and
on how many pages B scored higher / lower than A.

    python benchmarks/compare_digitize_pages.py before.jsonl after.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def load(path: str) -> dict:
    with open(path) as f:
        return {(p["method"], p["condition"], p["record"], p["dpi"]): p["aligned_db"]
                for p in map(json.loads, f) if p}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="pages of run A (the baseline)")
    ap.add_argument("b", help="pages of run B")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit("no page is in both runs")
    rng = np.random.default_rng(0)
    print("method | condition | pages | A dB | B dB | B − A [95 % CI] | B higher | B lower")
    for method, condition in dict.fromkeys((k[0], k[1]) for k in common):
        keys = [k for k in common if k[:2] == (method, condition)]
        x, y = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])
        d = y - x
        boot = d[rng.integers(0, d.size, (2000, d.size))].mean(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{method} | {condition} | {d.size} | {x.mean():.2f} | {y.mean():.2f} | "
              f"{d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}] | {int((d > 0).sum())} | {int((d < 0).sum())}")


if __name__ == "__main__":
    main()
