"""The EfficientNet-Lite0 image tower: ImageNet weights loaded exactly, what trains, frozen
BatchNorm statistics, checkpoint round trip, ViT-only options refused, the cpu preset runs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli.errors import EcgscanError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64  # the smallest page size that keeps a 2×2 grid after the last stride-2 stage


@pytest.fixture(scope="module")
def tiny_text():
    from ecgscan_cli.encoders import load_text_encoder

    return load_text_encoder("tiny")


@pytest.fixture(scope="module")
def weights_file():
    from ecgscan_cli.towers import imagenet_weights_path

    return imagenet_weights_path()


def lite0(tiny_text, **overrides):
    from ecgscan_cli.model import build_model, tiny_config

    torch.manual_seed(0)
    settings = dict(image_model="efficientnet-lite0", image_pretrained="imagenet", image_stem="patch",
                    image_train="lora", image_size=SIZE)
    return build_model(tiny_config(**{**settings, **overrides}), text_encoder=tiny_text)


def test_imagenet_weights_are_loaded_exactly(tiny_text, weights_file):
    from ecgscan_cli.towers import lukemelas_to_timm

    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    assert len(state) == 296
    for mode in ("lora", "full"):  # with and without peft's wrappers (…conv_pw.base_layer.weight)
        model = lite0(tiny_text, image_train=mode)
        trunk = model.visual.trunk
        assert torch.equal(trunk.conv_stem.weight, state["_conv_stem.weight"])
        loaded = {k.replace(".base_layer", ""): v for k, v in trunk.state_dict().items() if "lora_" not in k}
        names = [len(stage) for stage in trunk.blocks]
        expected = {k: v for k, v in lukemelas_to_timm(state, names).items() if not k.startswith("classifier.")}
        assert set(loaded) == set(expected) and len(expected) == 294  # all but the ImageNet classifier
        for k, v in expected.items():
            assert torch.equal(loaded[k], v), k
    # block 0 has no expansion conv; block 6 is the second block of stage 3 (1, 2, 2, 3, ...)
    assert torch.equal(trunk.blocks[0][0].conv_pw.weight, state["_blocks.0._project_conv.weight"])
    assert torch.equal(trunk.blocks[3][1].conv_pwl.weight, state["_blocks.6._project_conv.weight"])
    assert torch.equal(trunk.bn2.running_var, state["_bn1.running_var"])
    assert model.visual.output_dim == 1280 and model.visual.mean == (0.5, 0.5, 0.5)


def test_random_init_and_bad_weights(tmp_path, tiny_text, weights_file):
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    random = lite0(tiny_text, image_pretrained=None)
    assert not torch.equal(random.visual.trunk.conv_stem.weight, state["_conv_stem.weight"])
    # a local file in timm naming with one tensor of another shape
    from safetensors.torch import save_file

    from ecgscan_cli.towers import lukemelas_to_timm

    renamed = lukemelas_to_timm(state, [1, 2, 2, 3, 3, 4, 1])
    ok = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in renamed.items()}, str(ok))
    assert torch.equal(lite0(tiny_text, image_pretrained=str(ok)).visual.trunk.conv_head.weight,
                       state["_conv_head.weight"])
    renamed["conv_head.weight"] = torch.zeros(1280, 321, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in renamed.items()}, str(bad))
    with pytest.raises(EcgscanError, match="do not match"):
        lite0(tiny_text, image_pretrained=str(bad))
    with pytest.raises(EcgscanError, match="neither 'imagenet' nor a file"):
        lite0(tiny_text, image_pretrained="openai")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(EcgscanError, match="cannot read image weights"):
        lite0(tiny_text, image_pretrained=str(tmp_path / "junk.pth"))


def _step(model):
    """One train-mode forward/backward; returns {name: grad abs sum} of the tower's parameters."""
    model.train()
    model.zero_grad()
    z, recon = model(torch.rand(4, 3, SIZE, SIZE))
    (z.sum() + recon.pow(2).mean()).backward()
    return {n: (None if p.grad is None else float(p.grad.abs().sum())) for n, p in model.visual.named_parameters()}


