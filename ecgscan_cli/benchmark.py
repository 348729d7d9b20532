"""The paper's baseline comparison (its Tables 2 and 3) in one call.

Rows, all probed on the same records with the same training subsets:

* ``untrained``   the checkpoint's image architecture, randomly initialised;
* ``imagenet``    the same tower with its ImageNet (or CLIP) weights and no ECG pretraining;
* ``signal``      the frozen signal teacher on the true signals (the upper bound of an image model);
* ``image-to-signal``  each record rendered as a clean 200-dpi page, read back by the digitiser
  (``ecgscan reconstruct``'s TraceNet), and the digitised signal (what the page shows, the rest
  zero) through the same frozen teacher: the paper's "digitise, then a signal model" pipeline;
* ``ecgscan``     the pretrained image encoder.

Columns: linear-probe macro AUROC (with a bootstrap 95 % CI) per label set and label
fraction, and zero-shot macro AUROC per label set for the rows whose space is aligned
with text (``ecgscan``). Image rows are probed on the tower's pooled features (``backbone``,
the default) so that every row sees a representation of the same kind; ``projected``
probes the contrastive embedding instead.

The test folds default to those the checkpoint held out of pretraining; a test record that
pretraining saw is refused unless ``allow_overlap``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.tables import auroc_cell, fraction_column, markdown_table, percent

log = logging.getLogger("ecgscan")

ROWS = ("untrained", "imagenet", "signal", "image-to-signal", "ecgscan")
# image-to-signal digitises every record the probes read (about 1.5 s a page on a CPU core: hours for
# PTB-XL): asked for by name
DEFAULT_ROWS = ("untrained", "imagenet", "signal", "ecgscan")
PTBXL_LABEL_SETS = ("superclass", "subclass", "form", "rhythm")
RESULTS = "results.json"
PENDING: dict[str, str] = {}
LONG_COLUMNS = ["row", "label_set", "task", "macro_auroc", "ci_low", "ci_high", "n_train", "n_test"]


@dataclass
class BenchmarkConfig:
    rows: tuple[str, ...] = DEFAULT_ROWS
    label_sets: tuple[str, ...] | None = None  # None: every label set of the signals file
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    train_folds: str | None = None  # None: the checkpoint's pretraining folds (train), else 1..max-2
    val_folds: str | None = None
    test_folds: str | None = None   # None: the folds the checkpoint held out
    features: str = "backbone"      # backbone | projected (image rows)
    zeroshot: bool = True
    allow_overlap: bool = False
    batch_size: int = 64
    device: str = "auto"
    probe_epochs: int = 100
    probe_patience: int = 20
    bootstrap: int = 1000
    seed: int = 0
    digitizer_weights: str | None = None   # image-to-signal row: None = the shipped TraceNet
    workers: int = 0                       # image-to-signal row: digitising processes (0 = one per available CPU)


@dataclass
class BenchmarkResult:
    out_dir: Path
    splits: str
    probe: list[dict] = field(default_factory=list)     # ProbeResult.row() of every (row, label set, fraction)
    zeroshot: list[dict] = field(default_factory=list)  # {row, label_set, macro_auroc, n, prompt_set}
    pending: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def wide_rows(self, rows: Sequence[str]) -> tuple[list[dict], list[str]]:
        """One line per row; a column per (label set, fraction) and a zero-shot column per label set."""
        label_sets = list(dict.fromkeys(r["label_set"] for r in self.probe))
        fractions = sorted({r["fraction"] for r in self.probe})
        cols = ["row"] + [f"{ls} {fraction_column(f)}" for ls in label_sets for f in fractions]
        cols += [f"{ls} zero-shot" for ls in label_sets] if self.zeroshot else []
        out = []
        for name in rows:
            line = {"row": name}
            for c in cols[1:]:
                line[c] = ("pending" if name in PENDING else "n/a") if name in self.pending or \
                    c.endswith("zero-shot") else ""
            for r in self.probe:
                if r["encoder"] == name:
                    line[f"{r['label_set']} {fraction_column(r['fraction'])}"] = auroc_cell(
                        r["macro_auroc"], r["ci_low"], r["ci_high"])
            for z in self.zeroshot:
                if z["row"] == name:
                    line[f"{z['label_set']} zero-shot"] = auroc_cell(z["macro_auroc"])
            out.append(line)
        return out, cols

    def long_rows(self) -> list[dict]:
        """One line per (row, label set, task): task is a label fraction or 'zero-shot' (for CSV/JSON)."""
        out = [{"row": r["encoder"], "label_set": r["label_set"], "task": f"probe {fraction_column(r['fraction'])}",
                "macro_auroc": r["macro_auroc"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                "n_train": r["n_train"], "n_test": r["n_test"]} for r in self.probe]
        out += [{"row": z["row"], "label_set": z["label_set"], "task": "zero-shot", "macro_auroc": z["macro_auroc"],
                 "ci_low": float("nan"), "ci_high": float("nan"), "n_train": 0, "n_test": z["n"]}
                for z in self.zeroshot]
        return out

    def to_json(self) -> dict:
        return {"splits": self.splits, "probe": self.probe, "zeroshot": self.zeroshot, "pending": self.pending,
                "timings_s": self.timings}


# ---------------------------------------------------------------- splits


def resolve_splits(ids: Sequence[str], folds: np.ndarray, pretraining: dict, cfg: BenchmarkConfig):
    """(Splits, test fold list): explicit folds win; else the checkpoint's held-out folds are the test."""
    from ecgscan_cli.folds import format_folds, parse_folds
    from ecgscan_cli.probe import splits_from_folds

    present = sorted(int(f) for f in np.unique(folds) if f >= 0)
    if not present:
        raise EcgscanError("the signals file has no folds: the benchmark splits records by fold")
    # the checkpoint's folds: lists, or fold strings in older checkpoints
    test = (parse_folds(cfg.test_folds, "--test-folds") if cfg.test_folds
            else parse_folds(pretraining.get("test_folds"), "the checkpoint's test folds"))
    if not test:
        if len(present) < 3:
            raise EcgscanError(f"the signals file has folds {format_folds(present)}: at least 3 are needed (train, val, test)")
        test = [present[-1]]
    val = (parse_folds(cfg.val_folds, "--val-folds") if cfg.val_folds
           else parse_folds(pretraining.get("val_folds"), "the checkpoint's validation folds"))
    rest = [f for f in present if f not in test]
    if not val:
        val = [rest[-1]] if rest else []
    train = parse_folds(cfg.train_folds, "--train-folds") if cfg.train_folds else [f for f in rest if f not in val]
    for name, fl in (("test", test), ("validation", val), ("train", train)):
        missing = [f for f in fl if f not in present]
        if missing:
            raise EcgscanError(f"{name} folds {format_folds(missing)} are not in the signals file "
                               f"(folds present: {format_folds(present)})")
    return splits_from_folds(list(ids), folds, train, val, test), test


