"""ecgscan: learn representations of ECG images (the ECG-Scan method) from the command line.

The package is a library (signals, rendering, model, training, evaluation) with a thin
Typer CLI in :mod:`ecgscan_cli.cli`. The library never imports the CLI.

The public API is :data:`__all__`, e.g.::

    import ecgscan_cli as ecg

    model = ecg.load_checkpoint("run/best", device=ecg.resolve_device("auto"))
    images = ecg.render_batch(torch.from_numpy(signals), size=model.image_size)  # [B,3,H,W]
    z = model.encode_image(images)                                            # [B,D]
    page, meta = ecg.render_page(signals[0])                                  # a printout
    with ecg.SignalsFile("ptbxl.h5") as sf:
        snr = ecg.lead_snr_db(sf.signal(0))                                   # [4] dB

Each name is imported on first use (module ``__getattr__``), so ``import ecgscan_cli`` stays
fast and does not import torch; the CLI's start-up time depends on it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_EXPORTS = {
    # errors users can cause
    "EcgscanError": "ecgscan_cli.errors",
    # checkpoints and devices
    "load_checkpoint": "ecgscan_cli.checkpoint",
    "resolve_device": "ecgscan_cli.device",
    # embedding images
    "load_encoder": "ecgscan_cli.embed",
    "embed_source": "ecgscan_cli.embed",
    "embed_to_file": "ecgscan_cli.embed",
    "open_source": "ecgscan_cli.imageio",
    "EmbeddingsFile": "ecgscan_cli.formats.embeddings",
    # rendering
    "render_page": "ecgscan_cli.render",
    "render_batch": "ecgscan_cli.render",
    "LayoutOptions": "ecgscan_cli.render",
    # signals files
    "SignalsFile": "ecgscan_cli.formats.signals",
    "SignalsWriter": "ecgscan_cli.formats.signals",
    "write_signals": "ecgscan_cli.formats.signals",
    "LEADS": "ecgscan_cli.leads",
    # SNR: a recording's lead consistency, and reconstructions against a reference
    "lead_snr_db": "ecgscan_cli.leads",
    "lead_snr_table": "ecgscan_cli.snr",
    "record_snr": "ecgscan_cli.snr",
    "compare_signals": "ecgscan_cli.snr",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ecgscan_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
