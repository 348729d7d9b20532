"""Which augmentations run, how often and how strongly: presets, config files, validation.

A config maps each registered augmentation to ``{p, strength}``: ``p`` the probability an
image gets it, ``strength`` 0..max_strength (2 unless the class says otherwise; 1 = the
documented maximum, values drawn uniformly up to it). Presets: none, light, paper, heavy,
photo, phone; or a YAML/JSON file with an optional ``preset:`` to start from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ecgscan_cli.configfile import read_config_file
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.render.augmentations.catalogue import AUGMENTATIONS, AUGMENTS


@dataclass(frozen=True)
class AugSpec:
    p: float = 0.0
    strength: float = 1.0


def _specs(**kw) -> dict:
    return {name: AugSpec(*kw[name]) if name in kw else AugSpec() for name in AUGMENTS}


_PHOTO = dict(rotation=(0.8, 5.0), perspective=(0.8, 2.5), scale=(0.3, 1.0), crop=(0.1, 0.5),
              wrinkles=(0.5, 1.0), creases=(0.5, 1.5), lighting=(0.9, 0.6), tint=(0.7, 1.0),
              ink=(0.6, 1.0), brightness=(0.6, 1.0), contrast=(0.5, 1.0), gamma=(0.5, 1.0),
              grayscale=(0.05, 1.0), noise=(0.7, 0.7), blur=(0.6, 1.0), jpeg=(0.7, 1.0),
              speckles=(0.3, 1.0), grid=(0.6, 1.0), background=(0.85, 1.0), curl=(0.5, 1.0),
              colour_cast=(0.7, 1.0), strokes=(0.5, 1.0))

# (p, strength) per augmentation; anything not named is off
PRESETS: dict[str, dict] = {
    "none": _specs(),
    "light": _specs(rotation=(0.5, 0.3), scale=(0.3, 0.3), brightness=(0.4, 0.4), contrast=(0.3, 0.3),
                    tint=(0.3, 0.4), noise=(0.3, 0.3), blur=(0.2, 0.4), grid=(0.2, 1.0)),
    "paper": _specs(rotation=(0.7, 0.6), perspective=(0.4, 0.5), scale=(0.4, 0.6), crop=(0.2, 0.5),
                    wrinkles=(0.3, 0.7), creases=(0.3, 0.7), lighting=(0.5, 0.7), tint=(0.7, 0.8),
                    ink=(0.4, 1.0), brightness=(0.5, 0.6), contrast=(0.4, 0.6), gamma=(0.3, 0.6),
                    grayscale=(0.1, 1.0), binarize=(0.05, 1.0), noise=(0.5, 0.6), blur=(0.4, 0.6),
                    jpeg=(0.3, 0.6), speckles=(0.4, 0.7), grid=(0.4, 1.0)),
    "heavy": _specs(rotation=(0.9, 1.0), perspective=(0.7, 1.0), scale=(0.6, 1.0), crop=(0.4, 1.0),
                    wrinkles=(0.6, 1.0), creases=(0.6, 1.0), lighting=(0.8, 1.0), tint=(0.8, 1.0),
                    ink=(0.6, 1.0), brightness=(0.7, 1.0), contrast=(0.6, 1.0), gamma=(0.5, 1.0),
                    grayscale=(0.25, 1.0), binarize=(0.1, 1.0), noise=(0.8, 0.7), blur=(0.6, 0.8),
                    jpeg=(0.6, 0.7), speckles=(0.6, 1.0), grid=(0.6, 1.0)),
    # a phone picture of a printout: the page on a desk, tilted, curled, unevenly lit, written on
    "photo": _specs(**_PHOTO),
    # the same with the camera's own faults: shake, and glare off glossy (thermal) paper
    "phone": _specs(**_PHOTO, motion_blur=(0.35, 1.0), glare=(0.3, 1.0)),
}
SPEC_KEYS = ("p", "strength")


@dataclass(frozen=True)
class AugmentConfig:
    name: str = "none"
    specs: dict = field(default_factory=lambda: dict(PRESETS["none"]))

    def __hash__(self):
        return hash((self.name, tuple(sorted((k, v.p, v.strength) for k, v in self.specs.items()))))

    @classmethod
    def preset(cls, name: str) -> "AugmentConfig":
        if name not in PRESETS:
            raise EcgscanError(f"unknown augment preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(name, dict(PRESETS[name]))

    @classmethod
    def from_dict(cls, data: dict, name: str = "custom") -> "AugmentConfig":
        """``{preset?, name: {p, strength} | p}``, checked against the registry."""
        if not isinstance(data, dict):
            raise EcgscanError("augment config must be a mapping of augmentation name → {p, strength}")
        data = dict(data)
        base = cls.preset(str(data.pop("preset", "none")))
        specs = dict(base.specs)
        for key, value in data.items():
            specs[key] = _checked_spec(key, value, specs.get(key, AugSpec()))
        return cls(name, specs)

    @classmethod
    def from_file(cls, path) -> "AugmentConfig":
        path = Path(path)
        data = read_config_file(path, "augment config")
        try:
            return cls.from_dict(data or {}, name=path.stem)
        except EcgscanError as e:
            raise EcgscanError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return {k: {"p": v.p, "strength": v.strength} for k, v in self.specs.items()}

    @property
    def active(self) -> bool:
        return any(v.p > 0 and v.strength > 0 for v in self.specs.values())


def _checked_spec(key, value, old: AugSpec) -> AugSpec:
    if key not in AUGMENTATIONS:
        raise EcgscanError(f"unknown augmentation {key!r} in augment config (known: {', '.join(AUGMENTS)})")
    if isinstance(value, (int, float)):
        value = {"p": value}
    top = AUGMENTATIONS[key].max_strength
    if not isinstance(value, dict):
        raise EcgscanError(f"augment config {key!r}: expected {{p: 0..1, strength: 0..{top:g}}} or a number p")
    unknown = [k for k in value if k not in SPEC_KEYS]
    if unknown:
        raise EcgscanError(f"augment config {key!r}: unknown key {unknown[0]!r} (expected p, strength)")
    try:
        p = float(value.get("p", old.p))
        s = float(value.get("strength", old.strength))
    except (TypeError, ValueError):
        raise EcgscanError(f"augment config {key!r}: p and strength must be numbers") from None
    if not (0.0 <= p <= 1.0) or not (0.0 <= s <= top):
        raise EcgscanError(f"augment config {key!r}: p must be in [0, 1] and strength in [0, {top:g}]")
    return AugSpec(p, s)


def resolve_augment(augment) -> AugmentConfig:
    """A preset name, a YAML/JSON file, a dict or an :class:`AugmentConfig` (None: no augmentation)."""
    if isinstance(augment, AugmentConfig):
        return augment
    if augment is None:
        return AugmentConfig.preset("none")
    if isinstance(augment, dict):
        return AugmentConfig.from_dict(augment)
    if str(augment) not in PRESETS and Path(str(augment)).is_file():  # a YAML/JSON file, as `render` reads
        return AugmentConfig.from_file(augment)
    return AugmentConfig.preset(str(augment))
