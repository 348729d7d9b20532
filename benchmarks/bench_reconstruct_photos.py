#!/usr/bin/env python
"""`ecgscan reconstruct` end to end on phone-photo-sized JPEGs: seconds per photo, one core.

Issue #12's speed goal: at most 2 s a photo on one CPU core, end to end (decode, downscale,
digitise, write). Renders held-out PTB-XL records (fold 8 of the PTB-XL sample) with the
`photo` preset, upscales each page to a 12-megapixel JPEG (4000 px wide, what a phone
takes), and runs `ecgscan reconstruct --threads 1` as its own process on one photo and on
all N. The marginal time (t_N − t_1) / (N − 1) is the cost of a photo without the start-up
(imports, weights); each pair is repeated and the medians printed.

    python benchmarks/bench_reconstruct_photos.py --signals ptbxl_sample.h5 [--photos 12] [--repeats 2]

``--pythonpath DIR`` runs another checkout's ecgscan (e.g. a `git worktree` of an older
commit) for side-by-side figures: pass it once per checkout; they run alternating.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _photos(signals: str, n: int, folder: Path, width: int) -> None:
    import numpy as np
    from PIL import Image

    from ecgscan_cli.digitize.evaluate import render_condition
    from ecgscan_cli.formats.signals import SignalsFile

    sf = SignalsFile(signals)
    rows = [i for i in range(len(sf)) if sf.folds is None or int(sf.folds[i]) == 8][:n]
    for k, i in enumerate(rows):
        page = render_condition(np.nan_to_num(sf.signal(i).astype(np.float64)), sf.fs, "photo", k)
        h = int(round(page.shape[0] * width / page.shape[1]))
        Image.fromarray(page).resize((width, h), Image.Resampling.BICUBIC).save(folder / f"{sf.ids[i]}.jpg", quality=90)


def _run(folder: Path, out: Path, pythonpath: str | None) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ecgscan_cli", "reconstruct", str(folder), "-o", str(out),
                    "--threads", "1", "--quiet", "--overwrite"], check=True, env=env, cwd=out.parent,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def photo_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every photo benchmark takes: the records, how many photos, their size, repeats."""
    ap.add_argument("--signals", required=True, help="signals file (ecgscan import) with folds")
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--width", type=int, default=4000, help="photo width in px (4000: ~12 MP)")
    ap.add_argument("--repeats", type=int, default=2)
    return ap


def main() -> None:
    ap = photo_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--pythonpath", action="append", default=[],
                    help="run the ecgscan found here instead (repeat to compare checkouts side by side)")
    args = ap.parse_args()
    versions = args.pythonpath or [None]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        many, one = tmp / "photos", tmp / "one"
        many.mkdir()
        one.mkdir()
        _photos(args.signals, args.photos, many, args.width)
        first = sorted(many.iterdir())[0]
        (one / first.name).write_bytes(first.read_bytes())
        per_photo = {v: [] for v in versions}
        for r in range(args.repeats):
            for v in versions:          # alternating, so drift in the machine's load hits all alike
                t1 = _run(one, tmp / "one.h5", v)
                tn = _run(many, tmp / "many.h5", v)
                per_photo[v].append((tn - t1) / (args.photos - 1))
                print(f"repeat {r + 1} {v or 'this checkout'}: 1 photo {t1:.2f} s, {args.photos} photos "
                      f"{tn:.2f} s, {per_photo[v][-1]:.2f} s a photo", flush=True)
    base = statistics.median(per_photo[versions[0]])
    for v in versions:
        m = statistics.median(per_photo[v])
        print(f"{v or 'this checkout'}: median {m:.2f} s a {args.width}-px photo (one core)"
              + (f", {m / base:.2f}× the first" if v != versions[0] else ""))


if __name__ == "__main__":
    main()
