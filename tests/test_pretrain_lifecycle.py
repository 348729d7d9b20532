"""The pretraining run's life: interrupted and resumed bit-exactly, signals, time budget,
checks before the output is touched, atomic --overwrite, a lock, one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli.cli.app import app  # noqa: E402
from ecgscan_cli.errors import EcgscanError, EcgscanFailure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

MINI = {"max_steps": 6, "batch_size": 8, "teacher_steps": 3, "teacher_batch": 8, "max_val": 16,
        "eval_every": 2, "save_every": 3, "log_every": 1, "augment": "light", "num_workers": 0,
        "model.text_model": "tiny"}
FAST = ["--preset", "tiny", "--text-model", "tiny", "--max-steps", "2", "--batch-size", "8", "--set", "teacher_steps=2",
        "--set", "log_every=1", "--set", "num_workers=0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    from ecgscan_cli.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("life") / "synth.h5", 48, seed=3)


@pytest.fixture(scope="module")
def straight(synth_file, tmp_path_factory):
    """The uninterrupted run every interrupted one must equal."""
    from ecgscan_cli.train import pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("straight") / "run"
        pretrain(synth_file, run, config(), device="cpu")
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture(autouse=True)
def _one_thread_everywhere(monkeypatch):
    """Bit-exact resumes compare runs made with the same thread count (float sums differ
    with the split), so every run here, in-process or through the CLI (which reads
    OMP_NUM_THREADS), uses one thread, as `straight` does (conftest restores the count)."""
    from ecgscan_cli.threads import BLAS_ENV

    for name in BLAS_ENV:
        monkeypatch.setenv(name, "1")
    torch.set_num_threads(1)


def config(**extra):
    from ecgscan_cli.train import resolve_config

    return resolve_config("tiny", overrides={**MINI, **extra})


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def tensors(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor a run ends with: last/ model and training state (optimizer, temperatures,
    RNG states), best/ model."""
    from safetensors.torch import load_file

    out = {}
    for name, path in (("last", run / "last" / "model.safetensors"),
                       ("state", run / "last" / "state" / "state.safetensors"),
                       ("best", run / "best" / "model.safetensors")):
        out.update({f"{name}/{k}": v for k, v in load_file(str(path)).items()})
    return out