def check_overlap(test_ids: Sequence[str], pretrain_ids: set[str], checkpoint, allow: bool) -> int:
    """Number of test records the checkpoint was pretrained on; refuses when > 0 unless ``allow``."""
    seen = sum(1 for i in test_ids if i in pretrain_ids)
    if seen and not allow:
        raise EcgscanError(f"{seen} of {len(test_ids)} test records were in the pretraining of {checkpoint}; "
                           "choose test folds it held out (--test-folds) or pass --allow-overlap")
    if seen:
        log.warning("%d of %d test records were in pretraining (--allow-overlap): the ecgscan row is optimistic",
                    seen, len(test_ids))
    return seen


# ---------------------------------------------------------------- rows


def _signal_teacher_path(checkpoint: Path) -> Path:
    from ecgscan_cli.checkpoint import read_meta, resolve

    ck = resolve(checkpoint)
    cfg = (read_meta(ck).get("train_config") or {}) if ck else {}
    given = cfg.get("signal_encoder")
    for cand in ([Path(given)] if given else []) + [ck / "teacher", ck.parent / "teacher"]:
        if cand.exists():
            return cand
    raise EcgscanError(f"{checkpoint}: no signal teacher found (looked beside the checkpoint and at its "
                       "run's --signal-encoder); leave the 'signal' row out with --rows")


