"""The training config: preset ← config file ← ``--set key=value`` ← flags, checked in full before any work.

Presets ``tiny`` (CPU, seconds per hundred steps), ``cpu`` and ``paper`` are YAML files in
``ecgscan_cli/presets``. The resolved config (split folds included) is the run's
``run.json``; ``--resume`` compares against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ecgscan_cli.configfile import check_field_types, read_config_file
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.model import ModelConfig, check_model_config

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
RUN_CONFIG = "run.json"
METRICS = "metrics.jsonl"
TEACHER_DIR = "teacher"
TEXT_CACHE_DIR = "text_encoder"
LOSS_TERMS = ("clip", "gram", "mse", "lead")
FOLD_KEYS = ("train_folds", "val_folds", "test_folds")
# keys that may differ on --resume (they do not change the trajectory)
RESUME_FREE = {"max_minutes", "num_workers", "log_every", "eval_every", "save_every", "device", "signal_encoder"}
MAX_SEED = 2 ** 32 - 1  # what every random generator used (numpy, torch) accepts
AUGMENTS = ("none", "light", "paper", "heavy", "photo", "phone")   # or an augmentation config file, as for render;
# the registry's PRESETS names (it imports torch; tests/test_augment_registry.py keeps them equal)


@dataclass
class TrainConfig:
    preset: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    # data
    # auto: by folds when the file has folds (test = highest fold, never read; validation =
    # the next one; train = the rest), else random (seeded 9:1). Fold lists left unset are
    # filled that way; run.json holds the resolved ones.
    split: str = "auto"  # auto | folds | random
    val_fraction: float = 0.1
    train_folds: list[int] | None = None
    val_folds: list[int] | None = None
    test_folds: list[int] | None = None
    max_val: int = 2000  # validation records used (first N of the split)
    augment: str = "paper"  # render augmentation preset (none | light | paper | heavy | photo | phone) or config file
    num_workers: int = 4
    cache_frozen: bool = False  # keep frozen text/signal features per record in memory
    # optimisation
    batch_size: int = 80
    accum_steps: int = 1
    lr: float = 5e-4
    min_lr_frac: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    max_steps: int = 50000
    max_minutes: float | None = None  # the whole command: teacher stage included
    amp: str = "auto"  # auto: bf16 autocast on CUDA; none
    # losses: total = λ1·CLIP + λ2·GRAM + λ3·MSE + λ4·(α·Einthoven + β·Goldberger)
    lambda_clip: float = 1.0
    lambda_gram: float = 1.0
    lambda_mse: float = 1.0
    lambda_lead: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0
    label_smoothing: float = 0.1
    init_tau: float = 0.07
    # frozen signal teacher: a TorchScript file / built-in encoder folder (stored absolute),
    # or trained here
    signal_encoder: str | None = None
    teacher_steps: int = 2000
    teacher_lr: float = 1e-3
    teacher_batch: int = 64
    teacher_width: int = 64
    # bookkeeping
    seed: int = 0
    log_every: int = 50
    eval_every: int = 1000
    save_every: int = 1000

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise EcgscanError(f"unknown config keys: {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(sorted(known))})")
        model = d.pop("model", {}) or {}
        if not isinstance(model, dict):
            raise EcgscanError(f"bad config: model must be a mapping of model keys, not {model!r}")
        return cls(model=ModelConfig.from_dict(model), **d)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k == "model":
            for side in (base.get("model"), v):
                if side is not None and not isinstance(side, dict):
                    raise EcgscanError(f"bad config: model must be a mapping of model keys, not {side!r}")
            out["model"] = {**(base.get("model") or {}), **(v or {})}
        else:
            out[k] = v
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """A run folder's ``run.json`` as a dict (one-line errors: missing, not JSON, not an object)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise EcgscanError(f"--resume: {run_dir} is not an ecgscan run folder (no {RUN_CONFIG})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise EcgscanError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise EcgscanError(f"{path}: expected a JSON object of config keys")
    return data


def _fold_list(key: str, value) -> list[int]:
    from ecgscan_cli.folds import SYNTAX, parse_folds

    try:  # a fold string, or a stored list (run.json, config files; older ones may hold fold strings)
        return parse_folds(value, f"--{key.replace('_', '-')} ({key})")   # a flag, --set or a config file
    except EcgscanError:
        if isinstance(value, str):
            raise
        raise EcgscanError(f"bad config: {key} must be a fold list ({SYNTAX}), not {value!r}") from None


# ---------------------------------------------------------------- --set key=value

