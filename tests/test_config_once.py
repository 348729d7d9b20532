"""Issue #13 item 4, config once: one fold syntax, `pretrain --set key=value`, and the
signal form (fs, n_samples) kept in the model config and read from there."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli import canonical  # noqa: E402
from ecgscan_cli.errors import EcgscanError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- one fold syntax

@pytest.mark.parametrize("text, folds", [
    ("1-6,8", [1, 2, 3, 4, 5, 6, 8]), ("7", [7]), (" 1 - 3 , 10 ", [1, 2, 3, 10]), ("none", []), ("NONE", []),
    ("", []), (None, []), (9, [9]), ([1, 2, 5], [1, 2, 5]), (["1-3", 5], [1, 2, 3, 5]), ((4.0, "6"), [4, 6]),
    ("0-2", [0, 1, 2]),
])
def test_parse_folds_reads_the_syntax_and_stored_forms(text, folds):
    from ecgscan_cli.folds import parse_folds

    assert parse_folds(text) == folds


@pytest.mark.parametrize("text, said", [
    ("abc", "use ranges and commas"), ("1-", "use ranges and commas"), ("1,,2", "use ranges and commas"),
    ("3-1", "the range 3-1 runs backwards"), ("-1", "use ranges and commas"), (-2, "folds are numbers >= 0"),
    (True, "use ranges and commas"), ([1.5], "use ranges and commas"), ("1..6", "use ranges and commas"),
])
def test_bad_fold_text_is_one_line_naming_it(text, said):
    from ecgscan_cli.folds import parse_folds

    with pytest.raises(EcgscanError) as e:
        parse_folds(text, "--val-folds")
    msg = str(e.value)
    assert said in msg and "--val-folds" in msg and "\n" not in msg


@pytest.mark.parametrize("folds, text", [
    ([1, 2, 3, 4, 5, 6, 8], "1-6,8"), ([9], "9"), ([], "none"), ([5, 3, 4, 4, 10], "3-5,10"), ([0, 1, 7, 8, 9], "0-1,7-9"),
])
def test_format_folds_and_parse_folds_round_trip(folds, text):
    from ecgscan_cli.folds import format_folds, parse_folds

    assert format_folds(folds) == text
    assert parse_folds(format_folds(folds)) == sorted(set(folds))


def test_every_fold_user_goes_through_the_one_parser():
    """probe's name is the same function; the demo prints what the parser reads back."""
    from ecgscan_cli import folds, probe
    from ecgscan_cli.demo import rerun_commands

    assert probe.parse_folds is folds.parse_folds and not hasattr(probe, "fold_ranges")
    cmd = next(c for c in rerun_commands("s.h5", [1, 2, 4], [6], []) if c.startswith("ecgscan probe"))
    assert cmd.endswith("--train-folds 1-2,4 --val-folds 6 --test-folds none")