def _record_length(source) -> int:
    """Samples per record of an opened signals file (the teacher is probed at that length)."""
    from ecgscan_cli import canonical

    return int(getattr(source._reader, "n_samples", 0) or canonical.N_SAMPLES)


def embed_signals_with_teacher(checkpoint: Path, signals_path, out: Path, batch_size: int, device) -> Path:
    """The frozen signal teacher's features of every record (the 'signal' row)."""
    import torch

    from ecgscan_cli.encoders import load_signal_encoder
    from ecgscan_cli.formats.embeddings import write_embeddings
    from ecgscan_cli.imageio import open_source

    teacher_path = _signal_teacher_path(checkpoint)
    source = open_source(signals_path)
    teacher = load_signal_encoder(teacher_path, device, _record_length(source))  # the file's records
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(source), batch_size):
            idx = list(range(start, min(len(source), start + batch_size)))
            sig = torch.from_numpy(source._reader.signals(idx)).to(device)
            chunks.append(teacher(sig).float().cpu().numpy())
    emb = np.concatenate(chunks)
    extra = dict(source.extra_label_sets)
    path = write_embeddings(out, emb, source.ids, source.labels, source.classes, source.folds,
                            label_set=source.label_set, extra_label_sets=extra or None, encoder="signal-teacher",
                            encoder_description=f"frozen signal teacher {teacher_path} on the true signals",
                            checkpoint=str(checkpoint), source=str(signals_path), overwrite=True)
    source.close()
    return path


_DIGITIZERS: dict = {}


def _digitise_record(job) -> tuple[int, np.ndarray, str]:
    """One record's clean 200-dpi page read back by the digitiser: ``(index, signal [12, T]
    float32 in mV, refused reason or "")``. Samples the page does not show, or a whole page
    the digitiser refuses, are 0: the teacher needs a full 12×T input. Read as `reconstruct`
    reads: the shipped restorer runs on the reading."""
    from ecgscan_cli.digitize.image import digitize_image, load_digitizer
    from ecgscan_cli.digitize.restore import load_restorer
    from ecgscan_cli.render.page import render_page

    i, truth, fs, weights = job
    if weights not in _DIGITIZERS:  # once per process
        _DIGITIZERS[weights] = load_digitizer(weights), load_restorer()
    net, restorer = _DIGITIZERS[weights]
    try:
        est = digitize_image(render_page(truth, fs, return_meta=False), net, restorer=restorer).signal
        reason = ""
    except EcgscanError as e:
        est, reason = np.zeros_like(truth), str(e)
    if est.shape[1] != truth.shape[1]:  # the digitiser's canonical grid vs the file's
        from scipy.signal import resample

        est = resample(np.nan_to_num(est), truth.shape[1], axis=1)
    return i, np.nan_to_num(est).astype(np.float32), reason


def digitised_signals(signals_path, weights=None, progress=None, indices=None, workers: int = 1):
    """Per record (or per index of ``indices``), in order: ``(index, digitised signal, refused
    reason or "")`` (:func:`_digitise_record`), on ``workers`` processes of one thread each."""
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.pool import ordered_map
    from ecgscan_cli.threads import set_threads

    sf = SignalsFile(signals_path)
    indices = range(len(sf)) if indices is None else indices
    jobs = ((i, np.nan_to_num(sf.signal(i)), sf.fs, weights) for i in indices)  # one record at a time
    for out in ordered_map(_digitise_record, jobs, workers, batch=4, initializer=set_threads, initargs=(1,),
                           broken="a digitising process stopped unexpectedly (out of memory?); "
                                  "try again with fewer --workers"):
        if progress:
            progress(1)
        yield out