_NOT_SETTABLE = {"preset", "model"}  # the preset is chosen with --preset; model is a group, not a value
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def settable_keys() -> dict[str, object]:
    """Every key ``--set`` accepts (``lr``, ``model.lora_r``, ...) → its annotated type."""
    import typing

    keys: dict[str, object] = {}
    for prefix, cls in (("", TrainConfig), ("model.", ModelConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in _NOT_SETTABLE:
                keys[prefix + f.name] = hints[f.name]
    return keys


def parse_overrides(items) -> dict:
    """``["model.lora_r=16", "lambda_mse=2"]`` → ``{"model": {"lora_r": 16}, "lambda_mse": 2.0}``.

    Keys are the config's own (dotted for the model's); each value is parsed to its field's
    type: int, float, bool (true/false, yes/no, on/off, 1/0), str, ``none``/``null`` for an
    optional field, lists and tuples as comma-separated items, fold lists as ``1-6,8``.
    Later items win. An unknown key or a value of the wrong type is one line naming the key
    (with close matches, or the type expected).
    """
    import difflib

    keys = settable_keys()
    out: dict = {}
    for item in items or ():
        key, eq, text = str(item).partition("=")
        key = key.strip()
        if not eq or not key:
            raise EcgscanError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.lora_r=16")
        if key not in keys:
            near = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
            if "model." + key in keys and "model." + key not in near:
                near.insert(0, "model." + key)
            hint = f"; did you mean {' or '.join(near)}?" if near else "; see docs/pretrain.md for the keys"
            raise EcgscanError(f"--set: unknown config key {key!r}{hint}")
        value = _parse_value(key, keys[key], text.strip())
        if key.startswith("model."):
            out.setdefault("model", {})[key[6:]] = value
        else:
            out[key] = value
    return out


def _parse_value(key: str, kind, text: str):
    """``text`` as a value of ``kind`` (a field's type hint), or one line naming the key."""
    import types
    import typing

    from ecgscan_cli.configfile import type_name

    if key in FOLD_KEYS:
        from ecgscan_cli.folds import parse_folds

        return parse_folds(text, f"--set {key}")
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        kind = inner[0] if len(inner) == 1 else kind
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    try:
        if origin in (list, tuple):
            parts = [p.strip() for p in text.strip("[]()").split(",") if p.strip()]
            items = [_scalar(args[0] if args else str, p) for p in parts]
            return items if origin is list else tuple(items)
        return _scalar(kind, text)
    except ValueError:
        raise EcgscanError(f"--set {key}={text}: {key} must be {type_name(kind)}") from None


def _scalar(kind, text: str):
    if kind is bool:
        low = text.lower()
        if low not in _TRUE + _FALSE:
            raise ValueError(text)
        return low in _TRUE
    if kind is int:
        number = float(text)  # 1e3 is an integer too
        if not number.is_integer() or abs(number) >= 2 ** 63:
            raise ValueError(text)
        return int(text) if text.lstrip("+-").isdigit() else int(number)
    if kind is float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    return text


def apply_overrides(cfg: TrainConfig, items) -> TrainConfig:
    """``cfg`` with ``--set`` items applied (see :func:`parse_overrides`), checked in full."""
    out = TrainConfig.from_dict(_merge(cfg.to_dict(), parse_overrides(items)))
    check_config(out)
    return out


def resolve_config(preset: str | None = "tiny", config_file: str | None = None, overrides: dict | None = None,
                   base: dict | None = None, sets=()) -> TrainConfig:
    """preset (or ``base``, the run's run.json on --resume) ← config file ← ``sets`` (``--set
    key=value`` items, :func:`parse_overrides`) ← ``overrides`` (the explicit flags; None
    values skipped). ``model.*`` keys may be given flat as ``model.key``."""
    if base is not None:
        data = dict(base)
    else:
        preset = preset or "tiny"
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise EcgscanError(f"unknown preset {preset!r} (presets: {', '.join(preset_names())})")
        data = read_config_file(path, "config file")
        data["preset"] = preset
    if config_file:
        data = _merge(data, read_config_file(config_file, "config file"))
    set_values = parse_overrides(sets)
    flat: dict = {}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k.startswith("model."):
            flat.setdefault("model", {})[k[6:]] = v
        else:
            flat[k] = v
    named = set_values.get("model") or {}
    if "image_model" in named and "image_pretrained" not in named:  # a tower set by --set gets its own weights
        from ecgscan_cli.model import default_image_pretrained

        named["image_pretrained"] = default_image_pretrained(named["image_model"])
    data = _merge(_merge(data, set_values), flat)
    if isinstance(data.get("augment"), str) and data["augment"] not in AUGMENTS and Path(data["augment"]).is_file():
        # a file (a preset name wins over a file of that name in the working folder)
        data["augment"] = str(Path(data["augment"]).resolve())  # --resume finds it from anywhere
    for key in FOLD_KEYS:  # '1-6,8' (flags, config files) or a list; 'none' = no fold
        if data.get(key) is not None:
            data[key] = _fold_list(key, data[key])
    try:
        cfg = TrainConfig.from_dict(data)
    except TypeError as e:
        raise EcgscanError(f"bad config: {e}") from e
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Every value of ``cfg`` usable, or one line: run before anything is loaded or written."""
    check_field_types(cfg)
    finite = all(math.isfinite(v) for v in (cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.lambda_clip, cfg.lambda_gram,
                                              cfg.lambda_mse, cfg.lambda_lead, cfg.alpha, cfg.beta, cfg.teacher_lr,
                                              cfg.init_tau, cfg.label_smoothing, *cfg.betas))
    checks = [
        (finite, "numbers must be finite"),
        (cfg.batch_size >= 2, "batch_size must be >= 2 (contrastive losses need negatives)"),
        (cfg.accum_steps >= 1, "accum_steps must be >= 1"), (cfg.max_steps >= 1, "max_steps must be >= 1"),
        (cfg.lr > 0, "lr must be > 0"), (0 <= cfg.min_lr_frac <= 1, "min_lr_frac must be in [0, 1]"),
        (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
        (len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "betas must be two numbers in [0, 1)"),
        (0 <= cfg.warmup_frac < 1, "warmup_frac must be in [0, 1)"), (cfg.grad_clip >= 0, "grad_clip must be >= 0"),
        (cfg.max_minutes is None or cfg.max_minutes > 0, "max_minutes must be > 0"),
        (cfg.model.lora_targets is None or len(cfg.model.lora_targets) > 0,
         "model.lora_targets must name at least one module (or be none: the tower's own)"),
        (cfg.augment in AUGMENTS or Path(str(cfg.augment)).is_file(),
         f"augment must be {'|'.join(AUGMENTS)} or an augmentation config file (YAML/JSON)"),
        (cfg.amp in ("auto", "none", "bf16"), "amp must be auto|none|bf16"),
        (cfg.split in ("auto", "folds", "random"), "split must be auto|folds|random"),
        (0 < cfg.val_fraction < 1, "val_fraction must be in (0, 1)"), (cfg.max_val >= 0, "max_val must be >= 0"),
        (cfg.num_workers >= 0, "num_workers must be >= 0"),
        (min(cfg.lambda_clip, cfg.lambda_gram, cfg.lambda_mse, cfg.lambda_lead, cfg.alpha, cfg.beta) >= 0,
         "loss weights (lambda_*, alpha, beta) must be >= 0"),
        (0 <= cfg.label_smoothing < 1, "label_smoothing must be in [0, 1)"), (cfg.init_tau > 0, "init_tau must be > 0"),
        (cfg.teacher_steps >= 1, "teacher_steps must be >= 1"), (cfg.teacher_lr > 0, "teacher_lr must be > 0"),
        (cfg.teacher_batch >= 2, "teacher_batch must be >= 2"), (cfg.teacher_width >= 1, "teacher_width must be >= 1"),
        (0 <= cfg.seed <= MAX_SEED, f"seed must be in 0..{MAX_SEED}"),
        (cfg.log_every >= 1, "log_every must be >= 1"), (cfg.eval_every >= 1, "eval_every must be >= 1"),
        (cfg.save_every >= 1, "save_every must be >= 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise EcgscanError(f"bad config: {msg}")
    if cfg.augment not in AUGMENTS:  # a config file: read it now, not at the first rendered batch
        from ecgscan_cli.render.augment import resolve_augment

        resolve_augment(cfg.augment)
    check_model_config(cfg.model)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_frac·max_steps, then cosine decay to min_lr_frac·lr."""
    warmup = max(1, int(round(cfg.warmup_frac * cfg.max_steps)))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def with_defaults(run_config: dict) -> dict:
    """A stored run.json with the keys added since it was written at their defaults (e.g.
    ``model.fs``), so that --resume compares like with like."""
    model = run_config.get("model")
    defaults = TrainConfig().to_dict()
    out = {**{k: v for k, v in defaults.items() if k != "model"}, **run_config}
    if isinstance(model, dict):
        out["model"] = {**defaults["model"], **model}
    return out


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Differences that change the trajectory (everything but :data:`RESUME_FREE`)."""
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k in RESUME_FREE:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k}: {va!r} → {vb!r}")
    return diffs


def with_resolved_split(cfg: TrainConfig, split) -> TrainConfig:
    """The config with the split actually used (run.json and --resume compare this one)."""
    if split.kind == "folds":
        return dataclasses.replace(cfg, split="folds", train_folds=split.train_folds, val_folds=split.val_folds,
                                   test_folds=split.test_folds)
    return dataclasses.replace(cfg, split="random")


def check_config_paths(cfg: TrainConfig) -> TrainConfig:
    """The files the config names exist; ``signal_encoder`` made absolute (run.json must
    still find it when ``--resume`` runs from another folder). Reads nothing heavy."""
    from ecgscan_cli.encoders import looks_like_a_path

    if cfg.signal_encoder:
        path = Path(cfg.signal_encoder).expanduser()
        if not path.exists():
            raise EcgscanError(f"signal encoder not found: {cfg.signal_encoder}")
        cfg = dataclasses.replace(cfg, signal_encoder=str(path.resolve()))
    text = cfg.model.text_model
    if looks_like_a_path(text) and not Path(text).expanduser().exists():
        raise EcgscanError(f"text encoder {text}: no such folder (a hub name is ORG/NAME, a folder must exist)")
    return cfg
