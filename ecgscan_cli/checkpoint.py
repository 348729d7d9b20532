"""Self-describing checkpoint folders (no pickles: JSON + safetensors only).

A run folder (``ecgscan pretrain -o RUN``)::

    RUN/
      run.json                 resolved training config (model config and split folds included)
      pretrain_ids.txt         ids of every record the run read (training + validation)
      metrics.jsonl            one JSON object per logged step / validation
      teacher/                 built-in signal teacher, when pretrain trained one
      best/  last/             checkpoints (below); best = lowest validation loss (the last
                               without validation records: ``best_rule`` says which)

A checkpoint folder::

    ecgscan_checkpoint.json    {"format": "ecgscan-checkpoint/1", "model_config": {...},
                                "train_config": {...}, "step": .., "val_loss": ..,
                                "pretraining": {signals, split, train/val/test folds, counts}, ...}
    pretrain_ids.txt           ids of every record pretraining read, one a line (see provenance.py)
    model.safetensors          every model tensor except the frozen text encoder
                               (image tower incl. LoRA adapters, projections, decoder)
    text_encoder/              the frozen text encoder (transformers save_pretrained, safetensors)
    state/                     only needed for --resume: losses.safetensors (temperatures),
                               optimizer.safetensors + state.json (param groups, step,
                               data position, RNG states)

Every checkpoint is written under a temporary name and renamed when complete, so a
crash or a full disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from ecgscan_cli import __version__
from ecgscan_cli.atomic import atomic_output
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.provenance import IDS_FILE

FORMAT = "ecgscan-checkpoint/1"
META = "ecgscan_checkpoint.json"
MODEL_WEIGHTS = "model.safetensors"
TEXT_DIR = "text_encoder"
STATE_DIR = "state"


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """The one place tensors reach the disk (tests monkeypatch it to simulate a full disk)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def _load_tensors(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as e:
        raise EcgscanError(f"{path}: unreadable weights file ({e})") from e


def resolve(path: str | os.PathLike) -> Path | None:
    """The checkpoint folder for ``path`` (a checkpoint, or a run folder → its best/last)."""
    path = Path(path)
    if (path / META).is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / META).is_file():
            return path / sub
    return None


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True for an ecgscan checkpoint folder or a run folder holding one (never raises)."""
    try:
        ckpt = resolve(path)
        return ckpt is not None and json.loads((ckpt / META).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_meta(path: str | os.PathLike) -> dict:
    """The checked metadata of a checkpoint (or run) folder, with ``path`` set to the checkpoint folder.

    Parameters
    ----------
    path : str or path
        A checkpoint folder, or a run folder (its ``best/``, else ``last/``).

    Returns
    -------
    dict
        The contents of ``ecgscan_checkpoint.json`` plus ``"path"``.

    Raises
    ------
    EcgscanError
        When ``path`` does not exist, holds no checkpoint, or holds one of another format.
    """
    if not Path(path).exists():
        raise EcgscanError(f"no such checkpoint: {path}")
    ckpt = resolve(path)
    if ckpt is None:
        raise EcgscanError(f"{path} is not an ecgscan checkpoint (no {META}; expected a folder written by "
                           "`ecgscan pretrain`, or its run folder)")
    try:
        meta = json.loads((ckpt / META).read_text())
    except ValueError as e:
        raise EcgscanError(f"{ckpt / META}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise EcgscanError(f"{ckpt / META}: expected a JSON object")
    if meta.get("format") != FORMAT:
        raise EcgscanError(f"{ckpt}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    meta["path"] = str(ckpt)
    return meta


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link a file that is never rewritten in place (only replaced); copy when links fail."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """Hard-link the (frozen, never rewritten) text encoder files; copy when links fail."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_dir():
            _link_or_copy_tree(f, dst / f.name)
        else:
            _link_or_copy(f, dst / f.name)


