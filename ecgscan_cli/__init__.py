"""ecgscan: learn representations of ECG images (the ECG-Scan method) from the command line.

The package is a library (signals, rendering, model, training, evaluation) with a thin
Typer CLI in :mod:`ecgscan_cli.cli`. The library never imports the CLI.
"""

__version__ = "0.1.0"
