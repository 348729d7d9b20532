"""The whole chain on synthetic data (or a real PTB-XL folder), written up as a report folder.

synthesise (or import) → render samples → pretrain (tiny preset) → embed (trained and
untrained encoder) → linear probe → zero-shot → reconstruct → reconstruction SNR →
``report/README.md`` with tables and PNG figures. Intermediate files stay in
``report/work/`` so every step can be re-run by hand with the printed commands.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.folds import format_folds
from ecgscan_cli.tables import markdown_table, wide_rows

log = logging.getLogger("ecgscan")


@dataclass
class DemoConfig:
    n: int = 600                  # synthetic records
    steps: int | None = None      # pretrain steps (None: the tiny preset's)
    max_minutes: float | None = 4.0   # wall-clock cap on the pretraining loop (keeps the demo < 10 min)
    data: str | None = None       # a PTB-XL folder instead of synthetic data
    labels: str = "superclass"    # PTB-XL label set with --data
    limit: int | None = None      # at most this many records from --data
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    probe_epochs: int = 100
    bootstrap: int = 200
    n_recon: int = 24             # test records reconstructed
    device: str = "auto"
    seed: int = 0


@dataclass
class DemoResult:
    report: Path
    timings: dict = field(default_factory=dict)
    probe: list = field(default_factory=list)
    zeroshot: object = None
    snr: dict = field(default_factory=dict)


def choose_folds(folds: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """pretrain's rule: the highest fold is test, the next validation, the rest train (PTB-XL 1-8/9/10)."""
    from ecgscan_cli.data import resolve_fold_split

    return resolve_fold_split(np.unique(folds), where="the demo data")


def _fig_renders(sig: np.ndarray, ids, path: Path, size: int, seed: int, fs: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from ecgscan_cli.render import render_batch

    k = min(3, len(sig))
    x = torch.from_numpy(np.ascontiguousarray(sig[:k]))
    rows = [("clean (embed/probe input)", "none"), ("training augmentation 'paper'", "paper")]
    fig, axes = plt.subplots(len(rows), k, figsize=(4 * k, 4 * len(rows)), squeeze=False)
    for r, (title, aug) in enumerate(rows):
        imgs = _readable_renders(x, size, aug, seed + r, render_batch, fs=fs)
        for c in range(k):
            axes[r, c].imshow(imgs[c])
            axes[r, c].set_axis_off()
            axes[r, c].set_title(f"{ids[c]}: {title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def readability(image: np.ndarray) -> float:
    """Contrast of an H×W×3 image in [0, 1]: the spread of its brightness (99.5th minus 0.5th
    percentile). A heavy blur + noise draw leaves a grey smear (spread far below the clean
    page's); a binarising draw leaves black and white blocks (spread 1)."""
    grey = np.asarray(image, np.float32).mean(axis=-1)
    return float(np.percentile(grey, 99.5) - np.percentile(grey, 0.5))


def _readable_renders(x, size: int, aug: str, seed: int, render_batch, tries: int = 6,
                      fs: float = canonical.FS) -> np.ndarray:
    """Example renders for the report: per record, of ``tries`` seeded draws of the
    augmentation, the one whose contrast is closest to the clean render's (neither a smear
    nor a binarised extreme; deterministic for a seed)."""
    import torch

    clean = render_batch(x, size=size, augment="none", fs=fs).permute(0, 2, 3, 1).numpy()
    if aug == "none":
        return clean
    target = np.array([readability(im) for im in clean])
    best, best_gap = None, None
    for t in range(tries):
        g = torch.Generator().manual_seed(seed * 1000 + t)
        imgs = render_batch(x, size=size, augment=aug, fs=fs, generator=g).permute(0, 2, 3, 1).numpy()
        gap = np.abs(np.array([readability(im) for im in imgs]) - target)
        if best is None:
            best, best_gap = imgs.copy(), gap
        else:
            better = gap < best_gap
            best[better], best_gap[better] = imgs[better], gap[better]
    return best


def _fig_page(sig: np.ndarray, path: Path, fs: float) -> None:
    """One full-resolution printout page (PNG)."""
    from PIL import Image

    from ecgscan_cli.render import render_page

    page, _ = render_page(sig, fs)
    Image.fromarray(np.asarray(page, np.uint8)).save(path, optimize=False, compress_level=1)


def _fig_losses(metrics: Path, path: Path, best_step: int | None = None) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics.is_file():
        return False
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in recs if r.get("split") == "train"]
    val = [r for r in recs if r.get("split") == "val"]
    if not train:
        return False
    terms = [k for k in ("loss", "clip", "gram", "mse", "lead") if k in train[0]]
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3), squeeze=False)
    for ax, k in zip(axes[0], terms):
        ax.plot([r["step"] for r in train], [r[k] for r in train], label="train")
        vk = f"val_{k}"
        if val and vk in val[0]:
            ax.plot([r["step"] for r in val], [r[vk] for r in val], "o-", label="val")
        if best_step is not None:
            ax.axvline(best_step, color="tab:green", ls="--", lw=1, label=f"best checkpoint (step {best_step})")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if k in ("mse", "lead"):
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def record_folds(ids, k: int = 10) -> np.ndarray:
    """Folds 1..k made from each record's id (CRC-32): the same record always lands in the
    same fold, whatever the order or number of records."""
    import zlib

    return np.array([zlib.crc32(str(rid).encode("utf-8", "surrogatepass")) % k + 1 for rid in ids], np.int16)