def embed_digitised_with_teacher(checkpoint: Path, signals_path, out: Path, batch_size: int, device,
                                 weights=None, progress=None, only=None, workers: int = 1) -> tuple[Path, int]:
    """The frozen teacher's features of every record's *digitised* signal (the 'image-to-signal'
    row); returns the file and the number of pages the digitiser refused (scored as zeros).

    ``only`` (a set of ids): digitise and write those records alone (the benchmark passes the
    records its probes read, :func:`ecgscan_cli.probe.records_read`).
    """
    import torch

    from ecgscan_cli.encoders import load_signal_encoder
    from ecgscan_cli.formats.embeddings import write_embeddings
    from ecgscan_cli.imageio import open_source

    teacher_path = _signal_teacher_path(checkpoint)
    source = open_source(signals_path)
    # the digitised signals are resampled to the file's length (_digitise_record)
    teacher = load_signal_encoder(teacher_path, device, _record_length(source))
    rows = [i for i, rid in enumerate(source.ids) if only is None or rid in only]
    if not rows:
        raise EcgscanError("image-to-signal: no record to digitise")
    chunks, batch, refused = [], [], 0

    def flush():
        with torch.inference_mode():
            chunks.append(teacher(torch.from_numpy(np.stack(batch)).to(device)).float().cpu().numpy())
        batch.clear()

    for _, sig, reason in digitised_signals(signals_path, weights, progress, rows, workers):
        refused += bool(reason)
        batch.append(sig)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if refused:
        log.warning("image-to-signal: the digitiser refused %d of %d pages (their signals are zeros)",
                    refused, len(rows))
    extra = {name: (classes, np.asarray(labels)[rows]) for name, (classes, labels) in source.extra_label_sets.items()}
    path = write_embeddings(out, np.concatenate(chunks), [source.ids[i] for i in rows],
                            source.labels[rows],
                            source.classes, np.asarray(source.folds)[rows], label_set=source.label_set,
                            extra_label_sets=extra or None, encoder="digitised-signal-teacher",
                            encoder_description=f"frozen signal teacher {teacher_path} on signals digitised "
                                                "from clean 200-dpi renders by TraceNet"
                                                + ("" if len(rows) == len(source) else
                                                   f" ({len(rows)} of {len(source)} records: those the probes read)"),
                            checkpoint=str(checkpoint), source=str(signals_path), overwrite=True)
    source.close()
    return path, refused


def zeroshot_rows(checkpoint: Path, embeddings_path: Path, test_ids: Sequence[str], label_sets: Sequence[str],
                  row: str, device) -> list[dict]:
    """Zero-shot macro AUROC on the test records, per label set with a built-in prompt set.

    Backbone features (h_I) are projected into the contrastive space with the checkpoint's own
    head, which is exactly what ``encode_image`` does, so no second pass over the images is needed.
    """
    import torch

    from ecgscan_cli.checkpoint import load_checkpoint
    from ecgscan_cli.formats.embeddings import EmbeddingsFile
    from ecgscan_cli.zeroshot import choose_prompts, class_text_embeddings, score

    ef = EmbeddingsFile(embeddings_path)
    index = {rid: i for i, rid in enumerate(ef.ids)}
    rows = np.array([index[i] for i in test_ids], int)
    model = load_checkpoint(checkpoint, device)
    emb = ef.embeddings[rows]
    if ef.features == "backbone":
        with torch.inference_mode():
            emb = model.project_image_features(torch.from_numpy(emb).to(device)).cpu().numpy()
    out = []
    for ls_name in label_sets:
        ls = ef.label_set_named(ls_name)
        try:
            prompt_name, prompts = choose_prompts(ls.classes, None, ls_name)
        except EcgscanError as e:
            log.warning("zero-shot %s: %s", ls_name, e)
            continue
        text = class_text_embeddings(model, prompts, ls.classes)
        res = score(emb, text, ls.labels[rows], ls.classes, prompt_name, ls_name)
        out.append({"row": row, "label_set": ls_name, "macro_auroc": percent(res.macro_auroc),
                    "n": int(res.n), "prompt_set": prompt_name, "n_classes": len(res.classes)})
    return out


