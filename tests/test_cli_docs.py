"""The generated completions and man page are up to date with the Typer app."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("ecgscan_man_generate", REPO / "man" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict:
    return _generator().generate()


def test_generated_files_are_fresh(generated):
    stale = [p for p, text in generated.items()
             if not (REPO / p).is_file() or (REPO / p).read_text(encoding="utf-8") != text]
    assert not stale, f"stale generated files {stale}: run `python man/generate.py` and commit the result"


def test_generation_is_deterministic(generated):
    gen = _generator()
    assert gen.man_page() == generated[gen.MAN]


def test_contents(generated):
    man = generated["man/ecgscan.1"]
    assert man.startswith(".TH ECGSCAN 1")
    for cmd in ("import", "synth", "snr-check"):
        assert f'.SS "ecgscan {cmd}"' in man
    assert "_ECGSCAN_COMPLETE" in generated["completions/ecgscan.bash"]
    assert generated["completions/_ecgscan"].lstrip().startswith("#compdef ecgscan")
    assert "complete --command ecgscan" in generated["completions/ecgscan.fish"]
