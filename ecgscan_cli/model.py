"""The ECG-Scan model: a LoRA-adapted CLIP image encoder, projections and a signal decoder.

::

    image [B,3,H,W] in [0,1] ──CLIP-normalise──▶ ViT (open_clip, frozen + LoRA) ──▶ h_I
                  (or ──(x−0.5)/0.5──▶ EfficientNet-Lite0, ImageNet weights, :mod:`ecgscan_cli.towers`)
    h_I ──Linear+Tanh──▶ z_I  (contrastive space, L2-normalised)
    h_I ──Linear+Tanh──▶ r_I  (reconstruction latent) ──▶ SignalDecoder ──▶ [B,12,n_samples] mV
    report ──frozen text encoder──▶ Linear+Tanh ──▶ z_T
    signal ──frozen signal encoder (teacher)──▶ Linear+Tanh ──▶ z_S   (training only)

LoRA (peft) targets ``attn`` (peft's MultiheadAttention LoRA, which adapts in_proj and
out_proj together), ``c_fc`` and ``c_proj``. Targeting ``out_proj`` alone would create an
adapter that never receives a gradient (nn.MultiheadAttention does not call its forward).

The frozen text encoder lives inside the model (``encode_text`` needs it); the signal
teacher does not (it is only needed for training, see :mod:`ecgscan_cli.train`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_TRAIN_MODES = ("lora", "lora+norms", "full")

# A small ViT registered with open_clip at runtime: for tests and the CPU demo only.
TINY_VISION = "ecgscan-tiny"
_TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 128, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the architecture (saved with every checkpoint)."""

    # image encoder (open_clip vision tower, or a CNN tower: "efficientnet-lite0")
    image_model: str = "ViT-B-16"  # open_clip model name, "ecgscan-tiny", or "efficientnet-lite0"
    # open_clip tag (ViT) or "imagenet" (efficientnet-lite0), a local weights file, or None (random)
    image_pretrained: str | None = "openai"
    image_size: int | None = None  # None: the model's native size (efficientnet-lite0: 224)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # None: the tower's own (ViT: attn, c_fc, c_proj; efficientnet-lite0: conv_pw, conv_pwl, conv_head)
    lora_targets: tuple[str, ...] | None = None
    # what of the ViT trains besides LoRA: "lora" (paper), "lora+norms" (LayerNorms and the ViT's
    # own projection too), "full" (all ViT weights except nn.MultiheadAttention's, which peft
    # re-creates on every forward; for the random tiny ViT). efficientnet-lite0: lora, lora+norms
    # (BatchNorm scale/shift), partial (the last image_train_blocks stages + head, no LoRA), full
    image_train: str = "lora"
    image_train_blocks: int = 2  # image_train partial: how many of the CNN's last stages train
    # the ViT's patch embedding: "patch" (its own, pretrained with it) or "conv" (a trainable ConvStem;
    # for a randomly initialised ViT, which cannot learn from patchify in a CPU budget)
    image_stem: str = "patch"
    # shared space and heads
    embed_dim: int = 256  # contrastive space (paper: unspecified)
    # text encoder (frozen)
    text_model: str = "ncbi/MedCPT-Query-Encoder"
    text_pooling: str = "auto"  # auto: [CLS] for MedCPT, mean otherwise
    text_max_length: int = 128
    # signal teacher output dimension (set from the loaded teacher)
    signal_dim: int = 256
    # signal decoder
    # the signal form the decoder emits and the renderer draws: stored with the checkpoint, so code that
    # holds a model reads them here (older checkpoints have no fs: canonical.FS)
    n_samples: int = canonical.N_SAMPLES
    fs: float = canonical.FS
    patch: int = 8
    decoder_width: int = 256
    decoder_layers: int = 4
    decoder_heads: int = 8
    decoder_dropout: float = 0.0
    mask_ratio: float = 0.25  # share of query tokens replaced by the mask embedding in training

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"] = None if self.lora_targets is None else list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise EcgscanError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("lora_targets") is not None:
            d["lora_targets"] = tuple(d["lora_targets"])
        return cls(**d)