# ---------------------------------------------------------------- the whole table


def run_benchmark(checkpoint, signals_path, out_dir, cfg: BenchmarkConfig | None = None, *,
                  overwrite: bool = False, progress_factory=None) -> BenchmarkResult:
    """Embed, probe and zero-shot every row; write everything into the folder ``out_dir``.

    The folder appears only when complete; ``overwrite`` replaces only an earlier benchmark folder.
    """
    from ecgscan_cli.atomic import atomic_output, check_output_path
    from ecgscan_cli.checkpoint import read_meta
    from ecgscan_cli.device import resolve_device
    from ecgscan_cli.embed import pretraining_record
    from ecgscan_cli.imageio import open_source

    cfg = cfg or BenchmarkConfig()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    check_output_path(out_dir, overwrite, kind="benchmark")
    unknown = [r for r in cfg.rows if r not in ROWS]
    if unknown:
        raise EcgscanError(f"unknown benchmark rows {unknown} (rows: {', '.join(ROWS)})")
    if cfg.features not in ("backbone", "projected"):
        raise EcgscanError(f"features must be backbone or projected, not {cfg.features!r}")
    read_meta(checkpoint)  # a missing or foreign checkpoint fails before any work
    if "image-to-signal" in cfg.rows:  # missing or foreign digitiser weights too
        from ecgscan_cli.digitize.image import load_digitizer

        load_digitizer(cfg.digitizer_weights)
    source = open_source(signals_path)
    if source.kind != "signals":
        raise EcgscanError(f"{signals_path}: the benchmark needs a signals file (ecgscan import/synth)")
    from ecgscan_cli.formats.embeddings import DEFAULT_LABEL_SET

    main_set = [source.label_set or DEFAULT_LABEL_SET] if source.classes else []
    have = [*main_set, *source.extra_label_sets]
    label_sets = list(cfg.label_sets) if cfg.label_sets else have
    missing = [ls for ls in label_sets if ls not in have]
    if missing:
        raise EcgscanError(f"{signals_path}: no label set {', '.join(missing)} (it has {', '.join(have) or 'none'}; "
                           "import PTB-XL with --labels all)")
    if not label_sets:
        raise EcgscanError(f"{signals_path} has no labels to probe")
    pretraining = pretraining_record(checkpoint)
    splits, test_folds = resolve_splits(source.ids, source.folds, pretraining, cfg)
    check_overlap(splits.test, set(pretraining.get("ids") or ()), checkpoint, cfg.allow_overlap)
    from ecgscan_cli.probe import RecordLabels

    labels = RecordLabels.of_source(source)  # the probes' labels and training subsets, for every row
    source.close()
    dev = resolve_device(cfg.device)
    pf = progress_factory or (lambda n, d: contextlib.nullcontext(None))
    result = BenchmarkResult(out_dir, splits.description)
    with atomic_output(out_dir, overwrite, directory=True, kind="benchmark") as tmp:
        _fill(result, tmp, checkpoint, signals_path, splits, labels, test_folds, label_sets, cfg, dev, pf)
    return result


