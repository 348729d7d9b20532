"""`ecgscan probe`: linear probing of frozen embeddings at 1/10/100 % of the labels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ecgscan_cli.cli.common import Format, Overwrite, Quiet, Threads, Seed, TableFormat, command, print_table, progress_bar
from ecgscan_cli.tables import percent, wide_rows

log = logging.getLogger("ecgscan")

COLUMNS = ["encoder", "label_set", "fraction", "n_train", "n_val", "n_test", "macro_auroc", "ci_low", "ci_high",
           "val_macro_auroc", "best_epoch", "epochs_run", "n_classes", "skipped"]


PER_CLASS_COLUMNS = ["encoder", "label_set", "fraction", "class", "auroc", "ci_low", "ci_high"]


def per_class_rows(results) -> list[dict]:
    """One row per (encoder, label set, fraction, class): first the macro AUROC with its CI,
    then each scored class (no CI), all in %."""
    rows = []
    for r in results:
        key = {"encoder": r.encoder, "label_set": r.label_set, "fraction": r.fraction}
        rows.append({**key, "class": "macro", "auroc": percent(r.auroc), "ci_low": percent(r.ci_low),
                     "ci_high": percent(r.ci_high)})
        rows += [{**key, "class": c, "auroc": percent(a), "ci_low": float("nan"), "ci_high": float("nan")}
                 for c, a in r.per_class.items()]
    return rows


@command
def probe_command(
    embeddings: Annotated[List[Path], typer.Argument(metavar="EMBEDDINGS", help="Embeddings files (ecgscan embed); several = one row each, "
                                                          "same records, same subsets.", show_default=False)],
    labels: Annotated[Optional[str], typer.Option("--labels", "-l", help="Label sets to probe, comma-separated "
                                                  "(default: every label set in the first file).")] = None,
    fractions: Annotated[str, typer.Option("--fractions", help="Fractions of the training split.")] = "0.01,0.1,1",
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=100_000,
                                        help="Most epochs per probe (at most 100000).")] = 100,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Stop after this many epochs without "
                                          "validation improvement (0 = run all epochs).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Embeddings per probe training step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Learning rate of the linear probe (AdamW).")] = 1e-3,
    standardize: Annotated[bool, typer.Option("--standardize/--no-standardize", help="z-score features with the "
                                              "training subset's statistics.")] = True,
    train_folds: Annotated[str, typer.Option("--train-folds", help="Training folds, e.g. 1-8.")] = "1-8",
    val_folds: Annotated[str, typer.Option("--val-folds", help="Validation folds (model selection).")] = "9",
    test_folds: Annotated[str, typer.Option("--test-folds", help="Test folds (reported AUROC).")] = "10",
    split_file: Annotated[Optional[Path], typer.Option("--split-file", help="CSV/TSV of id,split (train/val/test) "
                                                       "rows instead of folds.")] = None,
    allow_overlap: Annotated[bool, typer.Option("--allow-overlap", help="Probe even when test records were read by "
                                                "an encoder's pretraining (refused by default).")] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, max=100_000,
                                           help="Bootstrap resamples for the 95% CI (0 = none, at most "
                                                "100000).")] = 1000,
    roc_plot: Annotated[Optional[Path], typer.Option("--roc-plot", help="Write macro ROC curves (PNG); its path "
                                                     "goes in the table's title (table) or a roc_plot column.")] = None,
    per_class: Annotated[bool, typer.Option("--per-class", help="Print one row per class (the first, 'macro', "
                                            "with its CI) instead of one per label set.")] = False,
    fmt: Format = TableFormat.table,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Linear probe: frozen embeddings -> macro AUROC on test (model chosen on validation).

    Refuses a test split holding records that an encoder's pretraining read
    (recorded by `ecgscan embed`), unless --allow-overlap.
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli import probe as P
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.folds import parse_folds
    from ecgscan_cli.formats.embeddings import EmbeddingsFile

    cfg = P.ProbeConfig(fractions=tuple(P.parse_fractions(fractions)), epochs=epochs, batch_size=batch_size,
                        lr=lr, patience=patience, standardize=standardize, bootstrap=bootstrap, seed=seed)
    if roc_plot is not None:
        check_output_path(roc_plot, overwrite, kind="file")
    files = [EmbeddingsFile(p) for p in embeddings]
    ref = files[0]
    for f in files:
        if f.label_sets and not any(len(ls.classes) for ls in f.label_sets.values()):
            raise EcgscanError(f"{f.path} has no labels")
    label_sets = [s.strip() for s in labels.split(",") if s.strip()] if labels else None
    if split_file is not None:
        splits = P.splits_from_file(split_file, ref.ids)
    else:
        splits = P.splits_from_folds(ref.ids, ref.folds, parse_folds(train_folds, "--train-folds"),
                                     parse_folds(val_folds, "--val-folds"), parse_folds(test_folds, "--test-folds"))
    n_ls = len(label_sets) if label_sets else max(1, len(ref.label_sets))
    log.info("probing %d file(s): %s; %d train / %d val / %d test", len(files), splits.description,
             len(splits.train), len(splits.val), len(splits.test))
    with progress_bar(P.total_epochs(n_ls, cfg), "probe epochs", quiet) as advance:
        results = P.run_probe(files, label_sets, splits, cfg, progress=advance, warn=log.warning,
                              allow_overlap=allow_overlap)
    # stdout is one document: the ROC plot's path goes inside it, not on a line of its own
    plot = str(P.roc_plot(results, roc_plot, overwrite=overwrite)) if roc_plot is not None else None
    title = f"linear probe: test macro AUROC % [95% CI] ({splits.description})"
    if per_class:
        rows, cols = per_class_rows(results), list(PER_CLASS_COLUMNS)
        title = f"linear probe: test AUROC % per class ({splits.description})"
    elif fmt is TableFormat.table:
        rows, cols = wide_rows(results)
    else:
        rows, cols = [r.row() for r in results], list(COLUMNS)
    if plot is not None:
        if fmt is TableFormat.table:
            title += f"; ROC curves: {plot}"
        else:
            rows, cols = [{**r, "roc_plot": plot} for r in rows], cols + ["roc_plot"]
    print_table(rows, cols, fmt, title=title)
