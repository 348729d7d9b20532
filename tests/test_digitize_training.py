"""The digitiser's network, its training pairs and `ecgscan train-digitizer`."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest

from ecgscan_cli.errors import EcgscanError


@pytest.fixture
def signals_with_folds(random_signals_file):
    return random_signals_file          # folds 1..6, one record each


@contextmanager
def interrupted_after(steps: int):
    """Training raises KeyboardInterrupt (as a held Ctrl-C does) once ``steps`` steps have finished."""
    from ecgscan_cli.digitize import trainer

    real, calls = trainer._Run.train_step, {"n": 0}

    def stop(self, train):
        if calls["n"] == steps:
            raise KeyboardInterrupt
        calls["n"] += 1
        real(self, train)

    trainer._Run.train_step = stop
    try:
        yield
    finally:
        trainer._Run.train_step = real


def tiny_config(path, **kw):
    from ecgscan_cli.digitize.trainer import DigitizerTrainConfig

    base = dict(signals=str(path), train_folds=(1, 2, 3, 4), val_folds=(5,), steps=4, batch_size=2,
                crops_per_page=2, crop=64, widths=(4, 8), eval_every=2, log_every=1, val_batches=1,
                dpi=(40.0, 60.0))
    base.update(kw)
    return DigitizerTrainConfig(**base)


def _ink_gap(images, targets) -> float:
    """Mean luminance of paper (no target) minus that of pixels the trace target marks."""
    lum = images.mean(1)
    return float(lum[targets.sum(1) < 0.01].mean() - lum[targets[:, 0] > 0.6].mean())


@pytest.mark.parametrize("augment_at", ["page", "crop"])
@pytest.mark.parametrize("preset", ["heavy", "paper"])
def test_targets_stay_on_the_ink_after_photo_like_warps(augment_at, preset):
    """The trace target, warped by the same draw as the image, lands on dark pixels: the
    contrast is highest where the target is, not a few pixels above or below it."""
    import torch

    from ecgscan_cli.digitize.data import PairConfig, training_batch

    rng = np.random.default_rng(3)
    sigs = [np.cumsum(rng.normal(0, 0.02, (12, 5000)), 1) * 0.3 for _ in range(4)]
    cfg = PairConfig(crop=128, mix={preset: 1.0}, dpi=(80.0, 80.0), augment_at=augment_at)
    images, targets, drawn = training_batch(sigs, 500.0, cfg, rng, torch.Generator().manual_seed(0))
    assert drawn == preset and images.shape == (4, 3, 128, 128) and targets.shape == (4, 2, 128, 128)
    assert (targets[:, 0] > 0.6).sum() > 50
    aligned = _ink_gap(images, targets)
    shifted = max(_ink_gap(images, torch.roll(targets, d, 2)) for d in (-4, -2, 2, 4))
    # measured: page heavy 0.279 vs 0.203, paper 0.273 vs 0.098; crop heavy 0.298 vs 0.040
    assert aligned > 0.2 and aligned > shifted + 0.05


def test_page_augmentation_blurs_at_the_pages_scale(tmp_path):
    """Augmenting the whole page and then cropping blurs a crop as much (in mm) as the page
    reconstruct reads; augmenting the crop alone blurs it about a third as much."""
    import torch

    from ecgscan_cli.digitize.data import PairConfig, training_batch

    blur = tmp_path / "blur.json"
    blur.write_text(json.dumps({"blur": {"p": 1.0, "strength": 1.0}}))

    def sharpness(augment_at):
        rng = np.random.default_rng(5)
        sigs = [np.cumsum(rng.normal(0, 0.02, (12, 5000)), 1) * 0.3 for _ in range(3)]
        cfg = PairConfig(crop=128, mix={str(blur): 1.0}, dpi=(90.0, 90.0), augment_at=augment_at)
        images, _, _ = training_batch(sigs, 500.0, cfg, rng, torch.Generator().manual_seed(0), crops_per_page=2)
        assert images.shape == (6, 3, 128, 128)
        lum = images.mean(1)
        return float((lum[:, 1:] - lum[:, :-1]).abs().mean())

    page, crop = sharpness("page"), sharpness("crop")
    assert page < 0.6 * crop, (page, crop)


def test_pair_config_refuses_an_unknown_augment_at():
    from ecgscan_cli.digitize.data import PairConfig

    with pytest.raises(EcgscanError, match="augment-at"):
        PairConfig(augment_at="sheet")


def test_tracenet_round_trip_and_refusals(tmp_path):
    import torch

    from ecgscan_cli.digitize.model import TraceNet, TraceNetConfig, load_tracenet, save_tracenet

    net = TraceNet(TraceNetConfig(widths=(4, 8, 16))).eval()
    x = torch.rand(1, 3, 48, 80)
    path = tmp_path / "w.safetensors"
    save_tracenet(net, path, {"step": 3})
    again = load_tracenet(path)
    with torch.inference_mode():
        assert torch.equal(net(x), again(x))
        assert net(x).shape == (1, 2, 48, 80)
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    with pytest.raises(EcgscanError, match="not a safetensors"):
        load_tracenet(tmp_path / "junk.safetensors")
    with pytest.raises(EcgscanError, match="not found"):
        load_tracenet(tmp_path / "missing.safetensors")


def test_training_writes_weights_metrics_and_state(signals_with_folds, tmp_path, one_thread):
    from ecgscan_cli.digitize.image import load_digitizer
    from ecgscan_cli.digitize.trainer import train_digitizer

    summary = train_digitizer(tiny_config(signals_with_folds, steps=4), tmp_path / "a")
    assert summary["steps"] == 4 and summary["stopped_by"] == "steps"
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val_trace_f1" in r] == [2, 4]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in lines if "loss" in r)
    net = load_digitizer(tmp_path / "a")           # a run folder works as --weights
    assert net.config.widths == (4, 8)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["config"]["train_folds"] == [1, 2, 3, 4] and run["val_records"] == 1


def test_resume_continues_bit_for_bit(signals_with_folds, tmp_path, one_thread):
    from safetensors.torch import load_file

    from ecgscan_cli.digitize.trainer import train_digitizer

    train_digitizer(tiny_config(signals_with_folds, steps=4), tmp_path / "a")
    cfg = tiny_config(signals_with_folds, steps=4)
    # run b: interrupted (Ctrl-C held until step 2 finished), then resumed to step 4
    with interrupted_after(2), pytest.raises(KeyboardInterrupt):
        train_digitizer(cfg, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "last" / "state.json").read_text())["step"] == 2
    train_digitizer(cfg, tmp_path / "b", resume=True)
    wa = load_file(tmp_path / "a" / "last" / "tracenet.safetensors")
    wb = load_file(tmp_path / "b" / "last" / "tracenet.safetensors")
    assert set(wa) == set(wb)
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_config_and_folder_refusals(signals_with_folds, tmp_path):
    from ecgscan_cli.digitize.trainer import train_digitizer

    with pytest.raises(EcgscanError, match="overlap"):
        train_digitizer(tiny_config(signals_with_folds, val_folds=(1,)), tmp_path / "x")
    with pytest.raises(EcgscanError, match="no records in train folds"):
        train_digitizer(tiny_config(signals_with_folds, train_folds=(9,)), tmp_path / "x")
    with pytest.raises(EcgscanError, match="nothing to resume"):
        train_digitizer(tiny_config(signals_with_folds), tmp_path / "never", resume=True)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("mine")
    with pytest.raises(EcgscanError):
        train_digitizer(tiny_config(signals_with_folds), precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()


def test_cli_bad_mix_or_dpi_is_one_line(signals_with_folds, tmp_path):
    for flag, value, words in (("--mix", "paper=-1", "--mix"), ("--mix", "paper=1,glossy=1", "glossy"),
                               ("--dpi", "abc", "--dpi"), ("--dpi", "5-900", "dpi range")):
        r = subprocess.run([sys.executable, "-m", "ecgscan_cli", "train-digitizer", str(signals_with_folds),
                            "-o", str(tmp_path / "r"), flag, value], capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().count("\n") == 0 and words in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "r").exists()


def test_resume_keeps_the_runs_mix_unless_given(signals_with_folds, tmp_path, monkeypatch):
    """`--resume` without --mix continues with the run's own augmentation mix."""
    from ecgscan_cli.digitize import trainer

    seen = []
    monkeypatch.setattr(trainer, "train_digitizer", lambda cfg, out, **kw: seen.append(dict(cfg.mix)) or {})
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_config(signals_with_folds, mix={"photo": 1.0}, augment_at="crop")
    from dataclasses import asdict

    (run / "run.json").write_text(json.dumps({"config": asdict(cfg)}))
    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app

    for extra, want in (([], {"photo": 1.0}), (["--mix", "paper"], {"paper": 1.0})):
        r = CliRunner().invoke(app, ["train-digitizer", str(signals_with_folds), "-o", str(run), "--resume", *extra])
        assert r.exit_code == 0, r.output
        assert seen[-1] == want


