"""Linear probing of frozen embeddings (the paper's protocol, with selection on validation).

Per label set and per training fraction (1 %, 10 %, 100 % by default):

* the training subset is a seeded, fixed subset of the training split drawn from the
  *record ids* (sorted, then permuted with the seed), so every encoder compared on the
  same records gets exactly the same subset; records are swapped in so that each class
  with a positive in the full training split has at least one in the subset;
* a linear classifier (zero-initialised), multi-label BCE, AdamW (lr 1e-3, weight decay
  0.01), mini-batches of 16 in a seeded order (the same for every encoder), up to 100
  epochs, early stopping on validation macro AUROC (patience 20 by default);
* the epoch with the best validation macro AUROC is kept (test never seen during
  training or selection); macro AUROC on test, with a percentile bootstrap CI (the same
  resamples for every encoder).

Classes without a positive (or without a negative) in a split cannot be trained or
scored there: they are skipped and reported in ``ProbeResult.notes``.

Leakage: an embeddings file of a trained encoder carries the ids of the records its
pretraining read; a test split holding any of them is refused (``allow_overlap`` warns
instead). Training/validation records seen in pretraining are fine.

Speed: all encoders of one comparison are trained *together* as one stacked linear layer
(features zero-padded to a common width, which leaves the padded weights at zero), and
gradients and AdamW steps are written out by hand, so one optimiser step costs a few
small tensor ops instead of an autograd graph per model.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.embeddings import LabelSet
from ecgscan_cli.folds import format_folds, parse_folds  # noqa: F401 - parse_folds: the one fold parser, re-exported
from ecgscan_cli.metrics import auroc_per_class, bootstrap_macro_auroc, macro_auroc
from ecgscan_cli.tables import percent

DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)


# ---------------------------------------------------------------- splits

def parse_fractions(text: str | Sequence[float]) -> list[float]:
    if isinstance(text, str):
        try:
            vals = [float(x.strip().rstrip("%")) / (100.0 if x.strip().endswith("%") else 1.0)
                    for x in text.split(",") if x.strip()]
        except ValueError:
            raise EcgscanError(f"bad --fractions {text!r}: use e.g. 0.01,0.1,1") from None
    else:
        vals = [float(x) for x in text]
    if not vals or any(not (0 < v <= 1) for v in vals):
        raise EcgscanError(f"--fractions must be in (0, 1], got {text!r}")
    return vals


@dataclass
class Splits:
    """Record ids of each split (the probe maps them onto every file by id)."""

    train: list[str]
    val: list[str]
    test: list[str]
    description: str = ""


def splits_from_folds(ids: Sequence[str], folds: np.ndarray, train_folds: Sequence[int],
                      val_folds: Sequence[int], test_folds: Sequence[int]) -> Splits:
    folds = np.asarray(folds)
    sets = {"train": set(train_folds), "validation": set(val_folds), "test": set(test_folds)}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if sets[a] & sets[b]:
                raise EcgscanError(f"folds {sorted(sets[a] & sets[b])} are in both the {a} and {b} splits")
    present = sorted(int(x) for x in np.unique(folds) if x >= 0)
    if not present:
        raise EcgscanError("the file has no folds (all -1): pass --split-file with id,split rows")
    out = {}
    for name, s in sets.items():
        sel = [ids[i] for i in np.flatnonzero(np.isin(folds, list(s)))]
        if not sel:
            raise EcgscanError(f"no records in the {name} folds {sorted(s)} (folds present: "
                               f"{format_folds(present)}); choose with --train-folds/--val-folds/--test-folds")
        out[name] = sel
    desc = (f"folds train {format_folds(sorted(sets['train']))}, val {format_folds(sorted(sets['validation']))}, "
            f"test {format_folds(sorted(sets['test']))}")
    return Splits(out["train"], out["validation"], out["test"], desc)


_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test"}


def splits_from_file(path: str | Path, ids: Sequence[str]) -> Splits:
    """A CSV/TSV of ``id,split`` rows (split: train/val/test; header optional)."""
    path = Path(path)
    if not path.is_file():
        raise EcgscanError(f"no such split file: {path}")
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delim = "\t" if "\t" in first else ","
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    known = set(ids)
    unknown = 0
    for k, row in enumerate(csv.reader(text.splitlines(), delimiter=delim)):
        if not row or not row[0].strip() or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise EcgscanError(f"{path}:{k + 1}: expected 'id,split', got {row!r}")
        rid, split = row[0].strip(), row[1].strip().lower()
        if k == 0 and split not in _SPLIT_ALIASES:  # header
            continue
        if split not in _SPLIT_ALIASES:
            raise EcgscanError(f"{path}:{k + 1}: split {row[1]!r} is not train, val or test")
        if rid not in known:
            unknown += 1
            continue
        out[_SPLIT_ALIASES[split]].append(rid)
    for name in out:
        if not out[name]:
            raise EcgscanError(f"{path}: no records of the embeddings file in the {name} split"
                               + (f" ({unknown} ids in the split file are not in it)" if unknown else ""))
    seen: dict[str, str] = {}
    for name, lst in out.items():
        for rid in lst:
            if rid in seen and seen[rid] != name:
                raise EcgscanError(f"{path}: record {rid!r} is in both the {seen[rid]} and {name} splits")
            seen[rid] = name
    return Splits(out["train"], out["val"], out["test"], f"split file {path.name}")


def training_subset(train_ids: Sequence[str], labels: np.ndarray, fraction: float, seed: int = 0) -> list[str]:
    """A fixed subset of ``train_ids`` (labels aligned with them) of ``fraction`` of the records.

    Depends only on the ids (their set, not their order), labels, fraction and seed; each
    class with a positive in the full training split gets at least one positive when possible.
    """
    train_ids = [str(x) for x in train_ids]
    labels = np.asarray(labels)
    order = np.argsort(np.array(train_ids, dtype=object), kind="stable")
    n = len(train_ids)
    if fraction >= 1.0:
        return [train_ids[i] for i in order]
    k = max(1, int(round(fraction * n)))
    rng = np.random.default_rng([seed, int(round(fraction * 1e6))])
    perm = order[rng.permutation(n)]
    chosen = list(perm[:k])
    rest = list(perm[k:])
    chosen_set = set(chosen)
    if labels.ndim == 2 and labels.shape[1]:
        for c in range(labels.shape[1]):
            if labels[chosen, c].any() or not labels[:, c].any():
                continue
            # bring in the first positive (in the seeded order) of the class not yet chosen
            pos = next(i for i in rest if labels[i, c])
            rest.remove(pos)
            chosen.append(pos)
            chosen_set.add(pos)
    return sorted((train_ids[i] for i in chosen), key=lambda s: s)


# ---------------------------------------------------------------- training

@dataclass
class ProbeConfig:
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 20          # epochs without validation improvement before stopping (0 = never)
    standardize: bool = True    # z-score features with the training subset's mean/std
    bootstrap: int = 1000
    seed: int = 0


@dataclass
class ProbeResult:
    encoder: str
    label_set: str
    fraction: float
    n_train: int
    n_val: int
    n_test: int
    auroc: float                # macro AUROC on test, in [0, 1]
    ci_low: float
    ci_high: float
    val_auroc: float
    best_epoch: int
    epochs_run: int
    classes: list[str]          # classes scored on test
    per_class: dict[str, float]
    notes: list[str] = field(default_factory=list)
    test_scores: np.ndarray | None = field(default=None, repr=False)
    test_labels: np.ndarray | None = field(default=None, repr=False)

    def row(self) -> dict:
        """The result as a CSV/JSON row, AUROCs in %."""
        return {"encoder": self.encoder, "label_set": self.label_set, "fraction": self.fraction,
                "n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test,
                "macro_auroc": percent(self.auroc), "ci_low": percent(self.ci_low), "ci_high": percent(self.ci_high),
                "val_macro_auroc": percent(self.val_auroc), "best_epoch": self.best_epoch,
                "epochs_run": self.epochs_run, "n_classes": len(self.classes),
                "skipped": "; ".join(self.notes)}


def _train_stacked(xs: list[np.ndarray], y: np.ndarray, xv: list[np.ndarray], yv: np.ndarray,
                   cfg: ProbeConfig, log=None):
    """Train E linear probes at once (same rows, same mini-batch order).

    xs: E arrays [n, D_e]; y [n, C]; xv: E arrays [m, D_e]; yv [m, C] (classes usable for
    selection are those with both labels in yv). Returns (W [E, D, C], b [E, C], best_val [E],
    best_epoch [E], epochs_run, means, stds).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread hand-offs cost far more than the arithmetic
    try:
        return _train_stacked_impl(xs, y, xv, yv, cfg, log)
    finally:
        torch.set_num_threads(threads)


