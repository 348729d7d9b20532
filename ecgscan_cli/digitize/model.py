"""TraceNet: the digitiser's segmentation network (a small U-Net).

Input: an RGB page image in [0, 1] at the working resolution (long side about
``WORK_LONG_SIDE`` px, any size: padded to a multiple of 16). Output: two logit maps of
the same size, ``trace`` (ECG ink: traces and calibration pulses) and ``grid`` (grid
lines), the channels of :mod:`ecgscan_cli.render.targets`.

Weights are plain safetensors with the config in the file's metadata, so a file is
self-describing and loading never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ecgscan_cli.errors import EcgscanError

WORK_LONG_SIDE = 1024   # the image is resized so its long side is this many pixels


@dataclass(frozen=True)
class TraceNetConfig:
    widths: tuple[int, ...] = (8, 16, 32, 48, 64)   # channels per level; len − 1 downsamplings
    out_channels: int = 2                          # trace, grid

    def check(self) -> "TraceNetConfig":
        if not (2 <= len(self.widths) <= 7) or any(int(w) < 1 for w in self.widths):
            raise EcgscanError(f"TraceNet widths must be 2–7 positive numbers, got {self.widths}")
        return self


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _block(c_in: int, c_out: int, convs: int = 2) -> nn.Sequential:
    layers = _conv(c_in, c_out)
    for _ in range(convs - 1):
        layers += _conv(c_out, c_out)
    return nn.Sequential(*layers)


class TraceNet(nn.Module):
    def __init__(self, config: TraceNetConfig | None = None):
        super().__init__()
        self.config = (config or TraceNetConfig()).check()
        w = list(self.config.widths)
        self.down = nn.ModuleList([_block(3, w[0])] + [_block(w[i - 1], w[i]) for i in range(1, len(w))])
        # one convolution per decoder level: most of the cost is at full resolution (CPU inference budget)
        self.up = nn.ModuleList([_block(w[i] + w[i - 1], w[i - 1], convs=1) for i in range(len(w) - 1, 0, -1)])
        self.head = nn.Conv2d(w[0], self.config.out_channels, 1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.config.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,3,H,W] in [0,1], H and W multiples of :attr:`multiple` → logits [B,C,H,W]."""
        skips = _encode(self.down, x)
        x = skips[-1]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class FoldedTraceNet(nn.Module):
    """A trained :class:`TraceNet` for inference only: the same maps (to ~2e-6) ~15 %
    sooner on a CPU core (0.33 → 0.28 s a 1024×800 page). Each BatchNorm is folded into
    the convolution before it (its running statistics are constants now), and each decoder
    convolution over ``cat(upsampled, skip)`` is split into one over each, summed:
    concatenating the full-resolution features cost a fifth of the pass."""

    def __init__(self, net: TraceNet):
        super().__init__()
        self.config = net.config
        w = list(net.config.widths)
        self.down = nn.ModuleList(_folded(block) for block in net.down)
        self.up_from, self.up_skip = nn.ModuleList(), nn.ModuleList()
        for k, block in enumerate(net.up):
            conv = _folded(block)[0]            # (conv with the BN folded in, ReLU)
            c = w[len(w) - 1 - k]               # channels coming up; the skip's follow
            like = {"device": conv.weight.device, "dtype": conv.weight.dtype}   # where the trained net lives
            from_below = nn.Conv2d(c, conv.out_channels, 3, padding=1, bias=True, **like)
            from_skip = nn.Conv2d(conv.in_channels - c, conv.out_channels, 3, padding=1, bias=False, **like)
            with torch.no_grad():
                from_below.weight.copy_(conv.weight[:, :c])
                from_below.bias.copy_(conv.bias)
                from_skip.weight.copy_(conv.weight[:, c:])
            self.up_from.append(from_below)
            self.up_skip.append(from_skip)
        self.head = net.head
        self.eval()

    multiple = TraceNet.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`TraceNet.forward`."""
        skips = _encode(self.down, x)
        x = skips[-1]
        for from_below, from_skip, skip in zip(self.up_from, self.up_skip, reversed(skips[:-1])):
            x = from_below(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            x = F.relu(x.add_(from_skip(skip)), inplace=True)
        return self.head(x)


def _encode(down: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The encoder's features at each level, the input's first (normalised) and the deepest last."""
    x = (x - 0.5) / 0.25
    skips = []
    for i, block in enumerate(down):
        x = block(x if i == 0 else F.max_pool2d(x, 2))
        skips.append(x)
    return skips