def _running_means(model):
    return {n: m.running_mean.clone() for n, m in model.visual.trunk.named_modules()
            if isinstance(m, torch.nn.BatchNorm2d)}


def test_lora_trains_only_adapters_and_keeps_imagenet_statistics(tiny_text, weights_file):
    model = lite0(tiny_text, image_train="lora")
    lora = {n: p for n, p in model.visual.named_parameters() if "lora_" in n}
    # conv_pw in all 16 blocks (block 0's is its projection), conv_pwl in 15, conv_head: A and B each
    assert len(lora) == (16 + 15 + 1) * 2
    with torch.no_grad():  # B starts at zero (so A has no gradient yet): as after one optimiser step
        for n, p in lora.items():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    before = _running_means(model)
    grads = _step(model)
    for n in lora:
        assert grads[n] is not None and grads[n] > 0, n
    frozen = [n for n in grads if n not in lora]
    assert frozen and all(grads[n] is None for n in frozen)
    assert all(torch.equal(before[n], v) for n, v in _running_means(model).items())  # eval-mode BatchNorm

    norms = lite0(tiny_text, image_train="lora+norms")
    grads = _step(norms)
    bn = [n for n in grads if n.endswith((".bn1.weight", ".bn2.bias", ".bn3.weight"))]
    assert bn and all(grads[n] > 0 for n in bn)


def test_partial_trains_the_last_stages_and_their_statistics(tiny_text, weights_file):
    model = lite0(tiny_text, image_train="partial", image_train_blocks=2)
    before = _running_means(model)
    grads = _step(model)
    trained = [n for n, g in grads.items() if g is not None]
    assert trained and all(n.startswith(("trunk.blocks.5.", "trunk.blocks.6.", "trunk.conv_head.", "trunk.bn2."))
                           for n in trained)
    assert all(g > 0 for n, g in grads.items() if n in trained and not n.endswith(".bias"))
    assert any(n.startswith("trunk.blocks.5.") for n in trained) and "trunk.conv_head.weight" in trained
    assert all(grads[n] is None for n in grads if n.startswith(("trunk.blocks.4.", "trunk.conv_stem", "trunk.bn1.")))
    after = _running_means(model)
    for n in after:
        changed = not torch.equal(before[n], after[n])
        assert changed == n.startswith(("blocks.5.", "blocks.6.", "bn2")), n
    # frozen BatchNorms stay in eval mode in a model switched to train mode
    assert not model.visual.trunk.blocks[0][0].bn1.training and model.visual.trunk.blocks[6][0].bn1.training
    full = lite0(tiny_text, image_train="full")
    assert all(g is not None and g > 0 for n, g in _step(full).items() if n.endswith("weight"))
    with pytest.raises(EcgscanError, match="image_train_blocks must be 0..7"):
        lite0(tiny_text, image_train="partial", image_train_blocks=8)