def _train_stacked_impl(xs, y, xv, yv, cfg, log):
    import torch

    E = len(xs)
    D = max(x.shape[1] for x in xs)
    n, C = y.shape
    means, stds = [], []

    def prep(x, mu, sd):
        out = np.zeros((x.shape[0], D), np.float32)
        out[:, :x.shape[1]] = (x - mu) / sd
        return out

    X, XV = [], []
    for x, v in zip(xs, xv):
        if cfg.standardize:
            mu = x.mean(0)
            sd = x.std(0)
            sd = np.where(sd > 1e-8, sd, 1.0)
        else:
            mu, sd = np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
        means.append(mu)
        stds.append(sd)
        X.append(prep(x, mu, sd))
        XV.append(prep(v, mu, sd))
    X = torch.from_numpy(np.stack(X))           # [E, n, D]
    XV = torch.from_numpy(np.stack(XV))         # [E, m, D]
    Y = torch.from_numpy(y.astype(np.float32))  # [n, C]
    W = torch.zeros(E, D, C)
    b = torch.zeros(E, 1, C)
    mW, vW = torch.zeros_like(W), torch.zeros_like(W)
    mb, vb = torch.zeros_like(b), torch.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    lr, wd = cfg.lr, cfg.weight_decay
    gen = torch.Generator().manual_seed(int(cfg.seed))
    best_val = np.full(E, -np.inf)
    best_epoch = np.zeros(E, int)
    best_W, best_b = W.clone(), b.clone()
    stale = 0
    step = 0
    epochs_run = 0
    bs = max(1, int(cfg.batch_size))
    yv_usable = yv
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            xb = X[:, idx]                       # [E, B, D]
            yb = Y[idx]                          # [B, C]
            logits = torch.baddbmm(b, xb, W)     # [E, B, C]
            g = (torch.sigmoid(logits) - yb) / (yb.shape[0] * C)   # d mean-BCE / d logits
            gW = torch.bmm(xb.transpose(1, 2), g)
            gb = g.sum(1, keepdim=True)
            step += 1
            c1 = 1 - beta1 ** step
            c2 = 1 - beta2 ** step
            W.mul_(1 - lr * wd)                  # AdamW decoupled weight decay (not on the bias)
            mW.mul_(beta1).add_(gW, alpha=1 - beta1)
            vW.mul_(beta2).addcmul_(gW, gW, value=1 - beta2)
            W.addcdiv_(mW / c1, (vW / c2).sqrt_().add_(eps), value=-lr)
            mb.mul_(beta1).add_(gb, alpha=1 - beta1)
            vb.mul_(beta2).addcmul_(gb, gb, value=1 - beta2)
            b.addcdiv_(mb / c1, (vb / c2).sqrt_().add_(eps), value=-lr)
        epochs_run = epoch
        sv = torch.baddbmm(b, XV, W).numpy()    # [E, m, C]
        val = np.array([macro_auroc(sv[e], yv_usable) for e in range(E)])
        improved = np.nan_to_num(val, nan=-np.inf) > best_val + 1e-9
        if improved.any():
            sel = torch.from_numpy(improved)
            best_W[sel] = W[sel]
            best_b[sel] = b[sel]
            best_val[improved] = val[improved]
            best_epoch[improved] = epoch
            stale = 0
        else:
            stale += 1
        if log is not None:
            log(epoch)
        if cfg.patience and stale >= cfg.patience:
            break
    return best_W, best_b, best_val, best_epoch, epochs_run, means, stds


