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


class Metric(str, Enum):
    aligned = "aligned"
    physionet2024 = "physionet2024"


@command
def snr_check_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Signals file (.h5), or a WFDB folder / PTB-XL root / .hea record.")],
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", help="Reference signals file or WFDB folder: score FILE (a signals file or WFDB folder) as "
        "a reconstruction of it, per lead, records matched by id (WFDB: relative path).")] = None,
    metric: Annotated[Optional[Metric], typer.Option(
        "--metric", help="With --reference: 'aligned' (default): FILE may be shifted up to --max-shift s and "
        "offset up to --max-offset mV per lead, NaN samples left out and the score × coverage. "
        "'physionet2024': exactly the PhysioNet/CinC 2024 scorer (no alignment, NaN and absent records "
        "count as 0 mV, mean over record × lead with ±inf kept).", show_default=False)] = None,
    max_shift: Annotated[Optional[float], typer.Option(
        "--max-shift", min=0.0, help="With --metric aligned: largest time shift in seconds [default: 0.5].",
        show_default=False)] = None,
    max_offset: Annotated[Optional[float], typer.Option(
        "--max-offset", min=0.0, help="With --metric aligned: largest vertical offset in mV [default: 1.0].",
        show_default=False)] = None,
    align: Annotated[bool, typer.Option(
        "--align", help="Older spelling of --metric aligned (now the default).")] = False,
    missing: Annotated[Optional[Missing], typer.Option(
        "--missing", help="Older spelling: 'scale' is --metric aligned, 'zero' is --metric physionet2024.",
        show_default=False)] = None,
    score_absent: Annotated[bool, typer.Option(
        "--score-absent", help="With --metric aligned: also score the reference records absent from FILE, as "
        "0 dB; by default they are left out and counted. (physionet2024 always scores them, against zeros, "
        "as the official scorer does.)")] = False,
    shown_only: Annotated[bool, typer.Option(
        "--shown-only", help="Score only what a standard printed page shows (3x4 at 25 mm/s: each lead 2.5 s, "
        "lead II 10 s): the reference is masked as the PhysioNet 2024 references of printed ECGs are.")] = False,
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
    --reference REF: the reconstruction SNR of FILE against REF for every lead of REF plus
    'all' (the mean over every record and lead: the challenge's score).
    """
    import logging

    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.cli.common import print_table
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli import snr

    log = logging.getLogger("ecgscan.snr")
    if per_record is not None:
        check_output_path(per_record, overwrite, kind="file")
    if reference is None:
        for flag, given in (("--align", align), ("--metric", metric is not None), ("--missing", missing is not None),
                            ("--max-shift", max_shift is not None), ("--max-offset", max_offset is not None),
                            ("--score-absent", score_absent), ("--shown-only", shown_only)):
            if given:
                raise EcgscanError(f"{flag} needs --reference (it scores FILE as a reconstruction of REF)")
    if reference is not None:
        chosen = snr.resolve_metric(None if metric is None else metric.value, align=align or None,
                                    missing=None if missing is None else missing.value)
        if chosen == snr.PHYSIONET2024 and (max_shift is not None or max_offset is not None):
            raise EcgscanError("--max-shift and --max-offset belong to --metric aligned; the PhysioNet 2024 "
                               "metric does not align")
        if file.suffix == ".hea" or reference.suffix == ".hea":
            raise EcgscanError("with --reference, give signals files or WFDB folders, not single .hea records")
        records = snr.open_records(reference)
        n = len(records.ids)
        records.close()
        with progress_bar(n, "scoring", quiet=quiet) as advance:
            result = snr.compare_signals(
                file, reference, metric=chosen, score_absent=score_absent, progress=advance, shown_only=shown_only,
                max_shift_s=snr.MAX_SHIFT_S if max_shift is None else max_shift,
                max_offset_mv=snr.MAX_OFFSET_MV if max_offset is None else max_offset)
        official = chosen == snr.PHYSIONET2024
        absent = len(result.missing_ids)
        fate = ("scored against zeros, as the official scorer does" if official
                else "scored 0 dB (--score-absent)" if score_absent
                else "not scored (--score-absent scores them as 0 dB)")
        if result.unreadable:
            why = next(iter(result.unreadable.values()))
            log.warning("%d record(s) of %s could not be read and count as absent (first: %s)",
                        len(result.unreadable), file, why)
        if absent:
            log.warning("%d of %d reference record(s) are absent from %s: %s (first: %s)", absent, n, file,
                        fate, result.missing_ids[0])
        if result.no_signal_ids:
            log.warning("%d reference record(s) list no signal file and were not scored (first: %s)",
                        len(result.no_signal_ids), result.no_signal_ids[0])
        if result.extra_ids:
            log.warning("%d record(s) of %s are not in the reference and were ignored", len(result.extra_ids), file)
        bands = snr.by_reading_quality(result, file)
        if bands:
            log.info("mean SNR by reading quality (the digitiser's /digitizer/quality): %s",
                     ", ".join(f"{q} {db:.1f} dB ({k} record{'s' if k != 1 else ''})" for q, db, k in bands))
        short_fate = "scored against zeros" if official else "scored 0 dB" if score_absent else "not scored"
        title = (f"reconstruction SNR (dB, metric {chosen}) of {file.name} against {reference.name}, "
                 f"{len(result.ids)} records"
                 + (f" ({absent} reference records absent, {short_fate})" if absent else ""))
    else:
        from ecgscan_cli.importing import iter_signals

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
