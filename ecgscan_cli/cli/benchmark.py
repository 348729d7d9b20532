"""`ecgscan benchmark`: the paper's baseline rows (untrained, ImageNet, signal, ECG-Scan) in one table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Device, Format, Overwrite, Quiet, Threads, Seed, TableFormat, command, print_table, \
    progress_bar

log = logging.getLogger("ecgscan")


@command
def benchmark_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint folder (or run folder) from `ecgscan pretrain`.",
                                               show_default=False)],
    signals: Annotated[Path, typer.Argument(metavar="SIGNALS", help="Labelled signals file with folds (e.g. `ecgscan import PTB-XL "
                                                 "--labels all`); rendered on the fly.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the embeddings, results.json and "
                                         "table.md.", show_default=False)],
    rows: Annotated[str, typer.Option("--rows", help="Rows, comma-separated: untrained, imagenet, signal, "
                                      "image-to-signal, ecgscan. image-to-signal renders and digitises every "
                                      "record the probes read (about 1.5 s a page on a CPU core; without "
                                      "fraction 1, only validation, test and the small training subsets), "
                                      "so it runs only when named.")] =
    "untrained,imagenet,signal,ecgscan",
    digitizer_weights: Annotated[Optional[Path], typer.Option("--digitizer-weights", help="TraceNet weights for "
                                 "the image-to-signal row (default: the shipped ones).", dir_okay=True)] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, max=64, help="Digitising processes for the "
                                         "image-to-signal row, one thread each (0 = one per available CPU, "
                                         "at most 8).")] = 0,
    labels: Annotated[Optional[str], typer.Option("--labels", "-l", help="Label sets, comma-separated (default: "
                                                  "every label set of SIGNALS).")] = None,
    fractions: Annotated[str, typer.Option("--fractions", help="Fractions of the training split for the "
                                           "linear probes.")] = "0.01,0.1,1",
    train_folds: Annotated[Optional[str], typer.Option("--train-folds", help="Probe training folds, e.g. 1-6 "
                                                       "(default: the folds left after val and test).")] = None,
    val_folds: Annotated[Optional[str], typer.Option("--val-folds", help="Probe validation folds (default: the "
                                                     "checkpoint's pretraining validation folds).")] = None,
    test_folds: Annotated[Optional[str], typer.Option("--test-folds", help="Test folds (default: the folds the "
                                                      "checkpoint held out of pretraining).")] = None,
    features: Annotated[str, typer.Option("--features", help="What image rows are probed on: backbone (the "
                                          "tower's pooled features) or projected (the contrastive "
                                          "embedding).")] = "backbone",
    zeroshot: Annotated[bool, typer.Option("--zeroshot/--no-zeroshot", help="Also score zero-shot AUROC of "
                                           "the ecgscan row with the built-in prompt sets.")] = True,
    allow_overlap: Annotated[bool, typer.Option("--allow-overlap", help="Score even when test records were in "
                                                "the checkpoint's pretraining (the ecgscan row is then "
                                                "optimistic).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass when "
                                            "embedding.")] = 64,
    probe_epochs: Annotated[int, typer.Option("--probe-epochs", min=1, max=10000, help="Most epochs per "
                                              "linear probe.")] = 100,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, max=100000, help="Bootstrap resamples for the "
                                           "95% CI (0 = none).")] = 1000,
    device: Device = "auto",
    fmt: Format = TableFormat.table,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Probe and zero-shot every baseline row on the folds the checkpoint held out.

    Writes OUTPUT/ (one embeddings file per row, results.json, table.md) and prints the
    table: macro AUROC % [95% CI] per label set and label fraction.
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.benchmark import LONG_COLUMNS, BenchmarkConfig, run_benchmark
    from ecgscan_cli.probe import parse_fractions

    check_output_path(output, overwrite, kind="benchmark")
    cfg = BenchmarkConfig(rows=tuple(r.strip() for r in rows.split(",") if r.strip()),
                          label_sets=tuple(s.strip() for s in labels.split(",") if s.strip()) if labels else None,
                          fractions=tuple(parse_fractions(fractions)), train_folds=train_folds, val_folds=val_folds,
                          test_folds=test_folds, features=features, zeroshot=zeroshot, allow_overlap=allow_overlap,
                          batch_size=batch_size, device=device, probe_epochs=probe_epochs, bootstrap=bootstrap,
                          seed=seed, digitizer_weights=str(digitizer_weights) if digitizer_weights else None,
                          workers=workers)
    res = run_benchmark(checkpoint, signals, output, cfg, overwrite=overwrite,
                        progress_factory=lambda n, d: progress_bar(n, d, quiet))
    for row, why in res.pending.items():
        log.warning("%s: %s", row, why)
    if fmt is TableFormat.table:
        table, cols = res.wide_rows(cfg.rows)
        print_table(table, cols, fmt, title=f"macro AUROC % [95% CI] ({res.splits}); details in {res.out_dir}")
    else:
        print_table(res.long_rows(), LONG_COLUMNS, fmt)