def _folded(block: nn.Sequential) -> nn.Sequential:
    """``block`` (conv, BN, ReLU, ...) with each BN folded into its conv (eval statistics)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    layers, out = list(block), []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm2d) and out and isinstance(out[-1], nn.Conv2d):
            out[-1] = fuse_conv_bn_eval(out[-1].eval(), layer.eval())
        else:
            out.append(layer)
    return nn.Sequential(*out)


def widen_tracenet(net: TraceNet, widths: tuple[int, ...]) -> TraceNet:
    """A wider TraceNet that computes exactly what ``net`` does (train and eval mode alike).

    ``widths`` must have as many levels as ``net``'s and none narrower. The old channels
    keep their weights and read none of the new ones (those weights are zero), so the
    maps are unchanged until training moves the new weights: fine-tuning a larger network
    starts from everything the smaller one learned instead of from random (which a CPU
    could not train back up in a session).
    """
    old = tuple(net.config.widths)
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(old) or any(n < o for n, o in zip(widths, old)):
        raise EcgscanError(f"cannot widen TraceNet {'-'.join(map(str, old))} to {'-'.join(map(str, widths))}: "
                           "give as many levels, none narrower")
    wide = TraceNet(TraceNetConfig(widths=widths, out_channels=net.config.out_channels))
    # (old module, new module, the widths of the parts it reads: [upsampled, skip] in a decoder level)
    pairs = [(net.head, wide.head, [old[0]], [widths[0]])]
    for i, (o, n) in enumerate(zip(net.down, wide.down)):
        pairs += [(o, n, [old[i - 1] if i else 3], [widths[i - 1] if i else 3])]
    for j, (o, n) in enumerate(zip(net.up, wide.up)):
        i = len(old) - 1 - j
        pairs += [(o, n, [old[i], old[i - 1]], [widths[i], widths[i - 1]])]
    with torch.no_grad():
        for o_block, n_block, parts_old, parts_new in pairs:
            o_mods = [m for m in o_block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
            n_mods = [m for m in n_block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
            for o, n in zip(o_mods, n_mods):
                if isinstance(o, nn.BatchNorm2d):
                    k = o.num_features
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(n, name)[:k] = getattr(o, name)
                    continue
                rows = o.out_channels
                n.weight[:rows] = 0.0          # the old channels read none of the new ones
                a_old = a_new = 0
                for w_old, w_new in zip(parts_old, parts_new):
                    n.weight[:rows, a_new:a_new + w_old] = o.weight[:, a_old:a_old + w_old]
                    a_old, a_new = a_old + w_old, a_new + w_new
                if o.bias is not None:
                    n.bias[:rows] = o.bias
                # a block's second convolution reads its first's output: one part, the block's width
                parts_old, parts_new = [o.out_channels], [n.out_channels]
    return wide.train(net.training)


def save_weights(net: nn.Module, path: str | Path, fmt: str, extra: dict | None = None) -> None:
    """``net``'s weights as safetensors; ``net.config`` (a dataclass) and ``extra`` provenance
    as JSON in the metadata, with ``format`` = ``fmt``: a self-describing file."""
    from safetensors.torch import save_file

    meta = {"format": fmt, "config": json.dumps(asdict(net.config))}
    if extra:
        meta["provenance"] = json.dumps(extra)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def load_weights(path: str | Path, fmt: str, what: str, config_cls, net_cls, device="cpu") -> nn.Module:
    """The network ``net_cls(config_cls(...))`` saved by :func:`save_weights` with format
    ``fmt``, in eval mode; refusals are one line naming ``what`` (e.g. "digitiser")."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise EcgscanError(f"{what} weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device=str(device))
    except Exception as e:  # a truncated or foreign file
        raise EcgscanError(f"{path}: not a safetensors weights file ({type(e).__name__})") from None
    if meta.get("format") != fmt:
        raise EcgscanError(f"{path}: not ecgscan {what} weights (format {meta.get('format')!r})")
    raw = json.loads(meta["config"])
    known = {f.name for f in fields(config_cls)}
    net = net_cls(config_cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known}))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise EcgscanError(f"{path}: weights do not match their config ({str(e).splitlines()[0]})") from None
    return net.to(device).eval()


def save_tracenet(net: TraceNet, path: str | Path, extra: dict | None = None) -> None:
    """Weights as safetensors; config (and ``extra`` provenance) as JSON in the metadata."""
    save_weights(net, path, "ecgscan-tracenet-1", extra)


def tracenet_provenance(path: str | Path) -> dict | None:
    """The provenance saved with weights (``save_weights(..., extra)``: TraceNet's or the
    restorer's), or None."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("provenance")
    return json.loads(raw) if raw else None


def load_tracenet(path: str | Path, device="cpu") -> TraceNet:
    return load_weights(path, "ecgscan-tracenet-1", "digitiser", TraceNetConfig, TraceNet, device)
