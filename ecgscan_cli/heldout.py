"""Does a model learn? Held-out image→report retrieval and reconstruction, each beside its chance level.

Used by the learning test and ``benchmarks/bench_learning.py`` (through
:func:`trained_vs_fresh_init`). Images are rendered clean
(no augmentation) at the model's size from the held-out signals.

* ``r1``: the top-1 retrieved report (among the held-out reports) is the record's own.
* ``label_match``: the top-1 retrieved report belongs to a record with exactly the same label
  set (reports of synthetic or real data repeat, so this is the fairer retrieval figure);
  ``label_match_chance`` is its exact expectation under random retrieval.
* ``mse``: reconstruction vs. the record's own signal; ``mse_mismatched``: the same
  reconstructions scored against another record's signal (chance: nothing image-specific),
  ``mse_zero``: predicting 0 mV everywhere.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def heldout_metrics(model, signals: np.ndarray, reports, labels: np.ndarray | None = None,
                    batch_size: int = 50, seed: int = 0) -> dict:
    from ecgscan_cli.render.batch import render_batch

    model = model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(np.nan_to_num(np.asarray(signals, dtype=np.float32)))
    n = x.shape[0]
    if n < 2:
        raise ValueError("held-out metrics need at least 2 records")
    gen = torch.Generator().manual_seed(seed)
    z_image, recon = [], []
    for start in range(0, n, batch_size):
        images = render_batch(x[start:start + batch_size], size=model.image_size, augment="none",
                              fs=model.cfg.fs, generator=gen)
        images = images.to(device)
        z_image.append(model.encode_image(images).cpu())
        recon.append(model.reconstruct(images).cpu())
    z_image, recon = torch.cat(z_image), torch.cat(recon)
    z_text = torch.cat([model.encode_text(list(reports[s:s + batch_size])).cpu() for s in range(0, n, batch_size)])
    top = (z_image @ z_text.t()).argmax(1).numpy()
    out = {"n": n, "r1": float((top == np.arange(n)).mean()), "r1_chance": 1.0 / n,
           "mse": float(((recon - x) ** 2).mean()),
           "mse_mismatched": float(((recon - x.roll(1, 0)) ** 2).mean()),
           "mse_zero": float((x ** 2).mean())}
    if labels is not None:
        lab = np.asarray(labels).astype(bool)
        same = (lab[:, None, :] == lab[None, :, :]).all(-1)
        out["label_match"] = float(same[np.arange(n), top].mean())
        out["label_match_chance"] = float(same.mean())
    return out


def trained_vs_fresh_init(run_dir, signals: np.ndarray, reports, labels: np.ndarray | None = None) -> dict:
    """:func:`heldout_metrics` of a run's trained encoder and of a fresh, untrained one.

    The untrained encoder is the checkpoint's architecture newly initialised (``load_encoder``'s
    ``random``, seed 0), not the run's own weights at step 0: the comparison says what training
    added over a random init, the chance level a model that learnt nothing would reach.

    Returns ``{"random": metrics, "trained": metrics}`` (the keys are ``load_encoder``'s names).
    """
    from ecgscan_cli.embed import load_encoder

    out = {}
    for encoder in ("random", "trained"):
        model, _ = load_encoder(run_dir, encoder)
        out[encoder] = heldout_metrics(model, np.asarray(signals), reports, labels)
    return out
