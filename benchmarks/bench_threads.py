#!/usr/bin/env python
"""Throughput of a small CPU job with every core's thread vs ecgscan's automatic thread
count, alone and next to a competing CPU job (one busy process per `--compete` core).

    python benchmarks/bench_threads.py            # synth 1000 records + 20 small conv-net steps
    python benchmarks/bench_threads.py --compete 2

Each measurement runs in a fresh subprocess (thread pools are set once per process); the
competing job is a pure-Python busy loop started before and stopped after it. "all cores"
is torch's and OpenBLAS's own default; "automatic" is ``ecgscan --threads 0``
(ecgscan_cli.threads.default_threads: available CPUs minus the load average).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JOB = r"""
import sys, time
mode = sys.argv[1]
from ecgscan_cli.threads import available_cpus, set_threads
n = set_threads(available_cpus() if mode == "all" else 0)
import torch
from ecgscan_cli.synth import _synthesize
_synthesize(10)
t = time.perf_counter(); _synthesize(1000, seed=2); synth_s = time.perf_counter() - t
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, 2, 1),
                          torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(32, 3, 96, 96), torch.randint(0, 10, (32,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
step()
t = time.perf_counter()
for _ in range(20):
    step()
train_s = time.perf_counter() - t
print(n, 1000 / synth_s, 20 / train_s)
"""


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def measure(mode: str, compete: int) -> tuple[int, float, float]:
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(compete)]
    for b in burners:
        b.start()
    if compete:
        time.sleep(3)   # let the load average see the competing job (it is sampled every 5 s)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run([sys.executable, "-c", JOB, mode], capture_output=True, text=True, env=env, check=True)
    finally:
        stop.set()
        for b in burners:
            b.join()
    threads, synth_rps, train_sps = out.stdout.split()
    return int(threads), float(synth_rps), float(train_sps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compete", type=int, default=1, help="busy processes in the competing job")
    args = parser.parse_args()
    from ecgscan_cli.threads import available_cpus

    print(f"{available_cpus()} CPUs available; load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'setting':<11} {'competing':<10} {'threads':>7} {'synth rec/s':>12} {'train steps/s':>14}")
    for compete in (0, args.compete):
        for mode in ("all", "auto"):
            threads, synth_rps, train_sps = measure(mode, compete)
            label = "all cores" if mode == "all" else "automatic"
            print(f"{label:<11} {compete:<10} {threads:>7} {synth_rps:>12.0f} {train_sps:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
