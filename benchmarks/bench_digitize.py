"""How well the digitiser reads held-out PTB-XL records: SNR per page condition, and speed.

Renders records of the held-out fold (default: fold 8 of the PTB-XL sample at 500 Hz, a
fold `train-digitizer` never reads) as 200-dpi pages (`--dpi` for others) — clean, and
augmented with the `paper`, `heavy` and `photo` presets — digitises each page with TraceNet
(the shipped weights, or --weights; `net` with the second readings competing and the
restorer after them, as `reconstruct` reads; `net-raw` the same without the restorer;
`net-working` without second readings, as `reconstruct --quick`), with the training-free classical maps and, with `--methods exact`, from the
page's exact maps moved by the same augmentations (the steps after the maps alone), and
prints, per (method, dpi, condition): the mean aligned SNR (the issue's metric: ±0.5 s
shift, per-lead offset, × coverage; reference masked to what the page shows), the
PhysioNet 2024 scorer's
SNR, pages refused, pages where the refined reading won, and the median seconds per page
(digitisation only, one thread).

    python benchmarks/bench_digitize.py --signals ptbxl_sample.h5 --limit 20
    python benchmarks/bench_digitize.py --signals ptbxl_sample.h5 --layout 6x2 --methods net
    python benchmarks/bench_digitize.py --signals ptbxl_sample.h5 --speed 50 --conditions clean,paper
    python benchmarks/bench_digitize.py --signals ptbxl_sample.h5 --limit 44 --seed 1000 --methods net
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signals", required=True, help="signals file (ecgscan import) with folds")
    ap.add_argument("--folds", default="8", help="held-out folds to read, e.g. '8' or '9-10'")
    ap.add_argument("--limit", type=int, default=20, help="records per condition")
    ap.add_argument("--start", type=int, default=0, help="skip this many records of the folds first")
    ap.add_argument("--seed", type=int, default=0, help="augmentation seed of the first record (record k "
                    "gets seed + k): another seed draws other pages of the same records")
    ap.add_argument("--weights", default=None, help="TraceNet weights (default: the shipped ones)")
    ap.add_argument("--conditions", default="clean,paper,heavy,photo",
                    help="clean, augmentation presets (paper, heavy, photo, phone) or augmentation config files")
    ap.add_argument("--methods", default="net,net-working,classical",
                    help="net: TraceNet with the refined reading competing, then the restorer "
                         "(reconstruct's default); net-raw: the same without the restorer; net-working: TraceNet's maps only (reconstruct --quick); classical; "
                         "exact: the page's exact maps moved with it (what the steps after the maps lose)")
    ap.add_argument("--restorer", default=None, help="restorer weights for net and net-working (default: the "
                    "shipped ones; 'none': no restorer)")
    ap.add_argument("--dpi", default="200", help="page resolutions to render, e.g. '150,200,300'")
    ap.add_argument("--layout", default="3x4+1", help="printout layout of the pages: 3x4+1, 3x4+3 or 6x2")
    ap.add_argument("--speed", type=float, default=25.0, help="paper speed of the pages, 25 or 50 mm/s "
                    "(the digitiser is told it, as `reconstruct --speed`)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--pages", default=None, help="also write every page's score here (JSON lines), "
                    "for paired comparisons of two runs")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from ecgscan_cli.digitize.evaluate import evaluate_digitizer, summarize_scores
    from ecgscan_cli.digitize.image import load_digitizer
    from ecgscan_cli.folds import parse_folds

    net = load_digitizer(args.weights)
    restorer = None
    if args.restorer != "none":
        from ecgscan_cli.digitize.restore import load_restorer

        restorer = load_restorer(args.restorer)
    rows, pages = [], []
    for dpi in (float(d) for d in args.dpi.split(",")):
        for method in args.methods.split(","):
            scores = evaluate_digitizer(args.signals, folds=parse_folds(args.folds), limit=args.limit,
                                        start=args.start, seed=args.seed, conditions=tuple(args.conditions.split(",")),
                                        method=method if method in ("classical", "exact") else "net",
                                        refine=method in ("net", "net-raw"), net=net, dpi=dpi, layout=args.layout,
                                        speed_mm_s=args.speed, restorer=None if method == "net-raw" else restorer,
                                        progress=lambda s: print(".", end="", file=sys.stderr, flush=True))
            print(file=sys.stderr)
            rows += [{"method": method, "dpi": f"{dpi:g}", **r} for r in summarize_scores(scores)]
            pages += [{"method": method, **asdict(s)} for s in scores]
    if args.pages:
        with open(args.pages, "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in pages)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    cols = ["method", "dpi", "condition", "pages", "aligned_db", "physionet2024_db", "refused", "refined", "median_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