def test_resume_of_a_run_from_before_augment_at_keeps_augmenting_crops(signals_with_folds, tmp_path, monkeypatch):
    from dataclasses import asdict

    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app
    from ecgscan_cli.digitize import trainer

    seen = []
    monkeypatch.setattr(trainer, "train_digitizer", lambda cfg, out, **kw: seen.append(cfg.augment_at) or {})
    run = tmp_path / "run"
    run.mkdir()
    old = asdict(tiny_config(signals_with_folds))
    del old["augment_at"], old["init"]
    (run / "run.json").write_text(json.dumps({"config": old}))
    r = CliRunner().invoke(app, ["train-digitizer", str(signals_with_folds), "-o", str(run), "--resume"])
    assert r.exit_code == 0, r.output
    assert seen == ["crop"]


def test_init_fine_tunes_given_weights_and_records_where_they_came_from(signals_with_folds, tmp_path, one_thread):
    import torch

    from ecgscan_cli.digitize.model import load_tracenet, tracenet_provenance
    from ecgscan_cli.digitize.trainer import train_digitizer

    train_digitizer(tiny_config(signals_with_folds, steps=4), tmp_path / "a")
    first = tmp_path / "a" / "last" / "tracenet.safetensors"
    # widths come from the weights (none given); a tiny learning rate keeps them close
    cfg = tiny_config(signals_with_folds, steps=2, lr=1e-7, widths=None, init=str(tmp_path / "a" / "last"))
    train_digitizer(cfg, tmp_path / "b")
    a, b = load_tracenet(first), load_tracenet(tmp_path / "b" / "last" / "tracenet.safetensors")
    assert b.config.widths == (4, 8)
    for (k, wa), wb in zip(a.named_parameters(), b.parameters()):   # not BatchNorm's running stats
        assert torch.allclose(wa, wb, atol=1e-4), k
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["config"]["widths"] == [4, 8] and run["init"]["path"] == str(first)
    assert run["init"]["provenance"]["step"] == 4
    prov = tracenet_provenance(tmp_path / "b" / "last" / "tracenet.safetensors")
    assert prov["init"]["provenance"]["step"] == 4 and prov["augment_at"] == "page"