def test_benchmark_reads_old_checkpoint_fold_strings():
    from ecgscan_cli.benchmark import BenchmarkConfig, resolve_splits

    ids = [f"r{i}" for i in range(10)]
    folds = np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    old = {"test_folds": "5", "val_folds": "4"}      # a fold string where lists are stored now
    new = {"test_folds": [5], "val_folds": [4]}
    a, test_a = resolve_splits(ids, folds, old, BenchmarkConfig())
    b, test_b = resolve_splits(ids, folds, new, BenchmarkConfig())
    assert test_a == test_b == [5] and (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.test == ["r8", "r9"] and a.val == ["r6", "r7"] and len(a.train) == 6
    with pytest.raises(EcgscanError, match="fold list 'x-2' for the checkpoint's test folds"):
        resolve_splits(ids, folds, {"test_folds": "x-2"}, BenchmarkConfig())


# ---------------------------------------------------------------- --set key=value

def test_set_parses_each_value_to_its_fields_type():
    from ecgscan_cli.training.config import parse_overrides

    got = parse_overrides(["model.lora_r=16", "lambda_mse=2", "cache_frozen=yes", "max_minutes=none",
                           "betas=0.8,0.95", "model.lora_targets=attn,c_fc", "train_folds=1-3,5", "max_steps=1e3",
                           "augment=light", "model.image_pretrained=null", "lr=3e-4", "amp=none", "lr=1e-4"])
    assert got == {"model": {"lora_r": 16, "lora_targets": ("attn", "c_fc"), "image_pretrained": None},
                   "lambda_mse": 2.0, "cache_frozen": True, "max_minutes": None, "betas": [0.8, 0.95],
                   "train_folds": [1, 2, 3, 5], "max_steps": 1000, "augment": "light", "lr": 1e-4, "amp": "none"}
    assert type(got["lambda_mse"]) is float and type(got["max_steps"]) is int
    assert parse_overrides(["amp=none"])["amp"] == "none"   # a str field keeps 'none' as text


@pytest.mark.parametrize("item, said", [
    ("lamda_mse=2", "unknown config key 'lamda_mse'; did you mean lambda_mse"),
    ("lora_r=16", "did you mean model.lora_r"),
    ("model.lora_rank=16", "did you mean model.lora_r"),
    ("zzz=1", "unknown config key 'zzz'; see docs/pretrain.md"),
    ("preset=paper", "unknown config key 'preset'"),
    ("lora_r", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("model.lora_r=2.5", "--set model.lora_r=2.5: model.lora_r must be an integer"),
    ("lr=fast", "--set lr=fast: lr must be a number"),
    ("lr=nan", "lr must be a number"),
    ("cache_frozen=maybe", "cache_frozen must be true or false"),
    ("max_minutes=soon", "max_minutes must be a number"),
    ("betas=0.9,x", "betas must be a list of numbers"),
    ("val_folds=abc", "bad fold list 'abc' for --set val_folds"),
])
def test_set_errors_are_one_line(item, said):
    from ecgscan_cli.training.config import parse_overrides

    with pytest.raises(EcgscanError) as e:
        parse_overrides([item])
    assert said in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_precedence_preset_then_file_then_set_then_flags(tmp_path):
    from ecgscan_cli.training.config import resolve_config

    tiny = resolve_config("tiny")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lambda_mse: 3.0\nlr: 0.002\nmodel:\n  lora_r: 4\n  embed_dim: 32\n")
    cfg = resolve_config("tiny", str(cfg_file), {"lr": 0.01, "model.embed_dim": None},
                         sets=["lambda_mse=2", "lr=0.5", "model.lora_r=12"])
    assert cfg.lambda_mse == 2.0            # --set over the file
    assert cfg.lr == 0.01                   # the flag over --set
    assert cfg.model.lora_r == 12 and cfg.model.embed_dim == 32   # file's key kept where nothing overrides it
    assert cfg.lambda_clip == tiny.lambda_clip and cfg.model.decoder_width == tiny.model.decoder_width
    # --set values go through the same range checks as a config file's
    with pytest.raises(EcgscanError, match="lora_r must be >= 1"):
        resolve_config("tiny", sets=["model.lora_r=0"])


def test_apply_overrides_returns_a_checked_config():
    from ecgscan_cli.training.config import apply_overrides, resolve_config

    cfg = resolve_config("tiny")
    out = apply_overrides(cfg, ["model.lora_r=16", "eval_every=7"])
    assert (out.model.lora_r, out.eval_every) == (16, 7) and (cfg.model.lora_r, cfg.eval_every) != (16, 7)
    with pytest.raises(EcgscanError, match="eval_every must be >= 1"):
        apply_overrides(cfg, ["eval_every=0"])


def test_set_image_model_gets_its_own_pretrained_weights():
    from ecgscan_cli.training.config import parse_overrides, resolve_config

    cfg = resolve_config("cpu", sets=["model.image_model=ecgscan-tiny", "model.image_stem=conv",
                                      "model.image_train=full"])
    assert cfg.model.image_model == "ecgscan-tiny" and cfg.model.image_pretrained is None
    assert "image_pretrained" not in parse_overrides(["model.image_model=ViT-B-16"])["model"]


def _run(*args):
    from ecgscan_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_set_refuses_before_any_work(tmp_path, random_signals_file):
    for item, said in (("lamda_mse=1", "did you mean lambda_mse"), ("model.lora_r=x", "must be an integer"),
                       ("num_workers=-1", "num_workers must be >= 0")):
        r = _run("pretrain", random_signals_file, "-o", tmp_path / "run", "--set", item, "--device", "cpu")
        assert r.exit_code == 2 and said in r.output and "Traceback" not in r.output, r.output
        assert len([line for line in r.output.splitlines() if line.strip()]) == 1
        assert not (tmp_path / "run").exists()


def test_cli_help_names_set_and_its_precedence():
    r = _run("pretrain", "--help")
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "--set" in text and "then --set, then the other flags" in text
    for removed in ("--lambda-mse", "--lora-r", "--weight-decay", "--warmup-frac", "--grad-clip", "--accum-steps",
                    "--alpha", "--beta", "--teacher-steps", "--num-workers", "--eval-every", "--save-every",
                    "--log-every", "--lora-dropout", "--lora-alpha"):
        assert removed not in text


@pytest.mark.slow
def test_resume_with_set_behaves_like_other_overrides(tmp_path):
    from ecgscan_cli.synth import write_synth

    signals = write_synth(tmp_path / "s.h5", 24, seed=5)
    run = tmp_path / "run"
    fast = ["--preset", "tiny", "--text-model", "tiny", "--max-steps", "2", "--batch-size", "8", "--set",
            "teacher_steps=2", "--set", "num_workers=0", "--device", "cpu", "--quiet"]
    r = _run("pretrain", signals, "-o", run, *fast, "--set", "lambda_mse=2.5", "--set", "model.lora_r=4")
    assert r.exit_code == 0, r.output
    stored = json.loads((run / "run.json").read_text())
    assert stored["lambda_mse"] == 2.5 and stored["model"]["lora_r"] == 4 and stored["num_workers"] == 0
    assert stored["model"]["fs"] == canonical.FS and stored["model"]["n_samples"] == canonical.N_SAMPLES
    # a key that changes the trajectory is refused, as --max-steps is
    r = _run("pretrain", signals, "-o", run, "--resume", "--set", "lambda_mse=1", "--quiet", "--device", "cpu")
    assert r.exit_code == 2 and "config differs" in r.output and "lambda_mse: 2.5 → 1.0" in r.output, r.output
    # a resume-free key is accepted (the run is complete: it prints best/ again)
    r = _run("pretrain", signals, "-o", run, "--resume", "--set", "log_every=7", "--quiet", "--device", "cpu")
    assert r.exit_code == 0 and r.stdout.strip() == str(run / "best"), r.output
    # a run.json written before model.fs existed still resumes
    stored["model"].pop("fs")
    (run / "run.json").write_text(json.dumps(stored))
    r = _run("pretrain", signals, "-o", run, "--resume", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------- fs / n_samples in the model config

def test_model_config_holds_fs_and_old_configs_default_it():
    from ecgscan_cli.model import ModelConfig, check_model_config, tiny_config

    cfg = tiny_config()
    assert (cfg.fs, cfg.n_samples) == (canonical.FS, canonical.N_SAMPLES) == (500.0, 5000)
    d = cfg.to_dict()
    assert d["fs"] == 500.0
    del d["fs"]                               # a checkpoint written before fs was stored
    assert ModelConfig.from_dict(d).fs == 500.0
    assert ModelConfig.from_dict({**d, "fs": 250.0, "n_samples": 2500}).fs == 250.0
    with pytest.raises(EcgscanError, match="fs must be > 0"):
        check_model_config(tiny_config(fs=0.0))


def test_with_defaults_makes_an_old_run_json_compare_equal():
    from ecgscan_cli.training.config import config_diff, resolve_config, with_defaults

    cfg = resolve_config("tiny").to_dict()
    old = json.loads(json.dumps(cfg))
    del old["model"]["fs"]
    assert config_diff(old, cfg) == ["model.fs: None → 500.0"]
    assert config_diff(with_defaults(old), cfg) == []


def test_pretraining_file_check_reads_the_models_form(tmp_path):
    from ecgscan_cli.data import check_pretraining_file
    from ecgscan_cli.formats import SignalsFile, write_signals

    x = np.zeros((3, 12, 2500), np.float32)
    path = write_signals(tmp_path / "s250.h5", x, ["a", "b", "c"], ["r", "r", ""], fs=250.0)
    sf = SignalsFile(path)
    assert list(check_pretraining_file(sf, 250.0, 2500)) == [0, 1]
    with pytest.raises(EcgscanError, match="sampled at 250 Hz; pretraining needs 500 Hz"):
        check_pretraining_file(sf)
    other = write_signals(tmp_path / "s500.h5", x, ["a", "b", "c"], ["r"] * 3)
    with pytest.raises(EcgscanError, match=r"records have 2500 samples; pretraining needs 3000 \(6 s at 500 Hz\)"):
        check_pretraining_file(SignalsFile(other), 500.0, 3000)


def test_torchscript_teacher_is_probed_at_the_models_length(tmp_path):
    import torch

    from ecgscan_cli.encoders import load_signal_encoder

    class EveryHundredth(torch.nn.Module):  # output width = samples / 100: shows the probe's length
        def forward(self, x):
            return x.mean(1)[:, ::100]

    path = tmp_path / "t.pt"
    torch.jit.script(EveryHundredth()).save(str(path))
    assert load_signal_encoder(path).module is not None
    assert load_signal_encoder(path).dim == 50                       # canonical 5000 samples
    assert load_signal_encoder(path, n_samples=2500).dim == 25       # a 2500-sample model


def test_no_rate_or_length_literals_left_in_the_files_of_item_4():
    """500 Hz / 5000 samples are written once (canonical.py): no number token 500, 500.0 or
    5000 in the code of these files, but for seeds (``seed * 1000 + 500`` is not a rate)."""
    import io
    import tokenize
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ecgscan_cli"
    files = ["model.py", "checkpoint.py", "encoders.py", "reconstruct.py", "snr.py", "data.py", "benchmark.py",
             "demo.py", "synth.py", "imageio.py", "probe.py", "zeroshot.py", "folds.py", "digitize/pipeline.py",
             *[str(p.relative_to(root)) for d in ("training", "formats") for p in (root / d).glob("*.py")]]
    found = []
    for name in files:
        text = (root / name).read_text()
        lines = text.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NUMBER and tok.string.replace("_", "") in ("500", "500.0", "5000", "5e3", "5000.0"):
                line = lines[tok.start[0] - 1]
                if "seed" not in line:
                    found.append(f"{name}:{tok.start[0]}: {line.strip()}")
    assert found == []
    assert (canonical.FS, canonical.N_SAMPLES, canonical.DURATION_S, canonical.N_LEADS) == (500.0, 5000, 10.0, 12)


def test_a_preset_name_beats_a_file_of_that_name_and_empty_lora_targets_are_refused(tmp_path, monkeypatch):
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.training.config import resolve_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "light").write_text("rotation: {p: 1}\n")
    assert resolve_config("tiny", None, {}).augment == "light"
    assert resolve_config("tiny", None, {"augment": "paper"}).augment == "paper"
    with pytest.raises(EcgscanError, match="lora_targets"):
        resolve_config("tiny", None, {}, sets=["model.lora_targets="])
