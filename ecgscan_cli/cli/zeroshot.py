"""`ecgscan zeroshot`: classify images against class prompts through the checkpoint's text branch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Device, Format, Quiet, Threads, TableFormat, command, print_table, progress_bar

log = logging.getLogger("ecgscan")

THRESHOLD_COLUMNS = ["threshold", "sensitivity", "specificity", "f1"]


@command
def zeroshot_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="Checkpoint folder (or run folder) from `ecgscan pretrain`.",
                                               show_default=False)],
    input: Annotated[Path, typer.Argument(metavar="INPUT", help="Labelled images file or signals file (rendered on the fly), "
                                               "or an embeddings file from the same checkpoint.", show_default=False)],
    prompts: Annotated[Optional[str], typer.Option("--prompts", "-p", help="Prompt set: a built-in name "
                       "(ptbxl_superclass, ptbxl_subclass, ptbxl_form, ptbxl_rhythm, cpsc2018, csn, synth) or a "
                       "JSON file {\"classes\": {CLASS: description}}. Default: the built-in set covering the "
                       "labels.")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", "-l", help="Label set of INPUT to score "
                                                  "(default: its /label).")] = None,
    thresholds: Annotated[bool, typer.Option("--thresholds", help="Add threshold, sensitivity, specificity and "
                                             "F1 columns at the Youden-optimal threshold (chosen on the same data: "
                                             "optimistic).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass (lower it if memory runs out).")] = 32,
    device: Device = "auto",
    fmt: Format = TableFormat.table,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Zero-shot AUROC: cosine similarity of image and class-description embeddings.

    Warns when the checkpoint's pretraining read some of the evaluated records.
    """
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.tables import percent as pct
    from ecgscan_cli.zeroshot import zeroshot

    res = zeroshot(checkpoint, input, prompts=prompts, labels=labels, batch_size=batch_size, device=device,
                   thresholds=thresholds, progress_factory=lambda n, d: progress_bar(n, d, quiet))
    for c in res.skipped:
        log.warning("class %s not scored: only one label present among the %d records", c, res.n)
    pos = dict(zip(res.all_classes, res.labels.sum(0).tolist()))
    rows = [{"class": "macro", "auroc": pct(res.macro_auroc), "positives": int(res.labels.sum())}]
    rows += [{"class": c, "auroc": pct(a), "positives": int(pos[c])} for c, a in res.per_class.items()]
    cols = ["class", "auroc", "positives"]
    title = f"zero-shot AUROC % ({res.label_set or 'labels'}, prompts {res.prompt_set}, n={res.n})"
    if thresholds:
        # stdout is one document: the operating points are more columns of the class rows
        at = {t["class"]: t for t in res.thresholds}
        rows = [{**r, **{k: v for k, v in at.get(r["class"], {}).items() if k != "class"}} for r in rows]
        cols += THRESHOLD_COLUMNS
        title += "; threshold, sensitivity, specificity, F1 at the Youden-optimal threshold (optimistic)"
    print_table(rows, cols, fmt, title=title)
