"""Pretraining loop: resume is exact, DDP runs, bad input is refused, NaN fails, tiny learns."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli.errors import EcgscanError, EcgscanFailure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")

MINI = {"max_steps": 6, "batch_size": 8, "teacher_steps": 3, "teacher_batch": 8, "max_val": 16,
        "eval_every": 100, "save_every": 3, "log_every": 2, "augment": "light", "num_workers": 0,
        "model.text_model": "tiny"}


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    from ecgscan_cli.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("data") / "synth.h5", 48, seed=3)


def mini_config(**extra):
    from ecgscan_cli.train import resolve_config

    return resolve_config("tiny", overrides={**MINI, **extra})


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "last" / "model.safetensors"))


@pytest.mark.slow
def test_resume_ends_with_the_same_weights(tmp_path, synth_file):
    from ecgscan_cli.train import pretrain

    straight = pretrain(synth_file, tmp_path / "a", mini_config(eval_every=2), device="cpu")
    assert straight.step == 6

    calls = {"n": 0}

    def stop_after_four(n=1):
        calls["n"] += n
        if calls["n"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(synth_file, tmp_path / "b", mini_config(eval_every=2), device="cpu", progress=stop_after_four)
    assert json.loads((tmp_path / "b" / "last" / "ecgscan_checkpoint.json").read_text())["step"] == 4
    resumed = pretrain(synth_file, tmp_path / "b", mini_config(eval_every=2), device="cpu", resume=True)
    assert resumed.step == 6
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics log: every loss term, lr, throughput, render share
    rec = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rec if r["split"] == "train"]
    for key in ("loss", "clip", "gram", "mse", "lead", "lr", "steps_per_s", "images_per_s", "render_share"):
        assert key in train[0]
    # best = the lowest validation loss of the run (steps 2, 4, 6), also across the resume
    vals = [r for r in rec if r["split"] == "val"]
    assert [r["step"] for r in vals] == [2, 4, 6]
    lowest = min(vals, key=lambda r: r["val_loss"])
    assert straight.best_val == pytest.approx(lowest["val_loss"]) and straight.best_step == lowest["step"]
    assert json.loads((straight.best / "ecgscan_checkpoint.json").read_text())["step"] == lowest["step"]
    assert resumed.best_step == straight.best_step and resumed.best_val == pytest.approx(straight.best_val)
    # the checkpoint loads with no other flags
    from ecgscan_cli.checkpoint import is_checkpoint, load_checkpoint

    assert is_checkpoint(tmp_path / "a") and is_checkpoint(straight.best)
    model = load_checkpoint(tmp_path / "a")
    assert model.encode_text(["sinus rhythm"]).shape == (1, 64)

    # a different config on --resume is refused
    with pytest.raises(EcgscanError, match="config differs"):
        pretrain(synth_file, tmp_path / "b", mini_config(eval_every=2, lr=1e-2), device="cpu", resume=True)


def test_bad_input(tmp_path, synth_file):
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.train import pretrain, resolve_config

    x = np.zeros((20, 12, 5000), np.float32)
    ids = [f"r{i}" for i in range(20)]
    write_signals(tmp_path / "noreports.h5", x, ids)
    with pytest.raises(EcgscanError, match="no record has a report"):
        pretrain(tmp_path / "noreports.h5", tmp_path / "r1", mini_config(), device="cpu")
    write_signals(tmp_path / "short.h5", x[:, :, :2500], ids, ["sinus"] * 20)
    with pytest.raises(EcgscanError, match="2500 samples"):
        pretrain(tmp_path / "short.h5", tmp_path / "r2", mini_config(), device="cpu")
    write_signals(tmp_path / "rate.h5", x, ids, ["sinus"] * 20, fs=250.0)
    with pytest.raises(EcgscanError, match="250 Hz"):
        pretrain(tmp_path / "rate.h5", tmp_path / "r3", mini_config(), device="cpu")
    with pytest.raises(EcgscanError, match="unknown preset"):
        resolve_config("huge")
    with pytest.raises(EcgscanError, match="unknown config keys"):
        resolve_config("tiny", overrides={"learning_rate": 1.0})
    with pytest.raises(EcgscanError, match="unknown model config keys"):
        resolve_config("tiny", overrides={"model.layers": 3})
    (tmp_path / "cfg.yaml").write_text("lr: [unclosed\n")
    with pytest.raises(EcgscanError, match="not valid YAML"):
        resolve_config("tiny", str(tmp_path / "cfg.yaml"))
    with pytest.raises(EcgscanError, match="--resume"):
        pretrain(synth_file, tmp_path / "none", mini_config(), device="cpu", resume=True)
    with pytest.raises(EcgscanError, match="unknown image model"):
        pretrain(synth_file, tmp_path / "r4", mini_config(**{"model.image_model": "ViT-Nope"}), device="cpu")
    with pytest.raises(EcgscanError, match=r"has no validation fold 11 \(it has folds 1-10\)"):
        pretrain(synth_file, tmp_path / "r5", mini_config(split="folds", val_folds=[11]), device="cpu")
    assert not (tmp_path / "r5").exists()


def test_config_file_and_flags_precedence(tmp_path):
    from ecgscan_cli.train import lr_at, resolve_config

    (tmp_path / "c.json").write_text(json.dumps({"lr": 1e-3, "batch_size": 7, "model": {"lora_r": 4}}))
    cfg = resolve_config("tiny", str(tmp_path / "c.json"), {"lr": 3e-3})
    assert cfg.lr == 3e-3 and cfg.batch_size == 7 and cfg.model.lora_r == 4 and cfg.model.decoder_width == 64
    paper = resolve_config("paper")
    assert (paper.batch_size, paper.lr, paper.max_steps) == (80, 5e-4, 50000)
    # 10 % warm-up then cosine
    assert lr_at(0, paper) == pytest.approx(5e-4 / 5000)
    assert lr_at(4999, paper) == pytest.approx(5e-4)
    assert lr_at(27500, paper) == pytest.approx(2.5e-4, rel=1e-3)
    assert lr_at(49999, paper) < 1e-8


def test_nan_loss_fails_with_exit_code_1(tmp_path, synth_file, monkeypatch):
    from ecgscan_cli import losses
    from ecgscan_cli.train import pretrain

    monkeypatch.setattr(losses.ReconstructionMSELoss, "forward", lambda self, r, s: r.sum() * float("nan"))
    with pytest.raises(EcgscanFailure, match="not finite") as e:
        pretrain(synth_file, tmp_path / "nan", mini_config(max_steps=2), device="cpu")
    assert e.value.exit_code == 1


def test_full_disk_while_training_keeps_last_good_checkpoint(tmp_path, synth_file, monkeypatch):
    from ecgscan_cli import checkpoint
    from ecgscan_cli.train import pretrain

    real = checkpoint._save_tensors
    state = {"n": 0}

    def flaky(tensors, path, metadata=None):  # step 3 saves model + state; then the disk is full
        state["n"] += 1
        if state["n"] > 2:
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata)

    monkeypatch.setattr(checkpoint, "_save_tensors", flaky)
    with pytest.raises(EcgscanFailure, match="No space left.*last good checkpoint") as e:
        pretrain(synth_file, tmp_path / "full", mini_config(max_steps=9), device="cpu")
    assert e.value.exit_code == 1
    meta = checkpoint.read_meta(tmp_path / "full" / "last")
    assert meta["step"] == 3
    assert checkpoint.load_checkpoint(tmp_path / "full" / "last") is not None
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.startswith(".")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, synth_file):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "ecgscan_cli", "pretrain", str(synth_file), "-o", str(run), "--preset", "tiny",
           "--text-model", "tiny", "--max-steps", "4", "--batch-size", "4", "--set", "teacher_steps=2",
           "--set", "eval_every=2", "--set", "save_every=2", "--set", "log_every=2", "--set", "num_workers=0", "--device", "cpu",
           "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines() == [str(run / "best")]  # rank 0 prints, once
    rec = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rec if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]  # rank 0 logs alone
    assert train[-1]["images_per_s"] > 0
    state = json.loads((run / "last" / "state" / "state.json").read_text())
    assert state["world"] == 2 and state["micro_batches"] == 4