def _fill(result: BenchmarkResult, out_dir: Path, checkpoint: Path, signals_path, splits, labels, test_folds,
          label_sets, cfg: BenchmarkConfig, dev, pf) -> None:
    from ecgscan_cli.embed import embed_to_file
    from ecgscan_cli.formats.embeddings import EmbeddingsFile
    from ecgscan_cli.probe import ProbeConfig, run_probe, total_epochs

    from ecgscan_cli.checkpoint import read_meta

    files, names = [], []
    image_rows = {"untrained": "random", "imagenet": "imagenet", "ecgscan": "trained"}
    model_cfg = read_meta(checkpoint).get("model_config") or {}
    for row in cfg.rows:
        t0 = time.perf_counter()
        path = out_dir / f"{row}.h5"
        if row in PENDING:
            result.pending[row] = PENDING[row]
            continue
        if row == "imagenet" and not model_cfg.get("image_pretrained"):
            result.pending[row] = f"{model_cfg.get('image_model')} has no pretrained image weights"
            continue
        if row == "signal":
            embed_signals_with_teacher(checkpoint, signals_path, path, cfg.batch_size, dev)
        elif row == "image-to-signal":
            from ecgscan_cli.pool import auto_workers
            from ecgscan_cli.probe import records_read

            only = None if 1.0 in cfg.fractions else records_read(labels, label_sets, splits, cfg.fractions, cfg.seed)
            n = len(labels.ids) if only is None else len(only)
            workers = cfg.workers or auto_workers(n, min_jobs=8)  # a process starts in seconds
            log.info("benchmark: rendering and digitising %d records the probes read, on %d process%s "
                     "(about 1.5 s a page on one CPU core)", n, workers, "" if workers == 1 else "es")
            with pf(n, "digitising") as advance:
                _, refused = embed_digitised_with_teacher(checkpoint, signals_path, path, cfg.batch_size, dev,
                                                          cfg.digitizer_weights, advance, only, workers)
            result.timings["digitised pages"] = n
            result.timings["digitiser refused pages"] = refused
        else:
            log.info("benchmark: embedding every record with the %s encoder (%s features)", row, cfg.features)
            embed_to_file(checkpoint, signals_path, path, encoder=image_rows[row], features=cfg.features,
                          batch_size=cfg.batch_size, device=dev, overwrite=True, seed=cfg.seed,
                          progress_factory=pf, allow_overlap=True)
            if row == "ecgscan" and cfg.zeroshot:
                result.zeroshot += zeroshot_rows(checkpoint, path, splits.test, label_sets, row, dev)
        result.timings[f"embed {row}"] = round(time.perf_counter() - t0, 1)
        files.append(EmbeddingsFile(path))
        names.append(row)
    if files:
        t0 = time.perf_counter()
        pcfg = ProbeConfig(fractions=tuple(cfg.fractions), epochs=cfg.probe_epochs, patience=cfg.probe_patience,
                           bootstrap=cfg.bootstrap, seed=cfg.seed)
        with pf(total_epochs(len(label_sets), pcfg), "probe epochs") as advance:
            probe = run_probe(files, label_sets, splits, pcfg, names=names, progress=advance, warn=log.warning,
                              allow_overlap=cfg.allow_overlap, labels=labels)
        result.probe = [r.row() for r in probe]
        result.timings["probe"] = round(time.perf_counter() - t0, 1)
    (out_dir / RESULTS).write_text(json.dumps({"config": asdict(cfg), "checkpoint": str(checkpoint),
                                                      "signals": str(signals_path), "test_folds": test_folds,
                                                      **result.to_json()}, indent=2, default=str))
    rows, cols = result.wide_rows(cfg.rows)
    (out_dir / "table.md").write_text(markdown_report(rows, cols, splits.description, result.pending))


def markdown_report(rows: list[dict], cols: list[str], caption: str, notes: dict[str, str]) -> str:
    """``table.md``: the caption, the table, and a line per row that could not be run."""
    lines = [f"Macro AUROC % [95% CI], {caption}", "", markdown_table(rows, cols)]
    lines += [""] + [f"- {row}: {why}" for row, why in notes.items()]
    return "\n".join(lines) + "\n"