def has_folds(folds) -> bool:
    """At least 3 known folds: enough for train, validation and test."""
    return len({int(f) for f in folds if int(f) > 0}) >= 3


def _subset_signals(sf, indices, path: Path, folds=None) -> Path:
    """A signals file holding ``indices`` of ``sf`` (labels, folds, reports and label-set name kept;
    ``folds``, one per record of ``sf``, replaces the folds)."""
    from ecgscan_cli.formats.signals import SignalsWriter

    folds = sf.folds if folds is None else folds
    idx = list(indices)
    attrs = {k: sf.attrs[k] for k in ("label_set",) if k in sf.attrs}
    with SignalsWriter(path, fs=sf.fs, n_samples=sf.n_samples, classes=sf.classes, source=str(sf.path),
                       attrs=attrs, expected_rows=len(idx)) as w:
        for i in idx:
            w.append(sf.ids[i], sf.signal(i), report=sf.reports[i], label=sf.labels[i] if sf.classes else None,
                     fold=int(folds[i]))
    return Path(path)


def run_demo(out: str | Path, cfg: DemoConfig | None = None, *, overwrite: bool = False,
             progress_factory: Callable | None = None, stage: Callable[[str], None] | None = None) -> DemoResult:
    """Run the chain; write the report folder ``out`` atomically; return the numbers."""
    import contextlib

    from ecgscan_cli.atomic import atomic_output
    from ecgscan_cli.device import resolve_device
    from ecgscan_cli.embed import embed_to_file
    from ecgscan_cli.formats.embeddings import EmbeddingsFile
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.probe import ProbeConfig, roc_plot, run_probe, splits_from_folds
    from ecgscan_cli.reconstruct import reconstruct_to_file
    from ecgscan_cli.train import METRICS, resolve_config, pretrain
    from ecgscan_cli.zeroshot import zeroshot

    cfg = cfg or DemoConfig()
    pf = progress_factory or (lambda n, d: contextlib.nullcontext(None))
    say = stage or (lambda s: log.info("%s", s))
    dev = resolve_device(cfg.device)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    @contextlib.contextmanager
    def timed(name):
        t = time.perf_counter()
        say(name)
        yield
        timings[name] = time.perf_counter() - t

    with atomic_output(out, overwrite=overwrite, directory=True, kind="demo") as rep:
        work = rep / "work"
        work.mkdir()
        fig = rep / "figures"
        fig.mkdir()
        signals = work / "signals.h5"
        # 1. data
        if cfg.data:
            from ecgscan_cli.importing import import_records

            with timed(f"importing {cfg.data}"):
                import_records(cfg.data, signals, label_set=cfg.labels, limit=cfg.limit)
            data_desc = f"records from `{cfg.data}` (labels: {cfg.labels})"
            prompt_set = None
        else:
            from ecgscan_cli.synth import CLASSES, write_synth

            with timed(f"synthesising {cfg.n} labelled ECGs"):
                write_synth(signals, cfg.n, seed=cfg.seed)
            data_desc = f"{cfg.n} synthetic 12-lead ECGs (`ecgscan synth`), classes {', '.join(CLASSES)}"
            prompt_set = "synth"
        sf = SignalsFile(signals)
        if cfg.data and not has_folds(sf.folds):   # a WFDB folder: no folds of its own
            folded = work / "signals_folds.h5"
            _subset_signals(sf, range(len(sf)), folded, folds=record_folds(sf.ids))
            sf.close()
            signals = folded
            sf = SignalsFile(signals)
            data_desc += "; the data have no folds: folds 1-10 made from each record id (CRC-32)"
            log.info("%s has no folds: folds 1-10 made from each record id", cfg.data)
        tr_f, va_f, te_f = choose_folds(sf.folds)
        splits = splits_from_folds(sf.ids, sf.folds, tr_f, va_f, te_f)
        test_idx = [i for i, f in enumerate(sf.folds) if f in te_f]
        # 2. pretrain: on the train and validation folds; the test fold is never read
        overrides = {"seed": cfg.seed, "max_minutes": cfg.max_minutes, "teacher_steps": 100, "split": "folds",
                     "train_folds": tr_f, "val_folds": va_f, "test_folds": te_f}
        if cfg.steps is not None:
            overrides.update(max_steps=int(cfg.steps), eval_every=max(10, int(cfg.steps) // 3),
                             save_every=max(10, int(cfg.steps) // 3), log_every=max(1, min(10, int(cfg.steps) // 10)),
                             teacher_steps=max(10, min(150, int(cfg.steps) // 2)))
        tcfg = resolve_config("tiny", overrides=overrides)
        run = work / "run"
        with timed(f"pretraining the tiny preset ({tcfg.max_steps} steps)"):
            with pf(tcfg.max_steps, "pretrain") as adv:
                res = pretrain(signals, run, tcfg, device=str(dev), progress=adv)
        ckpt = res.best
        # 3. renders + losses
        with timed("figures: renders and loss curves"):
            from ecgscan_cli.checkpoint import read_meta

            size = int(read_meta(ckpt)["model_config"].get("image_size") or 128)
            sample = sf.signals(test_idx[:3])
            _fig_renders(sample, [sf.ids[i] for i in test_idx[:3]], fig / "renders.png", size, cfg.seed, sf.fs)
            _fig_page(sample[0], fig / "page.png", sf.fs)
            has_loss = _fig_losses(run / METRICS, fig / "loss_curves.png", res.best_step)
        # 4. embed
        embs = {}
        for enc in ("trained", "random"):
            with timed(f"embedding with the {enc} encoder"):
                p = work / f"emb_{enc}.h5"
                embed_to_file(ckpt, signals, p, encoder=enc, device=dev, seed=cfg.seed,
                              progress_factory=pf)
                embs[enc] = p
        # 5. probe
        with timed("linear probe (trained vs untrained)"):
            files = [EmbeddingsFile(embs["trained"]), EmbeddingsFile(embs["random"])]
            pcfg = ProbeConfig(fractions=tuple(cfg.fractions), epochs=cfg.probe_epochs, bootstrap=cfg.bootstrap,
                               seed=cfg.seed)
            probe_res = run_probe(files, None, splits, pcfg, names=["ECG-Scan (pretrained)", "untrained encoder"],
                                  warn=log.warning)
            roc_plot(probe_res, fig / "probe_roc.png")
        # 6. zero-shot on the test split
        with timed("zero-shot on the test split"):
            test_sig = _subset_signals(sf, test_idx, work / "test_signals.h5")
            zs = zeroshot(ckpt, test_sig, prompts=prompt_set, device=dev, thresholds=True, progress_factory=pf)
        # 7. reconstruct + SNR
        with timed("reconstruction + SNR"):
            recon_in = _subset_signals(sf, test_idx[: cfg.n_recon], work / "recon_truth.h5")
            recon = work / "recon.h5"
            reconstruct_to_file(ckpt, recon_in, recon, overlay_dir=fig / "overlays", max_overlays=3,
                                device=dev, progress_factory=pf)
            snr_rows, snr_lead = _snr_table(recon, recon_in)
        sf.close()
        timings["total"] = time.perf_counter() - t_all
        # 8. report
        _write_report(rep, data_desc, splits, tcfg, res, probe_res, zs, snr_rows, timings, has_loss,
                      sorted(p.name for p in (fig / "overlays").glob("*.png")), cfg,
                      rerun_commands(f"work/{signals.name}", tr_f, va_f, te_f))
    return DemoResult(Path(out), timings, probe_res, zs, snr_lead)


def _snr_table(recon: Path, truth: Path):
    """Reconstruction SNR per lead, as ``snr-check --reference`` reports it: (summary rows, {lead: mean dB})."""
    from ecgscan_cli.snr import compare_signals

    rows = [dict(x) for x in compare_signals(recon, truth).summary]
    return rows, {row.get("lead"): row.get("mean_db") for row in rows}


NOT_LEARNED_DB = 1.0   # mean SNR at or below this: the decoder outputs about the mean signal


def training_steps_text(steps_run: int, tcfg, stopped_by_budget: bool) -> str:
    """"N of M planned steps (cut by the time budget)" when training stopped short."""
    planned = int(getattr(tcfg, "max_steps", steps_run) or steps_run)
    if steps_run >= planned:
        return f"{steps_run} steps"
    budget = getattr(tcfg, "max_minutes", None)
    why = (f"cut by the {budget:g}-minute time budget" if stopped_by_budget and budget
           else "stopped before the planned end")
    return f"{steps_run} of {planned} planned steps ({why})"


def reconstruction_note(snr_rows: list[dict]) -> str | None:
    """A plain warning when the decoder did not learn (mean SNR over all leads ≤ 1 dB)."""
    overall = next((r for r in snr_rows if r.get("lead") == "all"), None)
    mean = overall.get("mean_db") if overall else None
    if mean is None or not math.isfinite(mean) or mean > NOT_LEARNED_DB:
        return None
    return (f"**Reconstruction was not learned** in this run: mean SNR {mean:.2f} dB (≤ {NOT_LEARNED_DB:g} dB), "
            "so the overlays below are nearly flat: the decoder outputs about the average signal. It needs "
            "far more training steps than this demo's time budget allows.")


def _write_report(rep: Path, data_desc, splits, tcfg, res, probe_res, zs, snr_rows, timings, has_loss,
                  overlays, cfg: DemoConfig, commands: list[str]) -> None:
    lines = ["# ecgscan demo report", "",
             f"Data: {data_desc}. Splits: {splits.description} "
             f"({len(splits.train)} / {len(splits.val)} / {len(splits.test)} records).", "",
             f"Pretraining: preset `{tcfg.preset}`, {training_steps_text(res.step, tcfg, res.stopped_early)}, batch {tcfg.batch_size}, "
             f"image model `{tcfg.model.image_model}`, text model `{tcfg.model.text_model}`, on the training and "
             "validation folds (the test fold is never read: `work/run/best/pretrain_ids.txt` lists what was); "
             f"best checkpoint `work/run/best` (step {res.best_step}, validation loss {_num(res.best_val)}; "
             f"at the last step {_num((res.val or {}).get('loss'))}).", ""]
    lines += ["## Renders", "", "Model-size renders of test records: clean (what embed/probe/zero-shot see) and "
              "with the training augmentation.", "", "![renders](figures/renders.png)", ""]
    lines += ["A full printout page (200 dpi):", "", "![page](figures/page.png)", ""]
    if has_loss:
        lines += ["## Pretraining losses", "", "From `work/run/metrics.jsonl`.", "",
                  "![losses](figures/loss_curves.png)", ""]
    rows, cols = wide_rows(probe_res)
    lines += ["## Linear probe", "",
              "Frozen embeddings, linear classifier (AdamW lr 1e-3, batch 16, up to "
              f"{cfg.probe_epochs} epochs), epoch chosen on validation macro AUROC, test macro AUROC % with "
              f"{cfg.bootstrap}-resample bootstrap 95% CI; the untrained encoder is the same architecture with "
              "random weights.", "", markdown_table(rows, cols), ""]
    notes = sorted({n for r in probe_res for n in r.notes})
    if notes:
        lines += ["Skipped: " + "; ".join(notes), ""]
    lines += ["![probe ROC](figures/probe_roc.png)", ""]
    zrows = [{"class": "macro", "AUROC %": 100 * zs.macro_auroc}] + \
            [{"class": c, "AUROC %": 100 * a} for c, a in zs.per_class.items()]
    lines += ["## Zero-shot", "", f"Cosine similarity to the `{zs.prompt_set}` class descriptions, test split "
              f"(n={zs.n}).", "", markdown_table(zrows, ["class", "AUROC %"]), ""]
    if zs.skipped:
        lines += [f"Not scored (one label only): {', '.join(zs.skipped)}", ""]
    lines += ["## Reconstruction", "", "Decoded 12-lead signals of test records against the ground truth "
              "(`ecgscan snr-check work/recon.h5 --reference work/recon_truth.h5`).", ""]
    if snr_rows:
        cols2 = [c for c in snr_rows[0].keys()]
        lines += [markdown_table(snr_rows, cols2), ""]
        note = reconstruction_note(snr_rows)
        if note:
            lines += [note, ""]
    for name in overlays:
        lines += [f"![{name}](figures/overlays/{name})", ""]
    lines += ["## Timings", "", markdown_table([{"step": k, "seconds": v} for k, v in timings.items()],
                                          ["step", "seconds"]), ""]
    lines += ["## Re-run by hand", "", "```bash", *commands, "```", ""]
    (rep / "README.md").write_text("\n".join(lines))


def rerun_commands(signals: str, train_folds, val_folds, test_folds) -> list[str]:
    """The report's commands that redo each step by hand, run in the report folder: on
    ``signals`` (the file the demo pretrained on) and with the folds it used."""
    return [f"ecgscan embed work/run/best {signals} -o emb.h5",
            f"ecgscan embed work/run/best {signals} -o emb0.h5 --encoder random",
            f"ecgscan probe emb.h5 emb0.h5 --train-folds {format_folds(train_folds)} "
            f"--val-folds {format_folds(val_folds)} --test-folds {format_folds(test_folds)}",
            "ecgscan zeroshot work/run/best work/test_signals.h5",
            "ecgscan reconstruct work/recon_truth.h5 --checkpoint work/run/best -o recon.h5 --overlays overlays/",
            "ecgscan snr-check recon.h5 --reference work/recon_truth.h5"]
