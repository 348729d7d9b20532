#!/usr/bin/env python
"""Whole-process `ecgscan render` to a folder of PNG or JPG pages (200 dpi letter pages):
marginal seconds per page and pages/s, with one worker and with the default workers (the
available CPUs), alone and next to a competing CPU job; against ecg-image-kit's 3.43 s/page.

    python benchmarks/bench_render_files.py             # 4 and 20 records per run
    python benchmarks/bench_render_files.py --n 8 40

Marginal cost = (time(N2) - time(N1)) / (N2 - N1): start-up (Python, imports) cancels out.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
KIT_S_PER_PAGE = 3.43   # ecg-image-kit, whole process, measured in issue 14


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def render_seconds(signals: Path, n: int, fmt: str, workers: int, out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ecgscan_cli", "render", str(signals), "-o", str(out),
                    "--image-format", fmt, "--limit", str(n), "--workers", str(workers), "-q", "--overwrite"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs=2, default=(4, 20), help="records in the short and long run")
    parser.add_argument("--compete", type=int, default=1, help="busy processes in the competing job")
    args = parser.parse_args()
    from ecgscan_cli.synth import write_synth
    from ecgscan_cli.threads import available_cpus

    n1, n2 = args.n
    cpus = available_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        signals = write_synth(tmp / "s.h5", n2, seed=0)
        print(f"{cpus} CPUs; load average {os.getloadavg()[0]:.2f}; ecg-image-kit {KIT_S_PER_PAGE} s/page")
        print(f"{'format':<6} {'workers':>7} {'competing':>9} {'s/page':>8} {'pages/s':>8} {'vs kit':>7}")
        for compete in (0, args.compete):
            stop = mp.Event()
            burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(compete)]
            for b in burners:
                b.start()
            try:
                for fmt in ("png", "jpg"):
                    for workers in sorted({1, cpus}):
                        t1 = render_seconds(signals, n1, fmt, workers, tmp / "pages")
                        t2 = render_seconds(signals, n2, fmt, workers, tmp / "pages")
                        per_page = max(t2 - t1, 1e-9) / (n2 - n1)
                        print(f"{fmt:<6} {workers:>7} {compete:>9} {per_page:>8.3f} {1 / per_page:>8.1f} "
                              f"{KIT_S_PER_PAGE / per_page:>6.0f}×", flush=True)
            finally:
                stop.set()
                for b in burners:
                    b.join()


if __name__ == "__main__":
    main()
