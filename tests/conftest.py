"""Shared fixtures. Real PTB-XL data is read from ../shared/data/ptbxl-sample when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PTBXL_SAMPLE = Path(os.environ.get("ECGSCAN_PTBXL_SAMPLE", REPO.parent / "shared" / "data" / "ptbxl-sample"))


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    if not (PTBXL_SAMPLE / "ptbxl_database.csv").exists():
        pytest.skip(f"PTB-XL sample not found at {PTBXL_SAMPLE}")
    return PTBXL_SAMPLE


@pytest.fixture
def random_signals_file(tmp_path):
    """A small signals file of random-walk 'ECGs' with consistent limb leads (no synth needed)."""
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.leads import with_derived_limb_leads

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 0.01, size=(6, 12, 5000)), axis=-1).astype(np.float32)
    x = with_derived_limb_leads(x)
    path = tmp_path / "random.h5"
    write_signals(path, x, [f"r{i}" for i in range(6)], [f"report {i}" for i in range(6)],
                  labels=rng.integers(0, 2, size=(6, 2)), classes=["A", "B"], folds=[1, 2, 3, 4, 5, 6])
    return path


@pytest.fixture(autouse=True)
def _thread_settings_restored():
    """Commands run in-process (CliRunner) call ``threads.set_threads``, which rewrites
    OMP_NUM_THREADS & co. and torch's thread count for the whole process, as a command
    should; here they must not leak into the next test."""
    import sys

    from ecgscan_cli.threads import BLAS_ENV

    env = {name: os.environ.get(name) for name in BLAS_ENV}
    torch = sys.modules.get("torch")
    n = torch.get_num_threads() if torch is not None else None
    yield
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if n is not None:
        torch.set_num_threads(n)


def _ignore_quietly(signum, frame):
    pass


@pytest.fixture(autouse=True)
def _stop_signals_not_ignored():
    """Tests stop commands with SIGINT, SIGTERM and SIGHUP and expect them to clean up, but
    a run started in the background (``pytest &`` in a script ignores SIGINT) or under
    ``nohup`` (SIGHUP) hands its children those signals ignored, and the commands rightly
    keep an ignored signal ignored. While a test runs, an inherited SIG_IGN becomes a
    handler: exec resets a handled signal to its default in every child, as in a terminal.
    SIGINT raises KeyboardInterrupt, as Python's own handler does (tests interrupt
    themselves); SIGTERM and SIGHUP do nothing here, so the test run still outlives a
    hangup."""
    import signal

    inherited = {}
    for name, handler in (("SIGINT", signal.default_int_handler), ("SIGTERM", _ignore_quietly),
                          ("SIGHUP", _ignore_quietly)):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is signal.SIG_IGN:
            inherited[signum] = signal.signal(signum, handler)
    yield
    for signum, handler in inherited.items():
        signal.signal(signum, handler)


@pytest.fixture
def one_thread():
    """One intra-op torch thread: far faster than two on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny ECG-Scan checkpoint (64-px images), saved once per run;
    tests only read it."""
    import torch

    from ecgscan_cli.checkpoint import save_checkpoint
    from ecgscan_cli.model import build_model, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(image_size=64, patch=40), load_weights=False)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", model)


@pytest.fixture(scope="session")
def ptbxl_record(ptbxl_dir):
    """A function: PTB-XL record id ('00001') → its canonical [12, 5000] mV at 500 Hz (float64)."""
    from ecgscan_cli.importing import read_canonical

    def read(rid: str) -> np.ndarray:
        hea = next((ptbxl_dir / "records500").rglob(f"{rid}_hr.hea"))
        return read_canonical(hea.with_suffix("")).astype(np.float64)

    return read