def tiny_config(**overrides) -> ModelConfig:
    cfg = ModelConfig(image_model=TINY_VISION, image_pretrained=None, lora_r=8, lora_alpha=16,
                      image_train="full", image_stem="conv", embed_dim=64, text_model="tiny", text_max_length=64,
                      signal_dim=64, decoder_width=64, decoder_layers=2, decoder_heads=4, mask_ratio=0.25)
    return dataclasses.replace(cfg, **overrides)


def default_image_pretrained(image_model: str) -> str | None:
    """The pretrained weights an image model gets when none are named."""
    from ecgscan_cli.towers import IMAGENET, is_cnn

    if image_model == TINY_VISION:
        return None
    return IMAGENET if is_cnn(image_model) else "openai"


def check_image_config(cfg: ModelConfig) -> None:
    """Refuse image-tower settings that cannot work, before anything is built or written."""
    from ecgscan_cli.towers import check_cnn_config, is_cnn

    if is_cnn(cfg.image_model):
        check_cnn_config(cfg)
        return
    if cfg.image_train not in VIT_TRAIN_MODES:
        raise EcgscanError(f"image_train for a ViT must be {', '.join(VIT_TRAIN_MODES)}, not {cfg.image_train!r}")
    if cfg.image_stem not in ("patch", "conv"):
        raise EcgscanError(f"image_stem must be patch or conv, not {cfg.image_stem!r}")


