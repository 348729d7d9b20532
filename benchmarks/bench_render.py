"""Renderer speed and memory. Plain script: prints figures (copy them into docs/render.md).

    python benchmarks/bench_render.py            # everything (~5 min on 2 cores)
    python benchmarks/bench_render.py --quick    # fewer repetitions, smaller memory runs

1. Full page, 200 dpi, clean (numpy page renderer): images/s, next to ecg-image-kit
   (4.5 s/page measured on this machine, whole process; 0.7 s/page its own figure, Apple M2).
2. Encoding one page: PNG (compress_level 1 and default), JPEG q90, HDF5 gzip-1 chunk.
3. Model size 224 and 448, batch 64, ``augment="none"`` and ``"paper"``: images/s on CPU
   (and on CUDA when present).
4. Peak memory (max RSS of a fresh process) of rendering N synthetic records to an HDF5
   images file, for two N: flat peak → streaming; extrapolated to 10,000 records.

    python benchmarks/bench_render.py --against /tmp/old   # this tree vs another, side by side

``--against TREE`` times both renderers (pages at 200/100/50 dpi, targets, batches at 224
and 448) in fresh one-thread processes, alternating this tree and ``TREE`` (a folder holding
another ``ecgscan_cli``, e.g. ``git archive HEAD ecgscan_cli | tar -x -C /tmp/old``), and
prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PTBXL = Path(os.environ.get("ECGSCAN_PTBXL_SAMPLE", REPO.parent / "shared" / "data" / "ptbxl-sample"))
KIT_LOCAL_S = 4.5
KIT_OWN_S = 0.7


CPU = {}


def median_time(fn, reps):
    """Median wall time; the median process CPU time (all threads) goes to CPU['last'].

    On a shared machine wall time includes waiting for a core; CPU time is what the work
    itself costs (per core-second).
    """
    ts, cs = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    CPU["last"] = float(np.median(cs))
    return float(np.median(ts))


def records(n):
    if (PTBXL / "records500").is_dir():
        import wfdb

        from ecgscan_cli.leads import LEADS, canonical_lead_name

        out = []
        for f in sorted((PTBXL / "records500").glob("*/*_hr.hea"))[:n]:
            sig, fields = wfdb.rdsamp(str(f.with_suffix("")))
            names = [canonical_lead_name(s) for s in fields["sig_name"]]
            out.append(sig[:, [names.index(lead) for lead in LEADS]].T.astype(np.float32))
        return np.stack(out), "PTB-XL"
    from ecgscan_cli.synth import synthesize

    return synthesize(n, seed=0).signals, "synthetic"


def bench_pages(reps):
    from ecgscan_cli.render import render_page

    sigs, src = records(20)  # the same 20 records whatever reps is: amplitudes change the cost a little
    render_page(sigs[0])  # background built once, glyphs cached
    i = iter(range(10**9))
    t = median_time(lambda: render_page(sigs[next(i) % len(sigs)]), reps)
    c = CPU["last"]
    print(f"full page 200 dpi clean ({src}): wall {t * 1e3:.1f} ms/page = {1 / t:.1f} pages/s; "
          f"CPU {c * 1e3:.1f} ms/page = {1 / c:.0f} pages/s per core (median of {reps})")
    print(f"  vs ecg-image-kit 4.5 s/page here: {KIT_LOCAL_S / t:.0f}x (wall), {KIT_LOCAL_S / c:.0f}x (CPU); "
          f"vs its own 0.7 s/page (M2): {KIT_OWN_S / t:.0f}x (wall), {KIT_OWN_S / c:.0f}x (CPU)")
    print(f"  load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return render_page(sigs[0])[0]


def bench_encode(page, reps):
    import h5py
    from PIL import Image

    im = Image.fromarray(page)

    def png(level):
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=level)
        return buf

    def jpg():
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        return buf

    for name, fn in (("PNG level 1", lambda: png(1)), ("PNG default (6)", lambda: png(6)), ("JPEG q90", jpg)):
        t = median_time(fn, reps)
        print(f"encode {name}: wall {t * 1e3:.0f} ms/page, CPU {CPU['last'] * 1e3:.0f} ms/page, "
              f"{len(fn().getvalue()) / 1e3:.0f} kB")
    with tempfile.TemporaryDirectory() as d:
        with h5py.File(Path(d) / "x.h5", "w") as f:
            ds = f.create_dataset("image", shape=(reps,) + page.shape, dtype="uint8", chunks=(1,) + page.shape,
                                  compression="gzip", compression_opts=1)
            k = iter(range(reps))
            t = median_time(lambda: ds.__setitem__(next(k), page), reps)
        size = (Path(d) / "x.h5").stat().st_size / reps
    print(f"encode HDF5 gzip-1 chunk: wall {t * 1e3:.0f} ms/page, CPU {CPU['last'] * 1e3:.0f} ms/page, "
          f"{size / 1e3:.0f} kB")


def bench_batch(reps, threads=None):
    import torch

    if threads:
        torch.set_num_threads(threads)
    from ecgscan_cli.render import render_batch

    sigs, src = records(16)
    x = torch.from_numpy(np.concatenate([sigs] * 4)[:64])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"batch renderer, batch 64 ({src}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for dev in devices:
        xd = x.to(dev)
        for size in (224, 448):
            for aug in ("none", "paper"):
                g = torch.Generator(device=dev).manual_seed(0)
                render_batch(xd, size, aug, generator=g)

                def once():
                    render_batch(xd, size, aug, generator=g)
                    if dev == "cuda":
                        torch.cuda.synchronize()

                t = median_time(once, reps)
                c = CPU["last"]
                print(f"  {dev} {size}px augment={aug}: wall {t * 1e3:.0f} ms/batch = {64 / t:.0f} images/s; "
                      f"CPU {c * 1e3:.0f} ms/batch = {64 / c:.0f} images/s per core")


MEM_SCRIPT = r"""
import sys, time
from ecgscan_cli.render.files import RenderJob, render_file
from ecgscan_cli.render.layout import LayoutOptions
src, out, size, dpi = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
job = RenderJob(src, "h5", LayoutOptions(), "none", dpi, None if size == "page" else int(size), 0)
t = time.perf_counter()
render_file(job, out)
dt = time.perf_counter() - t
# VmHWM: peak RSS of this process image (ru_maxrss would include the parent's, kept across exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(hwm, dt)
"""


def bench_memory(counts, page_counts):
    from ecgscan_cli.synth import write_synth

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        src = d / "synth.h5"
        write_synth(src, max(counts + page_counts), seed=0)
        from ecgscan_cli.formats.signals import SignalsFile, write_signals

        sf = SignalsFile(src)
        for label, ns, size in (("224 px, paper=none", counts, "224"), ("full page 200 dpi", page_counts, "page")):
            rows = []
            for n in ns:
                sub = d / f"sub{n}.h5"
                if not sub.exists():
                    write_signals(sub, sf.signals(range(n)), sf.ids[:n], sf.reports[:n], sf.labels[:n],
                                  sf.classes, sf.folds[:n])
                out = d / f"out{n}_{size}.h5"
                r = subprocess.run([sys.executable, "-c", MEM_SCRIPT, str(sub), str(out), size, "200"],
                                   capture_output=True, text=True, check=True)
                rss, dt = map(float, r.stdout.split())
                rows.append((n, rss, dt, out.stat().st_size))
                print(f"  {label}: {n} records → peak RSS {rss:.0f} MB, {dt:.1f} s "
                      f"({n / dt:.1f} records/s), file {out.stat().st_size / 1e6:.1f} MB")
                out.unlink()
            # least-squares slope over all counts: single peaks wobble by ±15 MB (allocator)
            n_, r_ = np.array([r[0] for r in rows], float), np.array([r[1] for r in rows])
            slope = float(np.polyfit(n_, r_, 1)[0]) if len(rows) > 1 else 0.0
            n1, r1, t1, s1 = rows[-1]
            at_10k = r1 + slope * (10000 - n1)
            print(f"  {label}: peak grows {slope * 1000:.2f} MB per 1,000 records → ~{at_10k:.0f} MB for 10,000 "
                  f"records (extrapolated; file ~{s1 / n1 * 10000 / 1e9:.1f} GB, ~{t1 / n1 * 10000 / 60:.0f} min)")


COMPARE_SCRIPT = r"""
import json, time, sys, numpy as np, torch
torch.set_num_threads(1)
from ecgscan_cli.render import render_batch, render_page
from ecgscan_cli.render.targets import page_targets
from ecgscan_cli.synth import synthesize
x = synthesize(8, seed=0).signals.astype(np.float32)
xt = torch.from_numpy(np.concatenate([x] * 4))               # batch 32
reps = int(sys.argv[1])
def med(fn):
    fn()                                                     # caches (background, plan) built once
    ts = []
    for i in range(reps):
        t = time.perf_counter(); fn(i); ts.append(time.perf_counter() - t)
    return float(np.median(ts))
