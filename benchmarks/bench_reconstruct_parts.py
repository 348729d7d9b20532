#!/usr/bin/env python
"""Where `reconstruct`'s time goes on a 12-MP photo: seconds a photo per step, one core, in-process.

Renders held-out PTB-XL records (fold 8) with the `photo` preset as 4000-px JPEGs (as
`bench_reconstruct_photos.py` does), reads each one as `ecgscan reconstruct` does (decode
and shrink to 2,400 px, the shipped TraceNet and restorer, the default readings) and times
the steps by wrapping the library's functions. Steps nest (a reading contains its deskew),
so the rows do not add up; ``total`` is the whole loop. Imports and weights are loaded
before the clock starts.

    python benchmarks/bench_reconstruct_parts.py --signals ptbxl_sample.h5 [--photos 12] [--repeats 2]

To compare two checkouts, run it with ``PYTHONPATH=OTHER_CHECKOUT`` and without,
alternating: in one process the noise is a few per cent, against ~10 % for whole runs.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

# (module, functions) timed; a function missing from a checkout is skipped
STEPS = {
    "ecgscan_cli.imageio": ["load_image", "_shrink"],
    "ecgscan_cli.digitize.image": ["predict_maps", "_refined_reading"],
    "ecgscan_cli.digitize.pipeline": ["digitize_maps", "deskew", "despeckle", "read_rows", "_trace_rows",
                                      "_follow_grid"],
    "ecgscan_cli.digitize.refine": ["refine_maps"],
    "ecgscan_cli.digitize.rectify": ["warp", "rectified_maps"],
    "ecgscan_cli.digitize.restore": ["restore_reading"],
}


def _timed(module, name: str, seconds: dict, calls: dict) -> None:
    f = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            calls[name] = calls.get(name, 0) + 1

    setattr(module, name, wrapper)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_reconstruct_photos import _photos, photo_arguments

    args = photo_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()

    import torch

    torch.set_num_threads(1)

    from ecgscan_cli import imageio, reconstruct
    from ecgscan_cli.digitize.image import load_digitizer
    from ecgscan_cli.digitize.restore import load_restorer

    seconds, calls = {}, {}
    for module_name, names in STEPS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                _timed(module, name, seconds, calls)
    net, restorer = load_digitizer(), load_restorer()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _photos(args.signals, args.photos, folder, args.width)
        files = sorted(folder.iterdir())
        reconstruct.digitize_page(imageio.load_image(files[0], reconstruct.DIGITIZE_MAX_SIDE), net,
                                  restorer=restorer)      # warm-up: lazy imports, first allocations
        totals, runs = [], {}
        for r in range(args.repeats):
            seconds.clear()
            calls.clear()
            t0 = time.perf_counter()
            for f in files:
                page = imageio.load_image(f, reconstruct.DIGITIZE_MAX_SIDE)
                reconstruct.digitize_page(page, net, restorer=restorer)
            totals.append((time.perf_counter() - t0) / len(files))
            for name, s in seconds.items():
                runs.setdefault(name, []).append((s / len(files), calls[name] / len(files)))
            print(f"repeat {r + 1}: {totals[-1]:.3f} s a photo", flush=True)
    print(f"{'step':22s} s a photo (median)  calls a photo")
    print(f"{'total':22s} {statistics.median(totals):.3f}")
    for name, vals in sorted(runs.items(), key=lambda kv: -statistics.median(v[0] for v in kv[1])):
        print(f"{name:22s} {statistics.median(v[0] for v in vals):.3f}               {vals[0][1]:.1f}")


if __name__ == "__main__":
    main()
