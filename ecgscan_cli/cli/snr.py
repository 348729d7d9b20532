"""`ecgscan snr-check`: lead-SNR table (paper Table 1) or reconstruction SNR against a reference."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Format, Overwrite, Quiet, TableFormat, command, progress_bar


class Missing(str, Enum):
    scale = "scale"
    zero = "zero"


@command
def snr_check_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Signals file (.h5), or a WFDB folder / PTB-XL root / .hea record.")],
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="Reference signals file: score FILE as a reconstruction of it, per lead, records "
        "matched by id (PhysioNet 2024 SNR).", dir_okay=False)] = None,
    align: Annotated[bool, typer.Option(
        "--align", help="With --reference: allow a time shift up to 0.5 s and a vertical offset up to 1 mV "
        "per lead.")] = False,
    missing: Annotated[Missing, typer.Option(
        "--missing", help="With --reference: NaN samples of FILE are ignored and the score scaled by the "
        "fraction covered (scale), or count as 0 mV as in the official challenge code (zero).")] = Missing.scale,
    score_absent: Annotated[bool, typer.Option(
        "--score-absent", help="With --reference: also score the reference records absent from FILE, as 0 dB "
        "(what the PhysioNet 2024 scorer does); by default they are left out and counted.")] = False,
    per_record: Annotated[Optional[Path], typer.Option(
        "--per-record", help="Also write the per-record table to this CSV file (id, one column per lead).",
        dir_okay=False)] = None,
    derive_limb_leads: Annotated[bool, typer.Option(
        "--derive-limb-leads", help="WFDB input: rebuild missing limb leads instead of skipping records.")] = False,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, max=64,
                                         help="WFDB input: reader processes (0 = automatic, at most 64).")] = 0,
    fmt: Format = TableFormat.table,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """SNR per lead: mean, median, min and count over records (columns lead,mean_db,median_db,min_db,n).

    Without --reference: the lead-SNR of the ECG-Scan paper (Table 1), recorded III, aVR,
    aVL, aVF against those derived from I and II (Einthoven, Goldberger). With
    --reference REF: the reconstruction SNR of FILE against REF for all 12 leads plus
    'all' (mean over every record and lead, the challenge's score).
    """
    import logging

    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.cli.common import print_table
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli import snr

    log = logging.getLogger("ecgscan.snr")
    if per_record is not None:
        check_output_path(per_record, overwrite, kind="file")
    if align and reference is None:
        raise EcgscanError("--align needs --reference (it aligns FILE to the reference)")
    if reference is not None:
        if file.is_dir() or file.suffix == ".hea":
            raise EcgscanError("with --reference, FILE must be a signals file (import WFDB folders first)")
        from ecgscan_cli.formats.signals import SignalsFile

        n = len(SignalsFile(reference))
        with progress_bar(n, "scoring", quiet=quiet) as advance:
            result = snr.compare_signals(file, reference, align=align, missing=missing.value,
                                         score_absent=score_absent, progress=advance)
        absent = len(result.missing_ids)
        if absent:
            log.warning("%d of %d reference record(s) are absent from %s: %s (first: %s)", absent, n, file,
                        "scored 0 dB (--score-absent)" if score_absent else "not scored (--score-absent scores "
                        "them as 0 dB)", result.missing_ids[0])
        if result.extra_ids:
            log.warning("%d record(s) of %s are not in the reference and were ignored", len(result.extra_ids), file)
        title = (f"reconstruction SNR (dB) of {file.name} against {reference.name}, {len(result.ids)} records"
                 + (f" ({absent} reference records absent, {'scored 0 dB' if score_absent else 'not scored'})"
                    if absent else ""))
    else:
        from ecgscan_cli.wfdb_import import iter_signals

        n, items, stats = iter_signals(file, derive_limb_leads=derive_limb_leads, workers=workers)
        with progress_bar(n, "lead-SNR", quiet=quiet) as advance:
            result = snr.lead_snr_from_items(items, stats, source=file, progress=advance)
        if result.skipped:
            log.warning("skipped %d unreadable record(s): %s", sum(result.skipped.values()),
                        ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())))
        title = f"lead-SNR (dB), recorded vs derived from I and II, {len(result.ids)} records"
    if per_record is not None:
        path = snr.write_per_record_csv(result, per_record, overwrite=overwrite)
        log.info("per-record table written to %s", path)
    print_table(result.summary, list(snr.SUMMARY_COLUMNS), fmt, title=title)
