"""Pretraining throughput: steps/s, images/s and the share of step time spent rendering.

    python benchmarks/bench_pretrain.py                       # tiny preset on CPU
    python benchmarks/bench_pretrain.py --preset paper --device cuda --image-pretrained none

Runs ``ecgscan_cli.train.pretrain`` on a synthetic signals file for a few steps with a
ready-made signal teacher (so the teacher stage is not timed) and reads the throughput
from the run's metrics.jsonl (warm-up window excluded). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup-steps", type=int, default=10, help="first window, left out of the figures")
    ap.add_argument("--records", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--augment", default=None)
    ap.add_argument("--text-model", default=None, help="default: the preset's (tiny: minilm)")
    ap.add_argument("--image-pretrained", default=None, help="'none' for random weights (no download)")
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ecgscan_cli.encoders import BuiltinSignalEncoder, save_signal_encoder
    from ecgscan_cli.synth import write_synth
    from ecgscan_cli.train import pretrain, resolve_config

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_synth(tmp / "synth.h5", args.records, seed=0)
        overrides = {"max_steps": args.steps, "log_every": args.warmup_steps, "eval_every": 10 ** 9,
                     "save_every": 10 ** 9, "max_val": 2, "batch_size": args.batch_size, "augment": args.augment,
                     "num_workers": args.num_workers, "model.text_model": args.text_model}
        if args.image_pretrained:
            overrides["model.image_pretrained"] = None if args.image_pretrained == "none" else args.image_pretrained
        cfg = resolve_config(args.preset, overrides=overrides)
        save_signal_encoder(BuiltinSignalEncoder(cfg.model.signal_dim, cfg.teacher_width), tmp / "teacher")
        cfg.signal_encoder = str(tmp / "teacher")
        t = time.perf_counter()
        pretrain(data, tmp / "run", cfg, device=args.device)
        wall = time.perf_counter() - t
        rec = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rec if r["split"] == "train"][1:]  # drop the warm-up window
        steps = sum(args.warmup_steps for _ in train)
        seconds = sum(args.warmup_steps / r["steps_per_s"] for r in train)
        render = sum(r["render_share"] * args.warmup_steps / r["steps_per_s"] for r in train)
        print(json.dumps({
            "preset": args.preset, "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "threads": torch.get_num_threads(), "batch_size": cfg.batch_size, "augment": cfg.augment,
            "image_size": cfg.model.image_size or "native", "steps_timed": steps,
            "steps_per_s": round(steps / seconds, 3), "images_per_s": round(steps * cfg.batch_size / seconds, 1),
            "render_share": round(render / seconds, 3), "wall_s_incl_setup": round(wall, 1)}))


if __name__ == "__main__":
    main()
