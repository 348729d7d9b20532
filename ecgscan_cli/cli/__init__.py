"""The Typer command-line layer: parses arguments, calls library functions, reports.

No model logic lives here, and nothing heavy (torch, transformers, open_clip) is
imported at module level, so ``ecgscan --help`` stays fast.
"""