def _scores(W, b, x, mu, sd) -> np.ndarray:
    import torch

    D = W.shape[0]
    xx = np.zeros((x.shape[0], D), np.float32)
    xx[:, :x.shape[1]] = (x - mu) / sd
    return (torch.from_numpy(xx) @ W + b).numpy()


def _aligned(files, ids: Sequence[str]):
    """Row indices of ``ids`` in each file."""
    out = []
    for f in files:
        index = {rid: i for i, rid in enumerate(f.ids)}
        try:
            out.append(np.array([index[r] for r in ids], int))
        except KeyError as e:
            raise EcgscanError(f"{f.path}: record {e.args[0]!r} is missing (embedding files compared "
                               "must hold every record the probes read)") from None
    return out


def check_test_leakage(files, splits: Splits, allow_overlap: bool = False, warn=None) -> None:
    """Refuse a test split whose records an encoder's pretraining read (``allow_overlap``:
    warn instead). Training/validation records seen in pretraining are fine."""
    for f in files:
        p = f.pretraining
        if p is None:
            if f.encoder == "trained" and f.attrs.get("checkpoint") and warn is not None:
                warn(f"{f.path}: its checkpoint records no pretraining data (older ecgscan?): "
                     "test records cannot be checked for leakage")
            continue
        seen = p.seen(splits.test)
        if not seen:
            continue
        msg = f"{f.path}: " + p.overlap_message(seen, len(splits.test), "test records")
        if not allow_overlap:
            raise EcgscanError(f"{msg} (or pass --allow-overlap)")
        if warn is not None:
            warn(f"--allow-overlap: {msg}; the test AUROC is optimistic")