out = {}
for dpi in (200.0, 100.0, 50.0):
    out[f"page {dpi:g} dpi (ms/page)"] = 1e3 * med(lambda i=0: render_page(x[i % 8], dpi=dpi, return_meta=False))
out["targets 100 dpi (ms/page)"] = 1e3 * med(lambda i=0: page_targets(x[i % 8], dpi=100.0))
for size in (224, 448):
    out[f"batch 32 at {size} (ms/batch)"] = 1e3 * med(lambda i=0: render_batch(xt, size))
print(json.dumps(out))
"""


def bench_against(other: str, rounds: int, reps: int):
    """Median timings of this tree and ``other``, measured alternately in fresh processes."""
    import json

    trees = {"this": str(REPO), "other": str(Path(other).resolve())}
    runs = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": "1"}
            r = subprocess.run([sys.executable, "-c", COMPARE_SCRIPT, str(reps)], capture_output=True, text=True,
                               check=True, env=env, cwd=tempfile.gettempdir())
            runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"{'':32s} {'other':>9s} {'this':>9s} {'this/other':>10s}   (medians of {rounds}×{reps}, 1 thread)")
    for key in runs["this"][0]:
        a = float(np.median([r[key] for r in runs["other"]]))
        b = float(np.median([r[key] for r in runs["this"]]))
        print(f"{key:32s} {a:9.2f} {b:9.2f} {b / a:10.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for the batch renderer")
    ap.add_argument("--against", metavar="TREE", help="time this tree against the ecgscan_cli in TREE")
    a = ap.parse_args()
    if a.against:
        bench_against(a.against, 3 if a.quick else 5, 5 if a.quick else 15)
        return
    reps = 5 if a.quick else 15
    if not a.memory_only:
        page = bench_pages(4 * reps)
        bench_encode(page, max(3, reps // 3))
        bench_batch(3 if a.quick else 5, a.threads)
    if not a.skip_memory:
        bench_memory([200, 500] if a.quick else [500, 2000, 5000], [20, 60] if a.quick else [50, 150, 300])


if __name__ == "__main__":
    main()