def _trained_like_batchnorm(net) -> None:
    """BatchNorm statistics and affine weights that are not the defaults, as trained weights have."""
    import torch

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def test_widened_tracenet_computes_the_same_maps_and_then_learns_with_its_new_channels():
    import torch

    from ecgscan_cli.digitize.model import TraceNet, TraceNetConfig, widen_tracenet

    torch.manual_seed(0)
    net = TraceNet(TraceNetConfig(widths=(4, 6, 8)))
    _trained_like_batchnorm(net)
    x = torch.rand(3, 3, 32, 48)
    for widths in [(4, 6, 8), (6, 6, 8), (4, 10, 16), (5, 9, 13)]:
        wide = widen_tracenet(net.eval(), widths)
        assert wide.config.widths == widths and not wide.training
        with torch.no_grad():
            assert torch.allclose(wide(x), net(x), atol=1e-5), widths
            net.train(), wide.train()
            assert torch.allclose(wide(x), net(x), atol=1e-4), widths   # batch statistics too
            net.eval()
    # the new channels are not dead: the old outputs' gradient reaches their weights
    wide = widen_tracenet(net, (6, 10, 16)).train()
    wide(x)[:, 0].mean().backward()
    read_new = wide.up[0][0].weight.grad[:6, 8:16]      # the old decoder channels reading new deep ones
    assert read_new.abs().sum() > 0
    for widths in [(4, 6), (4, 6, 8, 8), (4, 5, 8)]:
        with pytest.raises(EcgscanError, match="cannot widen"):
            widen_tracenet(net, widths)