@dataclass
class RecordLabels:
    """Record ids and their label sets, as in an embeddings file: where :func:`run_probe`
    takes the labels and draws the training subsets from."""
    path: str
    ids: list[str]
    label_sets: dict[str, LabelSet]

    @classmethod
    def of_source(cls, source) -> "RecordLabels":
        """The label sets of an opened signals or images file (``imageio.open_source``)."""
        from ecgscan_cli.formats.embeddings import DEFAULT_LABEL_SET

        sets = {}
        if source.classes:
            name = source.label_set or DEFAULT_LABEL_SET
            sets[name] = LabelSet(name, list(source.classes), np.asarray(source.labels))
        for name, (classes, labels) in source.extra_label_sets.items():
            sets[name] = LabelSet(name, list(classes), np.asarray(labels))
        return cls(str(source.path), [str(i) for i in source.ids], sets)

    def label_set_named(self, name: str) -> LabelSet:
        if name not in self.label_sets:
            raise EcgscanError(f"{self.path}: no label set {name!r} (label sets: {', '.join(self.label_sets) or 'none'})")
        return self.label_sets[name]


def records_read(labels, label_sets: Sequence[str], splits: Splits, fractions: Sequence[float],
                 seed: int = 0) -> set[str]:
    """The ids :func:`run_probe` reads with these arguments: validation, test, and each label
    set's training subset at each fraction. An encoder probed only at small fractions needs
    only these records embedded (``labels``: a :class:`RecordLabels` or an embeddings file)."""
    tr = _aligned([labels], splits.train)[0]
    out = set(splits.val) | set(splits.test)
    for ls_name in label_sets:
        y = labels.label_set_named(ls_name).labels[tr]
        for fraction in fractions:
            out.update(training_subset(splits.train, y, fraction, seed))
    return out


