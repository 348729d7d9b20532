"""`ecgscan pretrain` end to end through the CLI: stdout, exit codes, resume, refusals."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli.cli.app import app  # noqa: E402

FAST = ["--preset", "tiny", "--text-model", "tiny", "--max-steps", "2", "--batch-size", "8", "--set", "teacher_steps=2",
        "--set", "log_every=1", "--set", "num_workers=0", "--device", "cpu", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    from ecgscan_cli.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("cli") / "synth.h5", 40, seed=2)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_help():
    out = run("pretrain", "--help")
    assert out.exit_code == 0
    for flag in ("--preset", "--config", "--resume", "--max-minutes", "--signal-encoder", "--set"):
        assert flag in out.output
    for removed in ("--lambda-gram", "--lora-r", "--eval-every", "--num-workers", "--teacher-steps"):
        assert removed not in out.output  # reached with --set now


@pytest.mark.slow
def test_pretrain_resume_and_refusals(tmp_path, synth_file):
    out_dir = tmp_path / "run"
    res = run("pretrain", synth_file, "-o", out_dir, *FAST)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out_dir / "best")
    from ecgscan_cli.checkpoint import is_checkpoint

    assert is_checkpoint(out_dir / "best") and is_checkpoint(out_dir / "last")
    run_cfg = json.loads((out_dir / "run.json").read_text())
    assert run_cfg["max_steps"] == 2 and run_cfg["model"]["text_model"] == "tiny"
    assert (out_dir / "teacher" / "signal_encoder.json").exists()

    # output exists
    res = run("pretrain", synth_file, "-o", out_dir, *FAST)
    assert res.exit_code == 2 and "--overwrite" in res.output
    # resume with the run's own config: continues (here: already complete) and prints the path
    res = run("pretrain", synth_file, "-o", out_dir, "--resume", "--max-steps", "3", "--quiet")
    assert res.exit_code == 2 and "config differs" in res.output  # max_steps changes the schedule
    res = run("pretrain", synth_file, "-o", out_dir, "--resume", "--quiet", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out_dir / "best")


def test_bad_input_exit_codes(tmp_path, synth_file):
    res = run("pretrain", tmp_path / "missing.h5", "-o", tmp_path / "r", *FAST)
    assert res.exit_code == 2 and "no such file" in res.output
    res = run("pretrain", synth_file, "-o", tmp_path / "r", *FAST[:-1], "--preset", "huge")
    assert res.exit_code == 2 and "unknown preset" in res.output
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "precious.txt").write_text("keep me")
    res = run("pretrain", synth_file, "-o", tmp_path / "not-a-run", *FAST, "--overwrite")
    assert res.exit_code == 2 and "refusing" in res.output
    assert (tmp_path / "not-a-run" / "precious.txt").exists()
    res = run("pretrain", synth_file, "-o", tmp_path / "nope", "--resume", "--quiet")
    assert res.exit_code == 2 and "not an ecgscan run folder" in res.output
