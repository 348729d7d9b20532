"""`ecgscan render`: ECG printouts from a signals file, to an images file or a folder of PNG/JPG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecgscan_cli.cli.common import Overwrite, Quiet, Threads, Seed, command, log, progress_bar


def _list_augmentations(value: Optional[bool]) -> None:
    if value:
        import json

        from ecgscan_cli.render.augment import describe_all

        typer.echo(json.dumps(describe_all(), indent=2, ensure_ascii=False))
        raise typer.Exit()


@command
def render_command(
    signals: Annotated[Path, typer.Argument(metavar="SIGNALS", help="Signals file (from `ecgscan import` or `ecgscan synth`).",
                                            show_default=False)],
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="PATH", show_default=False,
        help="Images file (.h5), or a folder for png/jpg pages (a trailing / or an existing folder means "
             "png unless --image-format says jpg).")],
    image_format: Annotated[Optional[str], typer.Option(
        "--image-format", metavar="h5|png|jpg", show_default=False,
        help="h5 (one images file) or png/jpg (a folder of pages named after the record ids + one JSON "
             "sidecar each); default: from --output.")] = None,
    deprecated_format: Annotated[Optional[str], typer.Option(
        "--format", hidden=True, help="Deprecated name of --image-format.")] = None,
    augment: Annotated[str, typer.Option("--augment", help="Augmentation preset: none, light, paper, heavy, "
                                                           "photo, phone.")
                       ] = "none",
    augment_config: Annotated[Optional[Path], typer.Option(
        "--augment-config", help="YAML/JSON file of {name: {p, strength}} (optionally 'preset: ...'); "
                                 "overrides --augment.")] = None,
    dpi: Annotated[float, typer.Option("--dpi", help="Page resolution (full pages).")] = 200.0,
    paper: Annotated[str, typer.Option("--paper", help="letter or a4 (landscape).")] = "letter",
    speed: Annotated[float, typer.Option("--speed", help="Paper speed, 25 or 50 mm/s.")] = 25.0,
    gain: Annotated[float, typer.Option("--gain", help="Gain, 5, 10 or 20 mm/mV.")] = 10.0,
    grid: Annotated[str, typer.Option("--grid", help="Grid style: red, pink, bold, coarse, gray, blue, green, "
                                                     "none.")] = "red",
    header: Annotated[bool, typer.Option("--header/--no-header", help="Header text (id, speed, gain).")] = True,
    layout: Annotated[str, typer.Option("--layout", help="3x4+1 (3×4 panels + a lead II rhythm strip), 3x4+3 "
                                                         "(+ V1, II and V5 rhythm strips) or 6x2.")] = "3x4+1",
    rhythm: Annotated[str, typer.Option("--rhythm", metavar="LEADS", help="The rhythm strips' leads, comma-"
                                        "separated (default: II; V1,II,V5 for 3x4+3).", show_default=False)] = "",
    size: Annotated[Optional[int], typer.Option("--size", help="Model-size output: the page letterboxed into "
                                                               "N×N pixels, rendered directly at that size.")
                    ] = None,
    targets: Annotated[Optional[Path], typer.Option(
        "--targets", metavar="DIR", show_default=False,
        help="Also write each page's per-pixel targets into the folder DIR: DIR/<id>.png (R = trace ink, "
             "G = grid lines, B = paper, moved by the page's own augmentation) + the page's JSON sidecar.")
                       ] = None,
    seed: Seed = 0,
    list_augmentations: Annotated[Optional[bool], typer.Option(
        "--list-augmentations", callback=_list_augmentations, is_eager=True,
        help="Print the registered augmentations (name, group, description, parameters, draw order) and the "
             "presets as one JSON document, and exit.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Processes for full-page rendering and "
                                                                  "image encoding (0 = the CPUs not busy with other jobs).")
                       ] = 0,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Render only the first N records.")] = None,
    overwrite: Overwrite = False,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Render ECG printouts (3×4 + lead II rhythm strip by default, calibrated grid) with optional augmentations."""
    from ecgscan_cli.cli.common import use_threads

    use_threads(threads)  # before any torch or BLAS work
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.render.augment import AugmentConfig
    from ecgscan_cli.render.files import RenderJob, check_job, render_file
    from ecgscan_cli.render.layout import LayoutOptions

    from ecgscan_cli.render.files import output_format
    from ecgscan_cli.threads import default_threads

    if deprecated_format is not None:
        if image_format is not None:
            raise EcgscanError("give --image-format only (--format is its deprecated name)")
        image_format = deprecated_format
    fmt = output_format(output, image_format)
    workers = workers or default_threads()   # the free CPUs: all of them on a quiet machine
    output = Path(output)
    options = LayoutOptions(paper=paper.lower(), speed=speed, gain=gain, grid=grid.lower(), header=header,
                            layout=layout.strip().lower(), rhythm=rhythm).check()
    aug = AugmentConfig.from_file(augment_config) if augment_config is not None else AugmentConfig.preset(augment)
    job = RenderJob(str(signals), fmt, options, aug, dpi, size, seed)
    checked = check_job(job, output, workers=workers, limit=limit, overwrite=overwrite,  # before any output
                        targets=targets)
    total = checked[1]
    with progress_bar(total, "rendering", quiet) as advance:
        out = render_file(job, output, workers=workers, limit=limit, overwrite=overwrite, progress=advance,
                          checked=checked, targets=targets)
    log.info("rendered %d images → %s%s", total, out, f" (targets → {targets})" if targets is not None else "")
    if deprecated_format is not None:  # said after the work, so that an error stays one line
        log.warning("render --format is deprecated: use --image-format")
    typer.echo(str(out))
