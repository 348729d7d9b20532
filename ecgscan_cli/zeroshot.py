"""Zero-shot classification: cosine similarity between image and class-prompt embeddings.

Prompt sets are JSON files ``{"name": ..., "description": ..., "classes": {CLASS: text or
[texts]}}`` (several texts per class are averaged in the text embedding space). Built-in
sets in ``ecgscan_cli/prompts/``: ptbxl_superclass, ptbxl_subclass, ptbxl_form,
ptbxl_rhythm, cpsc2018, csn, synth. When no set is given, the first built-in set that
covers every class of the labels is used.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli.errors import EcgscanError

log = logging.getLogger("ecgscan")

# label-set names (as written by import/synth) → built-in prompt set tried first
_PREFERRED = {"superclass": "ptbxl_superclass", "super": "ptbxl_superclass", "subclass": "ptbxl_subclass",
              "sub": "ptbxl_subclass", "form": "ptbxl_form", "rhythm": "ptbxl_rhythm", "cpsc": "cpsc2018",
              "cpsc2018": "cpsc2018", "csn": "csn", "chapman": "csn", "synth": "synth"}


def builtin_prompt_sets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("ecgscan_cli.prompts").iterdir()
                  if p.name.endswith(".json"))


def _parse_prompts(data, where: str) -> dict[str, list[str]]:
    classes = data.get("classes") if isinstance(data, dict) and "classes" in data else data
    if not isinstance(classes, dict) or not classes:
        raise EcgscanError(f"{where}: expected {{\"classes\": {{CLASS: description, ...}}}}")
    out = {}
    for k, v in classes.items():
        texts = [v] if isinstance(v, str) else v
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise EcgscanError(f"{where}: class {k!r} needs a non-empty description (string or list of strings)")
        out[str(k)] = [t.strip() for t in texts]
    return out


def load_prompts(spec: str | Path) -> tuple[str, dict[str, list[str]]]:
    """A built-in set name or a JSON file → (name, {class: [texts]})."""
    p = Path(spec)
    if p.suffix.lower() == ".json" or p.exists():
        if not p.is_file():
            raise EcgscanError(f"no such prompts file: {p}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise EcgscanError(f"{p}: not valid JSON ({e})") from None
        return p.stem, _parse_prompts(data, str(p))
    name = str(spec)
    if name not in builtin_prompt_sets():
        raise EcgscanError(f"unknown prompt set {name!r} (built-in: {', '.join(builtin_prompt_sets())}; "
                           "or pass a JSON file)")
    data = json.loads(resources.files("ecgscan_cli.prompts").joinpath(f"{name}.json").read_text(encoding="utf-8"))
    return name, _parse_prompts(data, name)


# SNOMED CT codes of WFDB `# Dx:` headers (PhysioNet/CinC 2020-2021 data sets; codes from the
# challenge's dx_mapping_scored.csv / dx_mapping_unscored.csv) -> the built-in prompt sets'
# classes. Codes the challenge scores as one diagnosis map to the same class. CSN's "AF" is
# atrial flutter and "AFIB" atrial fibrillation.
SNOMED_CLASSES: dict[str, dict[str, str]] = {
    "164889003": {"cpsc2018": "AF", "csn": "AFIB"},        # atrial fibrillation
    "164890007": {"csn": "AF"},                            # atrial flutter
    "426783006": {"cpsc2018": "SNR", "csn": "SR"},         # sinus rhythm
    "426177001": {"csn": "SB"},                            # sinus bradycardia
    "427084000": {"csn": "ST"},                            # sinus tachycardia
    "427393009": {"csn": "SA"},                            # sinus arrhythmia
    "270492004": {"cpsc2018": "IAVB", "csn": "1AVB"},      # 1st degree AV block
    "164909002": {"cpsc2018": "LBBB", "csn": "LBBB"},      # left bundle branch block
    "733534002": {"cpsc2018": "LBBB", "csn": "LBBB"},      # complete LBBB (scored as LBBB)
    "59118001": {"cpsc2018": "RBBB", "csn": "RBBB"},       # right bundle branch block
    "713427006": {"cpsc2018": "RBBB", "csn": "RBBB"},      # complete RBBB (scored as RBBB)
    "284470004": {"cpsc2018": "PAC", "csn": "APB"},        # premature atrial contraction
    "63593006": {"cpsc2018": "PAC", "csn": "APB"},         # supraventricular premature beats (= PAC)
    "427172004": {"cpsc2018": "PVC", "csn": "VPB"},        # premature ventricular contractions
    "17338001": {"cpsc2018": "PVC", "csn": "VPB"},         # ventricular premature beats (= PVC)
    "429622005": {"cpsc2018": "STD", "csn": "STDD"},       # ST depression
    "164931005": {"cpsc2018": "STE", "csn": "STE"},        # ST elevation
    "164934002": {"csn": "TWC"},                           # T wave abnormal
    "164917005": {"csn": "AQW"},                           # Q wave abnormal
}


def is_snomed(classes: Sequence[str]) -> bool:
    """Class names that are all SNOMED CT concept ids (digits), as WFDB `# Dx:` headers give."""
    return bool(classes) and all(str(c).isdigit() and len(str(c)) >= 6 for c in classes)


def snomed_prompts(classes: Sequence[str], name: str, prompts: dict[str, list[str]]) -> dict[str, list[str]]:
    """The descriptions of prompt set ``name`` for the SNOMED codes it covers, keyed by code."""
    out = {}
    for code in classes:
        cls = SNOMED_CLASSES.get(str(code), {}).get(name)
        if cls in prompts:
            out[code] = prompts[cls]
    return out


def choose_prompts(classes: Sequence[str], spec: str | Path | None = None,
                   label_set: str = "") -> tuple[str, dict[str, list[str]]]:
    """The prompt set for ``classes``: ``spec`` when given (must cover every class), else the
    first built-in set covering them all. SNOMED CT codes are translated to the built-in sets'
    classes (:data:`SNOMED_CLASSES`); the set covering most codes is chosen and the returned
    prompts may then cover only some of the codes (the caller leaves the others out)."""
    if is_snomed(classes) and (spec is None or str(spec) in builtin_prompt_sets()):
        names = [str(spec)] if spec is not None else builtin_prompt_sets()
        best = max(((n, snomed_prompts(classes, n, load_prompts(n)[1])) for n in names), key=lambda t: len(t[1]))
        if best[1]:
            return best
        raise EcgscanError(f"no built-in prompt set describes any of the SNOMED codes {', '.join(classes[:8])}; "
                           "pass --prompts FILE.json with a description per code")
    if spec is not None:
        name, prompts = load_prompts(spec)
        missing = [c for c in classes if c not in prompts]
        if missing:
            raise EcgscanError(f"prompts {name!r} have no description for class(es) {', '.join(missing)} "
                               f"(they describe: {', '.join(prompts)})")
        return name, prompts
    order = builtin_prompt_sets()
    pref = _PREFERRED.get(label_set.lower())
    if pref in order:
        order.remove(pref)
        order.insert(0, pref)
    for name in order:
        _, prompts = load_prompts(name)
        if all(c in prompts for c in classes):
            return name, prompts
    raise EcgscanError(f"no built-in prompt set describes all classes {', '.join(classes)}; "
                       "pass --prompts FILE.json with a description per class")


@dataclass
class ZeroShotResult:
    prompt_set: str
    label_set: str
    classes: list[str]               # classes scored (both labels present)
    per_class: dict[str, float]      # AUROC per scored class
    macro_auroc: float
    n: int
    skipped: list[str] = field(default_factory=list)
    scores: np.ndarray | None = field(default=None, repr=False)   # [n, C_all] cosine similarities
    labels: np.ndarray | None = field(default=None, repr=False)
    thresholds: list[dict] = field(default_factory=list)
    all_classes: list[str] = field(default_factory=list)   # column order of scores/labels


def class_text_embeddings(model, prompts: dict[str, list[str]], classes: Sequence[str]) -> np.ndarray:
    """[C, D] L2-normalised text embeddings (mean over a class's texts, re-normalised)."""
    import torch

    with torch.inference_mode():
        rows = []
        for c in classes:
            t = model.encode_text(prompts[c]).float().cpu().numpy()
            v = t.mean(0)
            rows.append(v / max(np.linalg.norm(v), 1e-12))
    return np.stack(rows).astype(np.float32)


def score(image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray, classes: Sequence[str],
          prompt_set: str = "", label_set: str = "", thresholds: bool = False) -> ZeroShotResult:
    from ecgscan_cli.metrics import auroc_per_class, threshold_metrics

    sims = image_emb @ text_emb.T
    per = auroc_per_class(sims, labels)
    scored = [c for c, a in zip(classes, per) if math.isfinite(a)]
    skipped = [c for c, a in zip(classes, per) if not math.isfinite(a)]
    if not scored:
        raise EcgscanError("no class has both positive and negative examples: AUROC is undefined")
    macro = float(np.nanmean(per))
    res = ZeroShotResult(prompt_set, label_set, scored, {c: float(a) for c, a in zip(classes, per) if math.isfinite(a)},
                         macro, len(labels), skipped, sims, labels, all_classes=list(classes))
    if thresholds:
        res.thresholds = threshold_metrics(sims, labels, classes)
    return res


def zeroshot(checkpoint, input_path, *, prompts: str | Path | None = None, labels: str | None = None,
             batch_size: int = 32, device="auto", thresholds: bool = False, progress_factory=None) -> ZeroShotResult:
    """Zero-shot AUROC of a checkpoint on INPUT (folder/images/signals file, or an embeddings
    file made with the same checkpoint's trained encoder). Logs a warning when the
    checkpoint's pretraining read some of the evaluated records."""
    import contextlib

    from ecgscan_cli.checkpoint import load_checkpoint
    from ecgscan_cli.device import resolve_device
    from ecgscan_cli.embed import embed_source
    from ecgscan_cli.formats.common import file_kind
    from ecgscan_cli.provenance import from_checkpoint

    dev = resolve_device(device)
    if file_kind(input_path) == "embeddings":
        from ecgscan_cli.formats.embeddings import EmbeddingsFile

        ef = EmbeddingsFile(input_path)
        if ef.features != "projected":
            raise EcgscanError(f"{input_path} holds {ef.features} features, not the contrastive embedding: "
                               "zero-shot needs `ecgscan embed --features projected`")
        if ef.encoder in ("random", "imagenet"):
            log.warning("%s was embedded with an encoder without ECG training (%s); its space is not aligned "
                        "with text", input_path, ef.encoder)
        ls = ef.label_set_named(labels) if labels else (ef.label_sets.get(ef.label_set) if ef.label_sets else None)
        if ls is None:
            raise EcgscanError(f"{input_path} has no labels: zero-shot AUROC needs labelled records")
        emb, lab, classes, ls_name, ids = ef.embeddings, ls.labels, ls.classes, ls.name, ef.ids
        model = load_checkpoint(checkpoint, dev)
        if emb.shape[1] != model.embed_dim:
            raise EcgscanError(f"{input_path}: embeddings have {emb.shape[1]} dimensions, the checkpoint "
                               f"{model.embed_dim}")
    else:
        from ecgscan_cli.imageio import open_source

        source = open_source(input_path)
        if labels and labels != (source.label_set or "label"):
            if labels not in source.extra_label_sets:
                have = [source.label_set or "label"] + list(source.extra_label_sets)
                raise EcgscanError(f"{input_path}: no label set {labels!r} (label sets: {', '.join(have)})")
            classes, all_lab = source.extra_label_sets[labels]
            ls_name = labels
        else:
            classes, all_lab, ls_name = source.classes, source.labels, source.label_set
        if not classes:
            raise EcgscanError(f"{input_path} has no labels: zero-shot AUROC needs labelled records "
                               "(an images or signals file with /label)")
        choose_prompts(classes, prompts, ls_name)  # fail before the slow part
        model = load_checkpoint(checkpoint, dev)
        ctx = progress_factory(len(source), "zero-shot") if progress_factory else contextlib.nullcontext(None)
        with ctx as advance:
            rows, ids, emb = embed_source(model, source, batch_size, dev, advance)
        if not rows:
            raise EcgscanError(f"{input_path}: no readable image")
        lab = np.asarray(all_lab)[np.asarray(rows, int)]
        source.close()
    pretraining = from_checkpoint(checkpoint)
    seen = pretraining.seen(ids) if pretraining is not None else 0
    if seen:
        log.warning("%s", pretraining.overlap_message(seen, len(ids)) + "; this zero-shot AUROC is optimistic")
    name, pr = choose_prompts(classes, prompts, ls_name)
    keep = [i for i, c in enumerate(classes) if c in pr]
    if len(keep) < len(classes):   # SNOMED codes without a class in the prompt set
        log.warning("prompt set %s describes %d of %d SNOMED classes; left out: %s", name, len(keep),
                    len(classes), ", ".join(c for c in classes if c not in pr))
        classes, lab = [classes[i] for i in keep], np.asarray(lab)[:, keep]
    text = class_text_embeddings(model, pr, classes)
    return score(emb, text, lab, classes, name, ls_name, thresholds)
