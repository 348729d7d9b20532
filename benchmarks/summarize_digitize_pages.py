"""One table from digitiser benchmark runs' pages (``bench_digitize.py --pages``), several runs pooled.

For each (method, condition): pages, mean aligned dB with a 95 % bootstrap interval (pages
resampled, 2,000 times, seed 0: over records where each record has one page), mean
PhysioNet 2024 dB, pages refused, pages below 3 dB aligned and the median seconds a page.
The files' pages are pooled as they are: runs split with ``--start``/``--limit``, or the
same records under other ``--seed``s (two pages of a record, then). ``--without`` leaves
out the records of a signals file (e.g. the PTB-XL sample inside the full data set's fold 8).

    python benchmarks/summarize_digitize_pages.py f8_0.jsonl f8_100.jsonl --without sample500.h5
"""

from __future__ import annotations

import argparse
import json

import numpy as np

BELOW_DB = 3.0


def load(paths: list[str]) -> list[dict]:
    pages = []
    for path in paths:
        with open(path) as f:
            pages += [json.loads(line) for line in f if line.strip()]
    return pages


def summarize(pages: list[dict], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for method, condition in dict.fromkeys((p["method"], p["condition"]) for p in pages):
        sel = [p for p in pages if (p["method"], p["condition"]) == (method, condition)]
        a = np.array([p["aligned_db"] for p in sel])
        lo, hi = np.percentile(a[rng.integers(0, a.size, (2000, a.size))].mean(1), [2.5, 97.5])
        rows.append({"method": method, "condition": condition, "pages": a.size, "aligned_db": a.mean(),
                     "ci": (lo, hi), "physionet2024_db": float(np.mean([p.get("physionet2024_db", np.nan) for p in sel])),
                     "refused": sum(bool(p.get("error")) for p in sel), "below": int((a < BELOW_DB).sum()),
                     "median_s": float(np.median([p.get("seconds", np.nan) for p in sel]))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="+", help="pages files (JSON lines) of bench_digitize.py --pages")
    ap.add_argument("--without", help="signals file (.h5) whose records are left out")
    args = ap.parse_args()
    pages = load(args.pages)
    if args.without:
        from ecgscan_cli.formats.signals import SignalsFile

        left_out = set(SignalsFile(args.without).ids)
        pages = [p for p in pages if p["record"] not in left_out]
    if not pages:
        raise SystemExit("no pages to summarize")
    print(f"method | condition | pages | aligned dB [95 % CI] | physionet2024 dB | refused | below {BELOW_DB:g} dB "
          "| median s")
    for r in summarize(pages):
        print(f"{r['method']} | {r['condition']} | {r['pages']} | {r['aligned_db']:.2f} [{r['ci'][0]:.2f}, "
              f"{r['ci'][1]:.2f}] | {r['physionet2024_db']:.2f} | {r['refused']} | {r['below']} | {r['median_s']:.2f}")


if __name__ == "__main__":
    main()