def run_probe(files, label_sets: Sequence[str] | None, splits: Splits, cfg: ProbeConfig,
              names: Sequence[str] | None = None, progress=None, warn=None,
              allow_overlap: bool = False, labels=None) -> list[ProbeResult]:
    """Probe each embeddings file (``EmbeddingsFile``) on each label set and fraction.

    Labels and the training subsets come from ``labels`` (a :class:`RecordLabels`; default:
    the first file), which must hold every record of ``splits``. Each file must hold every
    record the probes read (:func:`records_read`); files of the same records are the usual
    case. Refuses test records that an encoder's pretraining read unless ``allow_overlap``.
    """
    if not files:
        raise EcgscanError("no embeddings file given")
    check_test_leakage(files, splits, allow_overlap, warn)
    names = list(names) if names else [f.name for f in files]
    if len(set(names)) != len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    ref = files[0] if labels is None else labels
    if labels is None:
        for f in files[1:]:
            if set(f.ids) != set(ref.ids):
                raise EcgscanError(f"{f.path} and {ref.path} hold different records: "
                                   "compare embeddings of the same records")
    if label_sets is None or not list(label_sets):
        label_sets = list(ref.label_sets)
        if not label_sets:
            raise EcgscanError(f"{ref.path} has no labels to probe (its /label has no classes)")
    results: list[ProbeResult] = []
    ref_tr, ref_va, ref_te = (_aligned([ref], ids)[0] for ids in (splits.train, splits.val, splits.test))
    va_rows = _aligned(files, splits.val)
    te_rows = _aligned(files, splits.test)
    for ls_name in label_sets:
        ls = ref.label_set_named(ls_name)
        for f in files[1:]:
            other = f.label_set_named(ls_name)
            if other.classes != ls.classes:
                raise EcgscanError(f"{f.path}: label set {ls_name!r} has classes {other.classes}, "
                                   f"{ref.path} has {ls.classes}")
        y_tr_all = ls.labels[ref_tr]
        y_va = ls.labels[ref_va]
        y_te = ls.labels[ref_te]
        notes_base = []
        keep = []
        for c, cls in enumerate(ls.classes):
            if not y_tr_all[:, c].any():
                notes_base.append(f"{cls}: no positive in the training split")
            elif y_tr_all[:, c].all():
                notes_base.append(f"{cls}: no negative in the training split")
            else:
                keep.append(c)
        if not keep:
            raise EcgscanError(f"label set {ls_name!r}: no class has both positive and negative "
                               "training examples; nothing to probe")
        for c in keep:
            cls = ls.classes[c]
            if y_va[:, c].all() or not y_va[:, c].any():
                notes_base.append(f"{cls}: not used for model selection (only one label in validation)")
        test_skip = [ls.classes[c] for c in keep if y_te[:, c].all() or not y_te[:, c].any()]
        for cls in test_skip:
            notes_base.append(f"{cls}: not scored (only one label in test)")
        if all(y_va[:, c].all() or not y_va[:, c].any() for c in keep):
            raise EcgscanError(f"label set {ls_name!r}: no class has both labels in the validation split; "
                               "model selection is impossible (choose other validation folds)")
        if len(test_skip) == len(keep):
            raise EcgscanError(f"label set {ls_name!r}: no class has both labels in the test split")
        if warn is not None:
            for note in notes_base:
                warn(f"{ls_name}: {note}")
        kept_classes = [ls.classes[c] for c in keep]
        scored = [c for c in keep if ls.classes[c] not in test_skip]
        for fraction in cfg.fractions:
            sub_ids = training_subset(splits.train, y_tr_all, fraction, cfg.seed)
            sub_rows = _aligned(files, sub_ids)
            y_sub = ls.labels[_aligned([ref], sub_ids)[0]][:, keep]
            notes = list(notes_base)
            missing = [kept_classes[j] for j in range(len(keep)) if not y_sub[:, j].any()]
            for cls in missing:
                notes.append(f"{cls}: no positive in the {fraction:g} training subset")
            xs = [f.embeddings[r] for f, r in zip(files, sub_rows)]
            xv = [f.embeddings[r] for f, r in zip(files, va_rows)]
            W, b, best_val, best_epoch, epochs_run, mus, sds = _train_stacked(
                xs, y_sub, xv, y_va[:, keep], cfg,
                log=(lambda e: progress(1)) if progress is not None else None)
            if progress is not None and epochs_run < cfg.epochs:
                progress(cfg.epochs - epochs_run)
            for e, f in enumerate(files):
                s = _scores(W[e], b[e], f.embeddings[te_rows[e]], mus[e], sds[e])  # [n_test, K]
                cols = [keep.index(c) for c in scored]
                s, yt = s[:, cols], y_te[:, scored]
                per = auroc_per_class(s, yt)
                lo, hi = bootstrap_macro_auroc(s, yt, cfg.bootstrap, seed=cfg.seed)
                results.append(ProbeResult(
                    encoder=names[e], label_set=ls_name, fraction=float(fraction), n_train=len(sub_ids),
                    n_val=len(splits.val), n_test=len(splits.test), auroc=float(np.nanmean(per)),
                    ci_low=lo, ci_high=hi, val_auroc=float(best_val[e]), best_epoch=int(best_epoch[e]),
                    epochs_run=int(epochs_run), classes=[ls.classes[c] for c in scored],
                    per_class={ls.classes[c]: float(per[j]) for j, c in enumerate(scored)},
                    notes=notes, test_scores=s, test_labels=yt))
    return results


def total_epochs(n_label_sets: int, cfg: ProbeConfig) -> int:
    return n_label_sets * len(cfg.fractions) * cfg.epochs


def roc_plot(results: Sequence[ProbeResult], path: str | Path, overwrite: bool = False) -> Path:
    """Macro-averaged ROC curves on test, one panel per label set, one curve per encoder at the
    largest fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from ecgscan_cli.atomic import atomic_output

    by_ls: dict[str, list[ProbeResult]] = {}
    for r in results:
        by_ls.setdefault(r.label_set, []).append(r)
    fig, axes = plt.subplots(1, len(by_ls), figsize=(4.2 * len(by_ls), 4.2), squeeze=False)
    grid = np.linspace(0, 1, 201)
    for ax, (ls, rs) in zip(axes[0], by_ls.items()):
        top = max(r.fraction for r in rs)
        for r in rs:
            if r.fraction != top or r.test_scores is None:
                continue
            tprs = []
            for j in range(r.test_labels.shape[1]):
                fpr, tpr, _ = roc_curve(r.test_labels[:, j], r.test_scores[:, j])
                tprs.append(np.interp(grid, fpr, tpr))
            ax.plot(grid, np.mean(tprs, 0), label=f"{r.encoder} ({100 * r.auroc:.1f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        ax.set_title(f"{ls} (fraction {top:g})")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate (macro)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_output(path, overwrite=overwrite, kind="file") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)