def check_model_config(cfg: ModelConfig, prefix: str = "model.") -> None:
    """Refuse a model config that cannot build (types, then ranges), in one line: it may come
    from a user's config file, a run's run.json or a checkpoint's JSON."""
    from ecgscan_cli.configfile import check_field_types

    check_field_types(cfg, prefix)
    checks = [
        (cfg.lora_r >= 1, "lora_r must be >= 1"), (cfg.lora_alpha > 0, "lora_alpha must be > 0"),
        (0 <= cfg.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
        (cfg.image_size is None or cfg.image_size >= 32, "image_size must be >= 32 (or null: the model's own)"),
        (cfg.embed_dim >= 1, "embed_dim must be >= 1"), (cfg.signal_dim >= 1, "signal_dim must be >= 1"),
        (cfg.text_max_length >= 1, "text_max_length must be >= 1"),
        (cfg.text_pooling in ("auto", "cls", "mean"), "text_pooling must be auto, cls or mean"),
        (cfg.n_samples >= 1, "n_samples must be >= 1"), (cfg.fs > 0, "fs must be > 0"), (cfg.patch >= 1, "patch must be >= 1"),
        (cfg.patch < 1 or cfg.n_samples % cfg.patch == 0,
         f"patch must divide n_samples ({cfg.n_samples}), not {cfg.patch}"),
        (cfg.decoder_width >= 1 and cfg.decoder_layers >= 1 and cfg.decoder_heads >= 1,
         "decoder_width, decoder_layers and decoder_heads must be >= 1"),
        (cfg.decoder_heads < 1 or cfg.decoder_width % cfg.decoder_heads == 0,
         f"decoder_heads ({cfg.decoder_heads}) must divide decoder_width ({cfg.decoder_width})"),
        (0 <= cfg.decoder_dropout < 1, "decoder_dropout must be in [0, 1)"),
        (0 <= cfg.mask_ratio < 1, "mask_ratio must be in [0, 1)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise EcgscanError(f"bad config: {prefix}{msg}")
    check_image_config(cfg)


def register_tiny() -> None:
    """Register the tiny ViT config with open_clip (idempotent)."""
    from open_clip import factory

    if TINY_VISION not in factory._MODEL_CONFIGS:
        factory._MODEL_CONFIGS[TINY_VISION] = _TINY_OPEN_CLIP_CONFIG


# --------------------------------------------------------------------------- parts


class Projection(nn.Sequential):
    """Linear + Tanh (the paper's projector)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_out), nn.Tanh())


class SignalDecoder(nn.Module):
    """Learnable query tokens (one per ``patch`` samples) + image latent → ``[B, 12, T]``."""

    def __init__(self, width: int, layers: int, heads: int, n_samples: int = canonical.N_SAMPLES, patch: int = 8,
                 dropout: float = 0.0, mask_ratio: float = 0.25):
        super().__init__()
        if n_samples % patch:
            raise EcgscanError(f"decoder: {n_samples} samples are not a multiple of the patch {patch}")
        self.n_tokens, self.patch, self.mask_ratio = n_samples // patch, patch, mask_ratio
        self.queries = nn.Parameter(torch.randn(self.n_tokens, width) * 0.02)
        self.positions = nn.Parameter(torch.randn(self.n_tokens, width) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 12 * patch)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        b = latent.shape[0]
        tokens = self.queries.expand(b, -1, -1)
        if self.training and self.mask_ratio > 0:
            masked = torch.rand(b, self.n_tokens, 1, device=latent.device) < self.mask_ratio
            tokens = torch.where(masked, self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + latent.unsqueeze(1) + self.positions
        out = self.head(self.norm(self.blocks(tokens)))  # [B, N, 12*P]
        return out.view(b, self.n_tokens, 12, self.patch).permute(0, 2, 1, 3).reshape(b, 12, -1)


class ConvStem(nn.Module):
    """A small CNN in place of a ViT's patchify embedding: [B,3,H,W] → [B,width,H/patch,W/patch].

    A randomly initialised ViT cannot learn ECG pages from its 16×16 patch projection in a CPU
    budget (held-out label AUROC stayed at 0.5); log2(patch) stride-2 convolutions with
    BatchNorm learn the same task (AUROC 0.74–0.97 after 400 steps). See docs/pretrain.md.
    """

    def __init__(self, width: int, patch: int):
        super().__init__()
        n_down = patch.bit_length() - 1
        if patch < 2 or 2 ** n_down != patch:
            raise EcgscanError(f"conv stem: the ViT patch size {patch} is not a power of two")
        chans = [3] + [min(16 * 2 ** i, width) for i in range(n_down - 1)] + [width]
        layers = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
        layers.append(nn.Conv2d(width, width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _build_vision(cfg: ModelConfig, load_weights: bool) -> nn.Module:
    import open_clip

    check_image_config(cfg)
    register_tiny()
    if cfg.image_model not in open_clip.list_models():
        raise EcgscanError(f"unknown image model {cfg.image_model!r} (open_clip models: ViT-B-16, ViT-L-14-336, ...; "
                           f"efficientnet-lite0; or {TINY_VISION} for tests)")
    pretrained = cfg.image_pretrained if load_weights else None
    kwargs = {}
    if cfg.image_size:
        kwargs["force_image_size"] = cfg.image_size
    if pretrained:
        is_file = Path(pretrained).expanduser().exists()
        if not is_file and pretrained not in open_clip.list_pretrained_tags_by_model(cfg.image_model):
            raise EcgscanError(f"image weights {pretrained!r}: neither a file nor an open_clip tag for "
                               f"{cfg.image_model} (tags: {', '.join(open_clip.list_pretrained_tags_by_model(cfg.image_model)) or 'none'})")
        if is_file:
            pretrained = str(Path(pretrained).expanduser())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip logs "No pretrained weights loaded" on the root logger
    try:
        clip = open_clip.create_model(cfg.image_model, pretrained=pretrained or None, pretrained_text=False, **kwargs)
    except RuntimeError as e:  # strict load_state_dict: shapes/keys do not match
        raise EcgscanError(f"image weights {pretrained}: do not match {cfg.image_model} ({str(e).splitlines()[0]})") from e
    except Exception as e:  # download impossible offline, corrupt file...
        raise EcgscanError(f"cannot load image weights {pretrained!r} for {cfg.image_model}: {e} "
                           "(offline? pass a local weights file with --image-pretrained PATH)") from e
    finally:
        root.setLevel(level)
    visual = clip.visual
    del clip
    if cfg.image_stem == "conv":
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer):
            raise EcgscanError(f"image_stem conv needs a ViT; {cfg.image_model} is a {type(visual).__name__}")
        visual.conv1 = ConvStem(visual.conv1.out_channels, visual.patch_size[0])
    return visual


def _inject_lora(visual: nn.Module, cfg: ModelConfig) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    targets = cfg.lora_targets or ("attn", "c_fc", "c_proj")
    if "out_proj" in targets:
        raise EcgscanError("LoRA target 'out_proj' never receives gradients (nn.MultiheadAttention does not call it); "
                           "target 'attn' instead")
    visual.requires_grad_(False)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(targets), bias="none")
    visual = inject_adapter_in_model(lcfg, visual)
    for name, p in visual.named_parameters():
        trainable = "lora_" in name
        if cfg.image_train == "lora+norms":
            trainable |= ".ln_" in f".{name}" or name == "proj"
        elif cfg.image_train == "full":
            trainable |= ".attn.base_layer." not in name  # peft MHA swaps these Parameters every forward
        trainable |= cfg.image_stem == "conv" and name.startswith("conv1.")  # random init: always trains
        p.requires_grad_(trainable)
    return visual


class ECGScanModel(nn.Module):
    def __init__(self, cfg: ModelConfig, load_weights: bool = True, text_encoder=None):
        super().__init__()
        from ecgscan_cli.encoders import load_text_encoder
        from ecgscan_cli.towers import build_cnn_tower, is_cnn

        self.cfg = cfg
        if is_cnn(cfg.image_model):
            self.visual = build_cnn_tower(cfg, load_weights)
            mean, std = self.visual.mean, self.visual.std
        else:
            self.visual = _inject_lora(_build_vision(cfg, load_weights), cfg)
            mean, std = CLIP_MEAN, CLIP_STD
        size = self.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.image_size = int(size)
        width = self.visual.output_dim
        self.embed_dim = cfg.embed_dim
        self.text_encoder = text_encoder if text_encoder is not None else load_text_encoder(
            cfg.text_model, pooling=cfg.text_pooling, max_length=cfg.text_max_length)
        self.image_proj = Projection(width, cfg.embed_dim)
        self.latent_proj = Projection(width, cfg.decoder_width)
        self.text_proj = Projection(self.text_encoder.dim, cfg.embed_dim)
        self.signal_proj = Projection(cfg.signal_dim, cfg.embed_dim)
        self.decoder = SignalDecoder(cfg.decoder_width, cfg.decoder_layers, cfg.decoder_heads, cfg.n_samples,
                                     cfg.patch, cfg.decoder_dropout, cfg.mask_ratio)
        # the input normalisation the image tower was pretrained with (CLIP's, or the CNN's own)
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # ---- parts
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """h_I: the image tower's pooled output for images in [0,1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise EcgscanError(f"images must be [B,3,H,W], got {list(images.shape)}")
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise EcgscanError(f"images are {images.shape[-2]}×{images.shape[-1]}, the model expects "
                               f"{self.image_size}×{self.image_size}")
        x = (images.to(self.image_mean.device, torch.float32) - self.image_mean) / self.image_std
        return self.visual(x)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("text_encoder.")}

    # ---- contract
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.project_image_features(self.image_features(images))

    def project_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """z_I from h_I: what ``encode_image`` returns, for features already computed."""
        return F.normalize(self.image_proj(features).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_encoder(list(texts))).float(), dim=-1)

    def encode_signal_features(self, features: torch.Tensor) -> torch.Tensor:
        """z_S from the signal teacher's features (training/objective.py should call this, not repeat it)."""
        return F.normalize(self.signal_proj(features).float(), dim=-1)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.latent_proj(self.image_features(images))).float()

    def forward(self, images: torch.Tensor):
        """Training forward: (z_I normalised [B,D], reconstruction [B,12,T])."""
        h = self.image_features(images)
        z = F.normalize(self.image_proj(h).float(), dim=-1)
        return z, self.decoder(self.latent_proj(h)).float()


def build_model(cfg: ModelConfig, load_weights: bool = True, text_encoder=None) -> ECGScanModel:
    """The ECG-Scan architecture for ``cfg``; ``load_weights`` loads the image pretrained weights."""
    return ECGScanModel(cfg, load_weights=load_weights, text_encoder=text_encoder)


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}
