"""Does the tiny preset learn? Held-out retrieval and reconstruction beside chance and a fresh init.

    python benchmarks/bench_learning.py                          # synthetic data (ecgscan synth)
    python benchmarks/bench_learning.py --steps 1200
    python benchmarks/bench_learning.py --ptbxl ../shared/data/ptbxl-sample --steps 600

Synthetic: trains the tiny preset on ``--records`` synthetic records and scores 200 held-out
records of another seed (``ecgscan_cli.heldout``), for the same architecture freshly
initialised (not the run's own step 0) and the trained one. PTB-XL: imports the sample folder, trains with folds 1-8 / 9-10,
and prints the validation loss per term at every evaluation (the loss curves) plus the
held-out metrics on those two folds. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--ptbxl", default=None, help="PTB-XL folder (e.g. ../shared/data/ptbxl-sample)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from ecgscan_cli.heldout import trained_vs_fresh_init
    from ecgscan_cli.train import pretrain, resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"max_steps": args.steps, "eval_every": args.eval_every, "save_every": args.steps, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.ptbxl:
            from ecgscan_cli.formats.signals import SignalsFile
            from ecgscan_cli.importing import import_records

            data, _ = import_records(args.ptbxl, tmp / "ptbxl.h5", label_set="superclass")
            heldout_folds = sorted(set(SignalsFile(data).folds.tolist()))[-2:]  # PTB-XL: 9, 10; the sample: 7, 8
            overrides.update(split="folds", val_folds=heldout_folds, test_folds=[], max_val=1000)
        else:
            from ecgscan_cli.synth import write_synth

            data = write_synth(tmp / "train.h5", args.records, seed=1)
        cfg = resolve_config("tiny", overrides=overrides)
        res = pretrain(data, tmp / "run", cfg, device="cpu")
        for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("split") == "val":
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}))
        if args.ptbxl:
            sf = SignalsFile(data)
            idx = [i for i in range(len(sf)) if int(sf.folds[i]) in heldout_folds]
            signals, reports, labels = sf.signals(idx), [sf.reports[i] for i in idx], sf.labels[idx]
        else:
            from ecgscan_cli.synth import synthesize

            held = synthesize(200, seed=99)
            signals, reports, labels = held.signals, held.reports, held.labels
        for encoder, m in trained_vs_fresh_init(tmp / "run", signals, reports, labels).items():
            print(json.dumps({"encoder": encoder, "steps": res.step, "data": "ptbxl" if args.ptbxl else "synth",
                              **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}}))


if __name__ == "__main__":
    main()