def save_checkpoint(path: str | os.PathLike, model, *, train_config: dict | None = None, step: int = 0,
                    val_loss: float | None = None, extra: dict | None = None, training_state: dict | None = None,
                    text_encoder_cache: str | os.PathLike | None = None, pretraining: dict | None = None,
                    pretrain_ids: str | os.PathLike | None = None) -> Path:
    """Write a checkpoint folder atomically (replacing ``path`` only when complete).

    ``training_state``: ``{"tensors": {name: tensor}, "json": {...}}`` for --resume.
    ``text_encoder_cache``: a folder holding the saved text encoder to link from.
    ``pretraining`` / ``pretrain_ids``: what the run trained on (``Pretraining.to_meta()``)
    and the file of record ids it read, linked into the checkpoint.
    """
    path = Path(path)
    with atomic_output(path, overwrite=True, directory=True) as tmp:
        _save_tensors(model.trainable_state_dict(), tmp / MODEL_WEIGHTS, metadata={"format": FORMAT})
        if text_encoder_cache is not None and Path(text_encoder_cache).is_dir():
            _link_or_copy_tree(Path(text_encoder_cache), tmp / TEXT_DIR)
        else:
            model.text_encoder.save(tmp / TEXT_DIR)
        if pretrain_ids is not None:
            _link_or_copy(Path(pretrain_ids), tmp / IDS_FILE)
        if training_state is not None:
            (tmp / STATE_DIR).mkdir()
            _save_tensors(training_state["tensors"], tmp / STATE_DIR / "state.safetensors")
            (tmp / STATE_DIR / "state.json").write_text(json.dumps(training_state["json"], indent=1))
        meta = {"format": FORMAT, "ecgscan_version": __version__, "step": int(step),
                "val_loss": None if val_loss is None else float(val_loss),
                "model_config": model.cfg.to_dict(), "train_config": train_config or {}, **(extra or {})}
        if pretraining is not None:
            meta["pretraining"] = pretraining
        (tmp / META).write_text(json.dumps(meta, indent=2))
    return path


def model_config(meta: dict):
    """The checked :class:`~ecgscan_cli.model.ModelConfig` of a checkpoint's metadata
    (a hand-edited ``embed_dim: "big"`` or ``patch: 0`` is one line, not a traceback)."""
    from ecgscan_cli.model import ModelConfig, check_model_config

    entry = meta.get("model_config")
    where = Path(meta.get("path", ".")) / META
    if not isinstance(entry, dict):
        raise EcgscanError(f"{where}: model_config is not a mapping")
    cfg = ModelConfig.from_dict(entry)
    try:
        check_model_config(cfg)
    except EcgscanError as e:
        raise EcgscanError(f"{where}: {e}") from None
    return cfg


def load_checkpoint(path: str | os.PathLike, device="cpu"):
    """The model of a checkpoint (or run) folder, in eval mode: the one way a checkpoint becomes a model.

    Parameters
    ----------
    path : str or path
        A checkpoint folder written by ``ecgscan pretrain``, or its run folder (then its
        ``best/``, else ``last/``).
    device : str or torch.device
        Where the weights go (``"cpu"``, ``"cuda:0"``, a ``torch.device``; resolve ``"auto"``
        with :func:`ecgscan_cli.device.resolve_device` first).

    Returns
    -------
    ECGScanModel
        With ``encode_image``, ``encode_text``, ``reconstruct`` and its ``cfg``.

    Raises
    ------
    EcgscanError
        For a missing path, anything that is not an ecgscan checkpoint, or weights that do
        not match its model config.
    """
    from ecgscan_cli.encoders import load_text_encoder
    from ecgscan_cli.model import build_model

    meta = read_meta(path)
    ckpt = Path(meta["path"])
    cfg = model_config(meta)
    if not (ckpt / TEXT_DIR).is_dir():
        raise EcgscanError(f"{ckpt}: checkpoint has no {TEXT_DIR}/ folder")
    text = load_text_encoder(str(ckpt / TEXT_DIR), pooling=cfg.text_pooling, max_length=cfg.text_max_length,
                             fallback=False)
    model = build_model(cfg, load_weights=False, text_encoder=text)
    load_model_weights(model, ckpt / MODEL_WEIGHTS)
    return model.to(device).eval()


def load_model_weights(model, weights: Path) -> None:
    state = _load_tensors(weights)
    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        what = (f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "") + \
               (f" {len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "") + \
               (f" {len(bad_shape)} of another shape (e.g. {bad_shape[:2]})" if bad_shape else "")
        raise EcgscanError(f"{weights}: weights do not match the model config: {what.strip()}")
    model.load_state_dict(state, strict=False)


def load_training_state(path: str | os.PathLike) -> tuple[dict, dict]:
    ckpt = Path(read_meta(path)["path"])
    state_dir = ckpt / STATE_DIR
    if not (state_dir / "state.json").is_file():
        raise EcgscanError(f"{ckpt}: no training state to resume from")
    try:
        state = json.loads((state_dir / "state.json").read_text())
    except (ValueError, OSError) as e:
        raise EcgscanError(f"{state_dir / 'state.json'}: not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise EcgscanError(f"{state_dir / 'state.json'}: expected a JSON object")
    return _load_tensors(state_dir / "state.safetensors"), state