def assert_same_run(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"{len(differ)} of {len(ta)} tensors differ, e.g. {differ[:3]}"
    for run in (a, b):
        steps = [r["step"] for r in metrics(run) if r["split"] == "train"]
        assert steps == sorted(set(steps)), steps  # each step logged once, resumed or not


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def saved_step(run: Path) -> int:
    return json.loads((run / "last" / "ecgscan_checkpoint.json").read_text())["step"]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ issue 15 item 4: Ctrl-C, then --resume

@pytest.mark.parametrize("stop_in_step", [2, 4, 5])
def test_ctrl_c_in_the_middle_of_a_step_resumes_bit_exactly(synth_file, straight, tmp_path, monkeypatch, stop_in_step):
    """SIGINT arrives while step k renders its batch (the random generators already drawn
    from): the step finishes, is saved, and the resumed run equals the uninterrupted one."""
    from ecgscan_cli.train import pretrain
    from ecgscan_cli.training import loop

    real_render, calls = loop._render, {"n": 0}

    def render(signals, size, augment, gen, fs):
        images = real_render(signals, size, augment, gen, fs)
        if augment != "none":  # training batches only, not validation
            calls["n"] += 1
            if calls["n"] == stop_in_step:
                os.kill(os.getpid(), signal.SIGINT)
        return images

    monkeypatch.setattr(loop, "_render", render)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as stopped:
        pretrain(synth_file, run, config(), device="cpu")
    saved = saved_step(run)
    monkeypatch.setattr(loop, "_render", real_render)
    resumed = pretrain(synth_file, run, config(), device="cpu", resume=True)
    assert resumed.step == 6
    assert_same_run(straight, run)
    assert saved == stop_in_step  # the step that was running, finished
    assert f"interrupted at step {stop_in_step}" in stopped.value.ecgscan_message


def test_an_unfinished_step_never_overwrites_the_periodic_checkpoint(synth_file, straight, tmp_path, monkeypatch):
    """A KeyboardInterrupt raised inside step 5 (no signal to hold: e.g. from a library):
    the step is abandoned, last/ keeps the consistent step-3 checkpoint, --resume redoes 4-6."""
    from ecgscan_cli.train import pretrain
    from ecgscan_cli.training import loop

    real_render, calls = loop._render, {"n": 0}

    def render(signals, size, augment, gen, fs):
        if augment != "none":
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
        return real_render(signals, size, augment, gen, fs)

    monkeypatch.setattr(loop, "_render", render)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as stopped:
        pretrain(synth_file, run, config(), device="cpu")
    saved = saved_step(run)
    monkeypatch.setattr(loop, "_render", real_render)
    pretrain(synth_file, run, config(), device="cpu", resume=True)
    assert_same_run(straight, run)
    assert saved == 3
    assert "during step 5 (not saved" in stopped.value.ecgscan_message


def test_a_second_ctrl_c_stops_at_once_without_saving(synth_file, tmp_path, monkeypatch):
    from ecgscan_cli.train import pretrain
    from ecgscan_cli.training import loop

    real_render, calls = loop._render, {"n": 0}

    def render(signals, size, augment, gen, fs):
        if augment != "none":
            calls["n"] += 1
            if calls["n"] == 4:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
        return real_render(signals, size, augment, gen, fs)

    monkeypatch.setattr(loop, "_render", render)
    with pytest.raises(KeyboardInterrupt):
        pretrain(synth_file, tmp_path / "run", config(), device="cpu")
    assert saved_step(tmp_path / "run") == 3


def test_ctrl_c_in_the_teacher_stage_leaves_a_run_that_resumes(synth_file, straight, tmp_path):
    """Issue 14 item 3: no circular advice; --resume trains the teacher again and the run
    ends as the uninterrupted one."""
    from ecgscan_cli.train import pretrain

    def stop(n=1):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as stopped:
        pretrain(synth_file, run, config(), device="cpu", teacher_progress=stop)
    assert "before the first training step" in stopped.value.ecgscan_message
    assert (run / "run.json").is_file() and not (run / "last").exists() and not (run / "teacher").exists()
    assert leftovers(tmp_path) == []
    r = cli("pretrain", synth_file, "-o", run, *FAST)  # a new run is refused, pointing at --resume
    assert r.exit_code == 2 and "--resume" in r.output
    resumed = pretrain(synth_file, run, config(), device="cpu", resume=True)
    assert resumed.step == 6
    assert_same_run(straight, run)


# ------------------------------------------------------------------ SIGTERM / SIGHUP through the command

@contextlib.contextmanager
def _running(args, cwd, stderr):
    """``ecgscan pretrain ARGS`` started; killed on the way out if a failed test left it
    running (these runs are long enough to outlive the test session otherwise)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ecgscan_cli", "pretrain", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _wait_for(predicate, proc, seconds=120.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the command ended early ({proc.returncode})")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out")


def _train_steps(run: Path) -> int:
    for folder in (run, *run.parent.glob(f".{run.name}.partial-*")):
        if (folder / "metrics.jsonl").is_file():
            return sum(1 for line in (folder / "metrics.jsonl").read_text().splitlines() if '"train"' in line)
    return 0


@pytest.mark.slow
def test_sigterm_saves_a_finished_step_and_resumes_bit_exactly(synth_file, tmp_path):
    from ecgscan_cli.train import pretrain

    args = ["--preset", "tiny", "--text-model", "tiny", "--max-steps", "60", "--batch-size", "8", "--set",
            "teacher_steps=3", "--set", "log_every=1", "--set", "eval_every=20", "--set", "save_every=20", "--set",
            "num_workers=0", "--device", "cpu", "--quiet"]
    run = tmp_path / "run"
    with open(tmp_path / "err", "w") as err, _running([synth_file, "-o", run, *args], tmp_path, err) as proc:
        _wait_for(lambda: _train_steps(run) >= 3, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    said = (tmp_path / "err").read_text().strip().splitlines()
    assert proc.returncode == 143 and out == ""
    assert len(said) == 1 and said[0].startswith("ecgscan: stopped by SIGTERM at step "), said
    stopped_at = saved_step(run)
    assert 3 <= stopped_at < 60 and said[0] == (f"ecgscan: stopped by SIGTERM at step {stopped_at}; {run}/last holds "
                                                "it: continue with --resume")
    assert leftovers(tmp_path) == []
    from ecgscan_cli.train import resolve_config
    from ecgscan_cli.training.config import read_run_config

    cfg = read_run_config(run)  # the command's config
    pretrain(synth_file, run, resolve_config(base=cfg), device="cpu", resume=True)
    pretrain(synth_file, tmp_path / "straight", resolve_config(base=cfg), device="cpu")
    assert_same_run(tmp_path / "straight", run)


@pytest.mark.slow
def test_sighup_in_the_teacher_stage_then_resume_within_a_budget(synth_file, tmp_path):
    """SIGHUP (a closed terminal) while the teacher trains: exit 129, one line, a run that
    --resume continues; the resumed command's --max-minutes bounds the teacher too."""
    run = tmp_path / "run"
    args = [synth_file, "-o", run, "--preset", "tiny", "--text-model", "tiny", "--max-steps", "100000",
            "--batch-size", "8", "--set", "teacher_steps=1000000", "--set", "num_workers=0", "--device", "cpu"]
    with open(tmp_path / "err", "w") as err, _running(args, tmp_path, err) as proc:
        _wait_for(lambda: "training the built-in signal teacher" in (tmp_path / "err").read_text(), proc)
        time.sleep(1.0)
        proc.send_signal(signal.SIGHUP)
        proc.communicate(timeout=120)
    last_line = (tmp_path / "err").read_text().strip().splitlines()[-1]
    assert proc.returncode == 129
    assert last_line == (f"ecgscan: stopped by SIGHUP before the first training step; {run} keeps the run's setup: "
                         "continue with --resume (it starts at step 0)")
    assert (run / "run.json").is_file() and leftovers(tmp_path) == []
    t0 = time.monotonic()
    r = cli("pretrain", synth_file, "-o", run, "--resume", "--max-minutes", "0.15", "--device", "cpu")
    took = time.monotonic() - t0
    assert r.exit_code == 0, r.output
    assert took < 0.15 * 60 + 6, took  # the budget and the final validation/save
    teacher = [m for m in metrics(run) if m["split"] == "teacher"][-1]
    assert teacher["teacher_cut_by_budget"] and teacher["teacher_s"] < 0.25 * 9 + 1
    assert "its share of --max-minutes" in r.output


# ------------------------------------------------------------------ issue 14 item 2: --max-minutes bounds the command

def test_max_minutes_bounds_the_teacher_stage_too(synth_file, tmp_path):
    from ecgscan_cli.train import pretrain

    t0 = time.monotonic()
    res = pretrain(synth_file, tmp_path / "run", config(max_steps=100000, teacher_steps=100000, max_minutes=0.1),
                   device="cpu", started=t0)
    took = time.monotonic() - t0
    assert took < 6 + 4, took  # 6 s budget; the final validation and checkpoint come after it
    assert res.stopped_early and res.teacher.cut_by_budget
    assert res.teacher.budget_s == pytest.approx(1.5) and res.teacher.seconds < 1.5 + 1.0
    teacher = [m for m in metrics(tmp_path / "run") if m["split"] == "teacher"]
    assert teacher and teacher[0]["teacher_steps"] == res.teacher.steps < 100000
    summary = [m for m in metrics(tmp_path / "run") if m["split"] == "summary"][-1]
    assert summary["teacher_s"] == pytest.approx(res.teacher.seconds) and summary["stopped_early"]


# ------------------------------------------------------------------ checks before the output is touched

@pytest.fixture(scope="module")
def old_run(synth_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("old") / "run"
    r = cli("pretrain", synth_file, "-o", run, *FAST)
    assert r.exit_code == 0, r.output
    return run


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("bad, said", [
    (["--image-model", "ViT-Nope"], "unknown image model"),
    (["--signal-encoder", "no-such-teacher.pt"], "signal encoder not found"),
    (["--text-model", "/typo/"], "text encoder /typo/: no such folder"),
    (["--text-model", "./typo"], "text encoder ./typo: no such folder"),
])
def test_overwrite_with_a_mistake_keeps_the_old_run(synth_file, old_run, bad, said):
    before = _snapshot(old_run)
    r = cli("pretrain", synth_file, "-o", old_run, *FAST, *bad, "--overwrite")
    assert r.exit_code == 2 and said in r.output and "Traceback" not in r.output, r.output
    assert _snapshot(old_run) == before
    assert leftovers(old_run.parent) == []


def test_a_text_model_path_typo_is_refused_not_replaced(tmp_path):
    from ecgscan_cli.encoders import load_text_encoder

    with pytest.raises(EcgscanError, match="no such folder"):
        load_text_encoder("/typo/")


@pytest.mark.parametrize("args, said", [
    (["--set", "eval_every=0"], "eval_every must be >= 1"),
    (["--set", "save_every=0"], "save_every must be >= 1"),
    (["--set", "log_every=0"], "log_every must be >= 1"),
    (["--set", "model.lora_dropout=2"], "lora_dropout must be in [0, 1)"),
    (["--set", "model.lora_r=0"], "lora_r must be >= 1"),
    (["--set", "num_workers=-1"], "num_workers must be >= 0"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1e23"], "--seed"),
    (["--val-folds", "abc"], "bad fold list"),
    (["--max-minutes", "0"], "max_minutes must be > 0"),
])
def test_bad_values_are_refused_before_any_work(synth_file, tmp_path, args, said):
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["pretrain", str(synth_file), "-o", str(tmp_path / "run"), *FAST, *args])
    assert r.exit_code == 2 and said in r.output and "Traceback" not in r.output, r.output
    assert time.monotonic() - t0 < 5 and not (tmp_path / "run").exists() and leftovers(tmp_path) == []


def test_config_file_with_wrong_types_is_one_line(synth_file, tmp_path):
    for text, said in (("model:\n  embed_dim: big\n", "model.embed_dim must be an integer, not 'big'"),
                       ("model:\n  patch: 0\n", "model.patch must be >= 1"),
                       ("seed: 1.0e+23\n", "seed must be an integer, not 1e+23"), ("seed: -1\n", "seed must be in 0..4294967295"),
                       ("val_folds: [a]\n", "val_folds must be a fold list"),
                       ("model: 3\n", "model must be a mapping")):
        (tmp_path / "c.yaml").write_text(text)
        r = cli("pretrain", synth_file, "-o", tmp_path / "run", *FAST, "--config", tmp_path / "c.yaml")
        assert r.exit_code == 2 and said in r.output and "Traceback" not in r.output, (text, r.output)


def test_a_failing_new_run_leaves_nothing_and_keeps_the_old_one(synth_file, old_run, tmp_path, monkeypatch):
    """Issue 15 items 3 and 15: NaN at the first step, after the teacher stage: nothing of the
    new run stays (no text_encoder/ copy), the run it was to overwrite is untouched."""
    from ecgscan_cli import losses

    monkeypatch.setattr(losses.ReconstructionMSELoss, "forward", lambda self, r, s: r.sum() * float("nan"))
    r = cli("pretrain", synth_file, "-o", tmp_path / "new", *FAST)
    assert r.exit_code == 1 and "not finite" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    before = _snapshot(old_run)
    r = cli("pretrain", synth_file, "-o", old_run, *FAST, "--overwrite")
    assert r.exit_code == 1 and "not finite" in r.output
    assert _snapshot(old_run) == before and leftovers(old_run.parent) == []


def test_overwrite_replaces_the_old_run_once_the_new_one_has_a_checkpoint(synth_file, tmp_path, monkeypatch):
    from ecgscan_cli.training import run_folder

    run = tmp_path / "run"
    assert cli("pretrain", synth_file, "-o", run, *FAST).exit_code == 0
    (run / "old-marker.txt").write_text("from the old run")
    seen = {}
    real_commit = run_folder.RunFolder.commit

    def commit(self):
        if not self.committed:
            seen["work"] = self.work.name
            seen["old still there"] = (run / "old-marker.txt").is_file()
            seen["has a checkpoint"] = (self.work / "best").is_dir() or (self.work / "last").is_dir()
        return real_commit(self)

    monkeypatch.setattr(run_folder.RunFolder, "commit", commit)
    r = cli("pretrain", synth_file, "-o", run, *FAST, "--overwrite")
    assert r.exit_code == 0, r.output
    assert seen["old still there"] and seen["has a checkpoint"]
    import re

    assert re.fullmatch(r"\.run\.partial-\d+-[0-9a-f]{6}-[0-9a-f]{8}", seen["work"]), seen["work"]
    assert not (run / "old-marker.txt").exists() and (run / "best").is_dir() and leftovers(tmp_path) == []


def test_a_second_pretrain_into_the_same_folder_is_refused(synth_file, tmp_path):
    from ecgscan_cli.training.run_folder import RunLock

    from ecgscan_cli import atomic

    run = tmp_path / "run"
    # what a SIGKILLed pretrain leaves: its temporary run folder (its process is gone) and its lock file
    stale = tmp_path / f".run.partial-{2 ** 22 + 12345}-{atomic._HOST}-deadbeef"
    (stale / "text_encoder").mkdir(parents=True)
    (tmp_path / ".run.lock").write_text("999999")
    lock = RunLock(run)
    lock.acquire()  # another pretrain holds it
    try:
        for extra in ([], ["--overwrite"]):
            r = cli("pretrain", synth_file, "-o", run, *FAST, *extra)
            assert r.exit_code == 2 and f"{run} is in use by another ecgscan pretrain (process {os.getpid()})" \
                in r.output, r.output
        assert not run.exists()
    finally:
        lock.release()
    assert cli("pretrain", synth_file, "-o", run, *FAST).exit_code == 0
    assert leftovers(tmp_path) == []  # the stale temporary removed, the lock file too


def test_relative_signal_encoder_resolves_when_resuming_elsewhere(synth_file, old_run, tmp_path, monkeypatch):
    import shutil

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copytree(old_run / "teacher", tmp_path / "a" / "my-teacher")
    monkeypatch.chdir(tmp_path / "a")
    r = cli("pretrain", synth_file, "-o", tmp_path / "run", *FAST, "--signal-encoder", "my-teacher")
    assert r.exit_code == 0, r.output
    stored = json.loads((tmp_path / "run" / "run.json").read_text())["signal_encoder"]
    assert stored == str(tmp_path / "a" / "my-teacher")
    monkeypatch.chdir(tmp_path / "b")
    r = cli("pretrain", synth_file, "-o", tmp_path / "run", "--resume", "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output


# ------------------------------------------------------------------ hostile run folders, full disk

def test_hostile_run_json_and_state_json_are_one_line(synth_file, old_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    (run / "run.json").write_text("{not json")
    r = cli("pretrain", synth_file, "-o", run, "--resume", "-q")
    assert r.exit_code == 2 and "run.json: not valid JSON" in r.output and "Traceback" not in r.output
    cfg = json.loads((old_run / "run.json").read_text())
    cfg["model"]["patch"] = 0
    (run / "run.json").write_text(json.dumps(cfg))
    r = cli("pretrain", synth_file, "-o", run, "--resume", "-q")
    assert r.exit_code == 2 and "model.patch must be >= 1" in r.output
    shutil.copy(old_run / "run.json", run / "run.json")
    (run / "last" / "state" / "state.json").write_text("[1, 2")
    r = cli("pretrain", synth_file, "-o", run, "--resume", "-q", "--device", "cpu")
    assert r.exit_code == 2 and "state.json: not valid JSON" in r.output and "Traceback" not in r.output
    (run / "last" / "state" / "state.json").write_text('{"step": 1}')
    r = cli("pretrain", synth_file, "-o", run, "--resume", "-q", "--device", "cpu")
    assert r.exit_code == 2 and "training state does not fit this run" in r.output


def test_checkpoint_with_a_hostile_model_config_is_one_line(old_run, tmp_path):
    import shutil

    from ecgscan_cli.checkpoint import load_checkpoint

    for key, value, said in (("embed_dim", "big", "model.embed_dim must be an integer, not 'big'"),
                             ("patch", 0, "model.patch must be >= 1")):
        ckpt = tmp_path / f"ckpt-{key}"
        shutil.copytree(old_run / "best", ckpt)
        meta = json.loads((ckpt / "ecgscan_checkpoint.json").read_text())
        meta["model_config"][key] = value
        (ckpt / "ecgscan_checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(EcgscanError, match=said):
            load_checkpoint(ckpt)


def test_full_disk_at_a_checkpoint_is_one_line_and_leaves_nothing(synth_file, tmp_path, monkeypatch):
    """safetensors reports ENOSPC as its own SafetensorError: one line, exit 1; the run had no
    checkpoint yet, so nothing stays."""
    from safetensors import SafetensorError

    from ecgscan_cli import checkpoint

    def full(tensors, path, metadata=None):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(checkpoint, "_save_tensors", full)
    r = cli("pretrain", synth_file, "-o", tmp_path / "run", *FAST)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert lines[0] == (f"ecgscan: error: No space left on device writing {tmp_path / 'run' / 'best'} at step 2; "
                        "no checkpoint was saved, so the run is not kept")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_later_full_disk_names_the_last_good_checkpoint(synth_file, tmp_path, monkeypatch):
    from ecgscan_cli import checkpoint
    from ecgscan_cli.train import pretrain

    real, calls = checkpoint._save_tensors, {"n": 0}

    def flaky(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] > 3:  # best (1 file) and last (2 files) at step 2... then full
            raise OSError(28, "No space left on device")
        return real(tensors, path, metadata)

    monkeypatch.setattr(checkpoint, "_save_tensors", flaky)
    with pytest.raises(EcgscanFailure, match=r"No space left on device writing .*run/best at step 4; the last good "
                                             r"checkpoint is .*run/last \(step 3\)"):
        pretrain(synth_file, tmp_path / "run", config(), device="cpu")
    assert leftovers(tmp_path / "run") == []


# ------------------------------------------------------------------ no validation: best is the last

def test_without_validation_best_is_the_last_and_says_so(synth_file, tmp_path):
    (tmp_path / "c.yaml").write_text("max_val: 1\n")
    r = CliRunner().invoke(app, ["pretrain", str(synth_file), "-o", str(tmp_path / "run"), *FAST[:-1], "--config",
                                 str(tmp_path / "c.yaml")])
    assert r.exit_code == 0, r.output
    assert "no validation records: best is the last checkpoint" in r.output
    meta = json.loads((tmp_path / "run" / "best" / "ecgscan_checkpoint.json").read_text())
    assert meta["best_rule"] == "no validation records: best is the last checkpoint" and meta["step"] == 2
    assert metrics(tmp_path / "run")[-1]["best_rule"] == meta["best_rule"]


# ------------------------------------------------------------------ issue 14 item 10: help texts

def test_every_pretrain_option_has_help():
    import typer.main

    cmd = typer.main.get_command(app).commands["pretrain"]
    missing = [p.name for p in cmd.params if not getattr(p, "help", None)]
    assert missing == []
