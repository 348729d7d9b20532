#!/usr/bin/env python
"""Throughput of `ecgscan import` and `ecgscan snr-check`, and `ecgscan --help` start-up time.

    python benchmarks/bench_import_snr.py [--repeats 3] [--ptbxl ../shared/data/ptbxl-sample]

Prints plain figures (median of repeats). The PTB-XL parts are skipped, with a note,
when the sample is not there. Runs on CPU; no GPU involved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PTBXL = Path(os.environ.get("ECGSCAN_PTBXL_SAMPLE", REPO.parent / "shared" / "data" / "ptbxl-sample"))


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ptbxl", type=Path, default=DEFAULT_PTBXL)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from ecgscan_cli.snr import lead_snr_table
    from ecgscan_cli.synth import synthesize, write_synth
    from ecgscan_cli.importing import import_records

    tmp = Path(tempfile.mkdtemp(prefix="ecgscan-bench-"))
    try:
        print(f"cpu cores: {os.cpu_count()}, repeats: {args.repeats} (median reported)")
        # start-up
        walls = []
        for _ in range(max(5, args.repeats)):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ecgscan_cli", "--help"], cwd=REPO, capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
        print(f"ecgscan --help start-up: {statistics.median(walls):.3f} s (median of {len(walls)}, "
              f"python -m ecgscan_cli)")

        # synthetic data
        n = 1000
        sec, _ = timed(lambda: synthesize(n, seed=0), args.repeats)
        print(f"synthesize: {n / sec:.0f} records/s ({n} records in {sec:.2f} s, in memory)")
        sec, path = timed(lambda: write_synth(tmp / "synth.h5", 200, overwrite=True), args.repeats)
        print(f"synth -> signals file: {200 / sec:.0f} records/s")
        sec, res = timed(lambda: lead_snr_table(path), args.repeats)
        print(f"snr-check (signals file, synthetic): {len(res.ids) / sec:.0f} records/s")

        if not (args.ptbxl / "ptbxl_database.csv").exists():
            print(f"PTB-XL sample not found at {args.ptbxl}: import/snr-check on real data skipped")
            return 0
        out = tmp / "ptbxl.h5"
        for workers in (1, 2):
            sec, (path, stats) = timed(lambda: import_records(args.ptbxl, out, overwrite=True, workers=workers),
                                       args.repeats)
            print(f"import PTB-XL sample ({stats.imported} records, 500 Hz, workers={workers}): "
                  f"{stats.imported / sec:.0f} records/s ({sec:.2f} s)")
        sec, (_, stats) = timed(lambda: import_records(args.ptbxl, tmp / "lr.h5", overwrite=True, sampling_rate=100,
                                                       workers=1), args.repeats)
        print(f"import PTB-XL sample at 100 Hz (resampled to 500 Hz): {stats.imported / sec:.0f} records/s")
        sec, res = timed(lambda: lead_snr_table(out), args.repeats)
        print(f"snr-check (signals file): {len(res.ids) / sec:.0f} records/s ({sec:.2f} s)")
        sec, res = timed(lambda: lead_snr_table(args.ptbxl, workers=1), args.repeats)
        print(f"snr-check (WFDB folder, read directly): {len(res.ids) / sec:.0f} records/s ({sec:.2f} s)")
        print("lead-SNR on the PTB-XL sample (dB):")
        print("  lead   mean  median    min    n")
        for r in res.summary:
            print(f"  {r['lead']:<4} {r['mean_db']:6.2f} {r['median_db']:7.2f} {r['min_db']:6.2f} {r['n']:4d}")
        from ecgscan_cli.snr import compare_signals

        sec, res = timed(lambda: compare_signals(out, out, align=True), 1)
        print(f"snr-check --reference --align (self): {len(res.ids) / sec:.0f} records/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
