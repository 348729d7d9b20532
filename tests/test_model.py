"""The model: LoRA adapters all get gradients, contract shapes, checkpoint round trip, bad input."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli.errors import EcgscanError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_text():
    from ecgscan_cli.encoders import load_text_encoder

    return load_text_encoder("tiny")


@pytest.fixture(scope="module")
def tiny_model(tiny_text):
    from ecgscan_cli.model import build_model, tiny_config

    torch.manual_seed(0)
    return build_model(tiny_config(image_train="lora"), text_encoder=tiny_text)


def test_every_lora_adapter_gets_a_nonzero_gradient(tiny_model):
    from ecgscan_cli.model import lora_parameters

    model = tiny_model
    lora = lora_parameters(model)
    # attn (in_proj + out_proj through peft's MultiheadAttention), c_fc, c_proj in each block
    blocks = len(model.visual.transformer.resblocks)
    assert len(lora) == blocks * 4 * 2
    assert not any("out_proj.lora" in n and ".attn.base_layer." not in n for n in lora)
    with torch.no_grad():  # B starts at zero (so A has no gradient yet): as after one optimiser step
        for n, p in lora.items():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    model.zero_grad()
    z, recon = model(torch.rand(3, 3, model.image_size, model.image_size))
    (z.sum() + recon.pow(2).mean()).backward()
    for name, p in lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    others = [n for n, p in model.visual.named_parameters() if p.requires_grad and "lora_" not in n]
    # image_train="lora": only the adapters train in the ViT, and the randomly initialised conv stem
    assert others and all(n.startswith("conv1.layers.") for n in others)
    assert not any(p.requires_grad for p in model.text_encoder.parameters())


def test_conv_stem_replaces_patchify_with_the_same_token_grid(tiny_text):
    from ecgscan_cli.model import ConvStem, build_model, tiny_config

    stem = ConvStem(64, 16)
    assert stem(torch.rand(2, 3, 128, 128)).shape == (2, 64, 8, 8)  # as Conv2d(3, 64, 16, stride=16)
    assert ConvStem(32, 8)(torch.rand(1, 3, 64, 64)).shape == (1, 32, 8, 8)
    with pytest.raises(EcgscanError, match="power of two"):
        ConvStem(64, 14)
    patchify = build_model(tiny_config(image_stem="patch"), text_encoder=tiny_text)
    assert isinstance(patchify.visual.conv1, torch.nn.Conv2d)
    with pytest.raises(EcgscanError, match="image_stem"):
        build_model(tiny_config(image_stem="resnet"), text_encoder=tiny_text)


def test_out_proj_target_is_refused(tiny_text):
    from ecgscan_cli.model import build_model, tiny_config

    with pytest.raises(EcgscanError, match="out_proj"):
        build_model(tiny_config(lora_targets=("out_proj", "c_fc")), text_encoder=tiny_text)


def test_contract_shapes_and_normalisation(tiny_model):
    m = tiny_model.eval()
    assert m.image_size == 128 and m.embed_dim == 64
    img = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        z = m.encode_image(img)
        t = m.encode_text(["sinus rhythm", "atrial fibrillation"])
        r = m.reconstruct(img)
    assert z.shape == (2, 64) and t.shape == (2, 64) and r.shape == (2, 12, 5000)
    assert torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(EcgscanError, match="expects 128"):
        m.encode_image(torch.rand(1, 3, 64, 64))
    m.train()


def test_decoder_masks_queries_only_in_training():
    from ecgscan_cli.model import SignalDecoder

    dec = SignalDecoder(16, 1, 2, n_samples=400, patch=8, mask_ratio=0.5)
    latent = torch.randn(2, 16)
    dec.eval()
    assert torch.equal(dec(latent), dec(latent))
    dec.train()
    assert not torch.equal(dec(latent), dec(latent))
    assert dec(latent).shape == (2, 12, 400)


def test_unknown_image_model_and_bad_weights(tmp_path, tiny_text):
    from ecgscan_cli.model import build_model, tiny_config

    with pytest.raises(EcgscanError, match="unknown image model"):
        build_model(tiny_config(image_model="ViT-Nope-99"), text_encoder=tiny_text)
    with pytest.raises(EcgscanError, match="neither a file nor an open_clip tag"):
        build_model(tiny_config(image_pretrained="not-a-tag"), text_encoder=tiny_text)
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(EcgscanError, match="do not match|cannot load"):
        build_model(tiny_config(image_pretrained=str(bad)), text_encoder=tiny_text)


def test_local_weights_file_is_loaded(tmp_path, tiny_text):
    import open_clip
    from safetensors.torch import save_file

    from ecgscan_cli.model import build_model, register_tiny, tiny_config

    register_tiny()
    torch.manual_seed(3)
    clip = open_clip.create_model("ecgscan-tiny", pretrained=None)
    path = tmp_path / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    model = build_model(tiny_config(image_pretrained=str(path), image_stem="patch"), text_encoder=tiny_text)
    assert torch.equal(model.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(model.visual.positional_embedding, clip.visual.positional_embedding)


def test_checkpoint_round_trip_and_refusals(tmp_path, tiny_model):
    from ecgscan_cli.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint

    m = tiny_model.eval()
    ckpt = save_checkpoint(tmp_path / "ck", m, step=3)
    assert is_checkpoint(ckpt) and not is_checkpoint(tmp_path)
    loaded = load_checkpoint(ckpt, device="cpu")
    assert not loaded.training
    img = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(img), m.encode_image(img), atol=1e-6)
        assert torch.allclose(loaded.encode_text(["a", "b c"]), m.encode_text(["a", "b c"]), atol=1e-6)
        assert torch.allclose(loaded.reconstruct(img), m.reconstruct(img), atol=1e-5)
    # not a checkpoint
    (tmp_path / "empty").mkdir()
    with pytest.raises(EcgscanError, match="not an ecgscan checkpoint"):
        load_checkpoint(tmp_path / "empty")
    # weights that do not match the config
    meta = json.loads((ckpt / "ecgscan_checkpoint.json").read_text())
    meta["model_config"]["embed_dim"] = 32
    (ckpt / "ecgscan_checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(EcgscanError, match="do not match"):
        load_checkpoint(ckpt)
    m.train()


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, tiny_model, monkeypatch):
    from ecgscan_cli import checkpoint

    good = checkpoint.save_checkpoint(tmp_path / "ck", tiny_model, step=1)

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_save_tensors", full)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(tmp_path / "ck", tiny_model, step=2)
    assert checkpoint.read_meta(good)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no partial folder left behind
    assert checkpoint.load_checkpoint(good) is not None


def test_signal_encoders(tmp_path):
    from ecgscan_cli.encoders import BuiltinSignalEncoder, load_signal_encoder, save_signal_encoder

    enc = BuiltinSignalEncoder(dim=16, width=8, depth=3).eval()
    x = torch.randn(2, 12, 5000)
    x[0, 0, :100] = float("nan")
    save_signal_encoder(enc, tmp_path / "teacher")
    loaded = load_signal_encoder(tmp_path / "teacher")
    assert torch.allclose(loaded(x), enc(x), atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())
    scripted = torch.jit.script(enc)
    scripted.save(str(tmp_path / "enc.pt"))
    ts = load_signal_encoder(tmp_path / "enc.pt")
    assert ts.dim == 16 and torch.allclose(ts(x), enc(x), atol=1e-5)
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(EcgscanError, match="TorchScript"):
        load_signal_encoder(tmp_path / "junk.pt")
    with pytest.raises(EcgscanError, match="not found"):
        load_signal_encoder(tmp_path / "missing.pt")


def test_text_encoder_fallback_is_offline_minilm(caplog, monkeypatch):
    import logging

    from ecgscan_cli.encoders import load_text_encoder

    # The CLI's logging setup stops propagation to the root logger, where caplog listens.
    # A --quiet CLI test run earlier in the same process leaves the level at ERROR.
    monkeypatch.setattr(logging.getLogger("ecgscan"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("ecgscan"), "level", logging.INFO)

    enc = load_text_encoder("ncbi/MedCPT-Query-Encoder-not-cached-anywhere")
    assert enc.dim == 384 and "all-MiniLM" in caplog.text
    with pytest.raises(EcgscanError, match="not available offline"):
        load_text_encoder("ncbi/MedCPT-Query-Encoder-not-cached-anywhere", fallback=False)
