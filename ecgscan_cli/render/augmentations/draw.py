"""Drawing the parameters of a batch, and their flat view (what render sidecars record).

:func:`draw_params` returns an :class:`AugmentDraw`: the typed parameters of every
augmentation (``draw.params["rotation"].degrees``) and the generator wrapper that the
pipeline keeps drawing from (speckles, noise). It is also a read-only mapping of the flat
keys the renderers and sidecars have always used (``draw["rotation_deg"]``, ``draw["ink"]``,
``draw["_grids"]``), in draw order; :func:`params_to_dicts` turns that view into JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ecgscan_cli.render.augmentations.base import STAGES, Params, Rng, Sampling
from ecgscan_cli.render.augmentations.catalogue import AUGMENTATIONS, by_stage
from ecgscan_cli.render.augmentations.config import AugmentConfig, AugSpec
from ecgscan_cli.render.augmentations.photo import BACKGROUND_KINDS

# flat key → (augmentation, field) and the field's metadata, in draw order
_FLAT = {f.metadata["key"]: (name, f.name) for name, cls in AUGMENTATIONS.items() for f in cls.Params.public_fields()}
_META = {f.metadata["key"]: f.metadata for cls in AUGMENTATIONS.values() for f in cls.Params.public_fields()}


class AugmentDraw(Mapping):
    """The drawn parameters of a batch: ``params`` (name → typed :class:`Params`), ``rng``
    (draws made while applying), and a flat mapping view (see the module docstring)."""

    def __init__(self, params: dict[str, Params], rng: Rng, noise_seed: torch.Tensor | None = None):
        self.params = params
        self.rng = rng
        self.noise_seed = noise_seed   # a draw kept only so that seeds keep reproducing the same images

    def subset(self, idx: torch.Tensor) -> "AugmentDraw":
        """The parameters of images ``idx`` only (same generator)."""
        return AugmentDraw({name: q.subset(idx) for name, q in self.params.items()}, self.rng, self.noise_seed)

    def _keys(self):
        for key, (name, _) in _FLAT.items():
            if name in self.params:
                yield key
                if key == "grid":
                    yield "_grids"

    def __getitem__(self, key):
        if key == "_grids":
            return self.params["grid"].styles
        name, field = _FLAT[key]
        return getattr(self.params[name], field)

    def __iter__(self):
        return self._keys()

    def __len__(self):
        return sum(1 for _ in self._keys())

    def __repr__(self):
        return f"AugmentDraw({', '.join(self.params)})"


def draw_params(cfg: AugmentConfig, b: int, size, base_grid: str, generator, device) -> AugmentDraw:
    """All random parameters of a batch of ``b`` images of ``size`` (H, W); identity where off.

    Per stage (see ``base.DRAW_ORDER``): one uniform per augmentation and image says whether
    it is on (< p), then each augmentation samples its parameters, in registry order."""
    rng = Rng(generator, device)
    h, w = size
    params: dict[str, Params] = {}
    noise_seed = None
    for stage in STAGES:
        augs = by_stage(stage)
        specs = {a.name: cfg.specs.get(a.name, AugSpec()) for a in augs}
        if stage != "base" and not any(v.p > 0 and v.strength > 0 for v in specs.values()):
            params.update({a.name: a.identity(b, rng.device) for a in augs})   # draws nothing
            continue
        on = {a.name: (rng.rand(b) < specs[a.name].p) & torch.tensor(specs[a.name].strength > 0, device=rng.device)
              for a in augs}
        for a in augs:
            spec = specs[a.name]
            strength = spec.strength * on[a.name].float()
            params[a.name] = a.sample(Sampling(rng, b, (h, w), on[a.name], strength, spec.p, base_grid))
        if stage == "base":
            noise_seed = (rng.rand(1) * 2**31).long()
    return AugmentDraw(params, rng, noise_seed)


def params_to_dicts(params: Mapping) -> list[dict]:
    """Per-image JSON-friendly parameters (flat keys): only the augmentations that were applied.

    ``params``: an :class:`AugmentDraw` or its flat view as a dict (``render_batch(...,
    return_params=True)``)."""
    b = params["scale"].shape[0]
    out = []
    keys = [k for k in params if not k.startswith("_")]
    cpu = {k: params[k].detach().cpu() for k in keys}
    for i in range(b):
        d = {}
        for k in keys:
            meta = _META.get(k, {})
            if not meta.get("report", True):
                continue
            ident = meta.get("identity", 0.0)
            v = cpu[k][i]
            val = v.tolist() if v.dim() else v.item()
            if isinstance(val, list):
                if any(abs(x - ident) > 1e-9 for x in _flat(val)):
                    d[k] = val
            elif isinstance(val, bool):
                if val:
                    d[k] = True
            elif abs(float(val) - ident) > 1e-9:
                d[k] = val
        if d.get("binarize"):
            d["binarize_threshold"] = cpu["binarize_threshold"][i].item()
        if "grid" in d and "_grids" in params:
            d["grid"] = params["_grids"][int(d["grid"])]
        if "background_kind" in d:
            d["background_kind"] = BACKGROUND_KINDS[int(d["background_kind"])]
        out.append(d)
    return out


def _flat(x):
    for v in x:
        if isinstance(v, list):
            yield from _flat(v)
        else:
            yield v