def test_sizes_and_vit_only_options(tiny_text, weights_file):
    for size in (64, 96, 160):
        model = lite0(tiny_text, image_size=size).eval()
        with torch.no_grad():
            h = model.image_features(torch.rand(2, 3, size, size))
            assert h.shape == (2, 1280) and model.image_size == size
            assert model.encode_image(torch.rand(2, 3, size, size)).shape == (2, 64)
    assert lite0(tiny_text, image_size=None, image_pretrained=None).image_size == 224
    with pytest.raises(EcgscanError, match="image_stem 'conv' is for ViTs"):
        lite0(tiny_text, image_stem="conv")
    with pytest.raises(EcgscanError, match="LoRA targets attn"):
        lite0(tiny_text, lora_targets=("attn", "c_fc"))
    with pytest.raises(EcgscanError, match="image_train for efficientnet-lite0"):
        lite0(tiny_text, image_train="everything")
    with pytest.raises(EcgscanError, match="too small"):
        lite0(tiny_text, image_size=16)
    from ecgscan_cli.model import build_model, default_image_pretrained, tiny_config

    with pytest.raises(EcgscanError, match="image_train for a ViT"):  # partial is for CNNs
        build_model(tiny_config(image_train="partial"), text_encoder=tiny_text)
    from ecgscan_cli.train import resolve_config

    with pytest.raises(EcgscanError, match="image_stem 'conv' is for ViTs"):  # at once, before any run folder
        resolve_config("tiny", overrides={"model.image_model": "efficientnet-lite0"})
    assert resolve_config("cpu").model.image_model == "efficientnet-lite0"
    assert default_image_pretrained("efficientnet-lite0") == "imagenet"
    assert default_image_pretrained("ViT-B-16") == "openai" and default_image_pretrained("ecgscan-tiny") is None


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path, tiny_text, weights_file):
    from ecgscan_cli.checkpoint import load_checkpoint, save_checkpoint

    for mode in ("partial", "lora"):
        model = lite0(tiny_text, image_train=mode)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        _step(model)  # partial: moves the trained stages' BatchNorm statistics away from ImageNet's
        model.eval()
        ckpt = save_checkpoint(tmp_path / mode, model, step=1)
        loaded = load_checkpoint(ckpt)
        fresh = lite0(tiny_text, image_train=mode).eval()
        img = torch.rand(3, 3, SIZE, SIZE)
        with torch.no_grad():
            z = model.encode_image(img)
            assert torch.equal(loaded.encode_image(img), z)
            assert not torch.allclose(fresh.encode_image(img), z, atol=1e-4)  # the round trip carried something
            assert torch.allclose(loaded.reconstruct(img), model.reconstruct(img), atol=1e-6)


@pytest.mark.slow
def test_pretrain_cli_with_the_cpu_preset(tmp_path, weights_file):
    import json

    from typer.testing import CliRunner

    from ecgscan_cli.checkpoint import load_checkpoint
    from ecgscan_cli.cli.app import app
    from ecgscan_cli.synth import write_synth

    data = write_synth(tmp_path / "synth.h5", 40, seed=2)
    small = tmp_path / "small.yaml"
    small.write_text("model:\n  image_size: 64\n")  # the preset's settings at a page size a test can afford
    res = CliRunner().invoke(app, [str(a) for a in (
        "pretrain", data, "-o", tmp_path / "run", "--preset", "cpu", "--config", small, "--text-model", "tiny",
        "--max-steps", "2", "--batch-size", "4", "--set", "teacher_steps=2", "--set", "log_every=1", "--device", "cpu")])
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["preset"] == "cpu" and run["model"]["image_model"] == "efficientnet-lite0"
    assert run["model"]["image_pretrained"] == "imagenet" and run["model"]["image_size"] == 64
    model = load_checkpoint(tmp_path / "run")
    assert model.image_size == 64 and model.visual.output_dim == 1280


@pytest.mark.slow
def test_paper_preset_takes_cpu_steps_at_batch_2(tiny_text):
    """ViT-L-14-336 + LoRA, random init (no download), two training steps at batch 2."""
    import time

    from ecgscan_cli.model import build_model
    from ecgscan_cli.train import Objective, _optimizer, resolve_config

    cfg = resolve_config("paper", overrides={"batch_size": 2})
    cfg.model.image_pretrained = None  # (an override of None means "not given")
    model = build_model(cfg.model, text_encoder=tiny_text)
    assert model.image_size == 336 and model.visual.output_dim == 768
    objective = Objective(model, cfg).train()
    optimizer = _optimizer(objective, cfg)
    lora = [p for n, p in model.visual.named_parameters() if "lora_B" in n]
    signals = torch.cumsum(torch.randn(2, 12, 5000) * 0.01, -1)
    images = torch.rand(2, 3, 336, 336)
    for _ in range(2):
        t = time.perf_counter()
        total, terms, _, _ = objective(images, signals, torch.randn(2, tiny_text.dim),
                                       torch.randn(2, cfg.model.signal_dim))
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"paper preset, batch 2, CPU: {time.perf_counter() - t:.1f} s/step")
        assert torch.isfinite(total)
    assert any(p.abs().sum() > 0 for p in lora)  # the adapters moved (B starts at zero)