def test_folded_tracenet_computes_the_same_maps_as_the_trained_one():
    import torch

    from ecgscan_cli.digitize.image import load_digitizer, shipped_weights
    from ecgscan_cli.digitize.model import FoldedTraceNet, TraceNet, TraceNetConfig, load_tracenet

    torch.manual_seed(1)
    for widths in [(4, 6), (4, 6, 8), (3, 5, 7, 9, 11)]:
        net = TraceNet(TraceNetConfig(widths=widths))
        _trained_like_batchnorm(net)
        net.eval()
        folded = FoldedTraceNet(net)
        assert folded.multiple == net.multiple and folded.config == net.config
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        x = torch.rand(2, 3, 2 * net.multiple, 3 * net.multiple)
        with torch.no_grad():
            assert torch.allclose(folded(x), net(x), atol=1e-5), widths
    # what reconstruct loads: the shipped weights, folded and channels-last, on a page-like input
    shipped = load_tracenet(shipped_weights())
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(load_digitizer()(x)), torch.sigmoid(shipped(x)), atol=1e-5)


def test_init_with_wider_widths_grows_the_weights(signals_with_folds, tmp_path, one_thread):
    from ecgscan_cli.digitize.model import load_tracenet
    from ecgscan_cli.digitize.trainer import train_digitizer

    train_digitizer(tiny_config(signals_with_folds, steps=2), tmp_path / "a")
    cfg = tiny_config(signals_with_folds, steps=2, widths=(6, 12), init=str(tmp_path / "a" / "last"))
    train_digitizer(cfg, tmp_path / "b")
    assert load_tracenet(tmp_path / "b" / "last" / "tracenet.safetensors").config.widths == (6, 12)
    assert json.loads((tmp_path / "b" / "run.json").read_text())["config"]["widths"] == [6, 12]
    r = subprocess.run([sys.executable, "-m", "ecgscan_cli", "train-digitizer", str(signals_with_folds),
                        "-o", str(tmp_path / "c"), "--init", str(tmp_path / "a" / "last"), "--widths", "2,8"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "cannot widen" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists()


def test_init_shipped_and_refusals(signals_with_folds, tmp_path):
    from ecgscan_cli.digitize.image import shipped_weights
    from ecgscan_cli.digitize.trainer import initial_weights

    assert initial_weights("shipped") == shipped_weights()
    r = subprocess.run([sys.executable, "-m", "ecgscan_cli", "train-digitizer", str(signals_with_folds),
                        "-o", str(tmp_path / "r"), "--init", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert r.returncode != 0 and "--init" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "r").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    r = subprocess.run([sys.executable, "-m", "ecgscan_cli", "train-digitizer", str(signals_with_folds),
                        "-o", str(tmp_path / "r"), "--init", str(tmp_path / "junk.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "not a safetensors" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_cli_passes_dpi_augment_at_and_init(signals_with_folds, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app
    from ecgscan_cli.digitize import trainer

    seen = []
    monkeypatch.setattr(trainer, "train_digitizer", lambda cfg, out, **kw: seen.append(cfg) or {})
    r = CliRunner().invoke(app, ["train-digitizer", str(signals_with_folds), "-o", str(tmp_path / "r"),
                                 "--dpi", "60-90", "--augment-at", "crop", "--init", "shipped"])
    assert r.exit_code == 0, r.output
    assert seen[0].dpi == (60.0, 90.0) and seen[0].augment_at == "crop" and seen[0].init == "shipped"
    r = CliRunner().invoke(app, ["train-digitizer", str(signals_with_folds), "-o", str(tmp_path / "r"), "--dpi", "80"])
    assert r.exit_code == 0 and seen[1].dpi == (80.0, 80.0) and seen[1].augment_at == "page" and seen[1].init is None


def test_weights_saved_on_interrupt_or_at_the_end_carry_provenance(signals_with_folds, tmp_path, one_thread):
    """`last/` written outside a validation (Ctrl-C, or a last step that is not a validation
    step) keeps its provenance too: `--init` from it must be able to chain back."""
    from ecgscan_cli.digitize import trainer
    from ecgscan_cli.digitize.model import tracenet_provenance

    trainer.train_digitizer(tiny_config(signals_with_folds, steps=3, eval_every=2), tmp_path / "a")
    assert tracenet_provenance(tmp_path / "a" / "last" / "tracenet.safetensors")["step"] == 3
    with interrupted_after(1), pytest.raises(KeyboardInterrupt):
        trainer.train_digitizer(tiny_config(signals_with_folds, steps=4, eval_every=100), tmp_path / "b")
    prov = tracenet_provenance(tmp_path / "b" / "last" / "tracenet.safetensors")
    assert prov["step"] == 1 and prov["trained_by"] == "ecgscan train-digitizer"
