"""CLIP and GRAM under DDP: two gloo processes on CPU against one process on the whole batch.

Each rank holds half of a random batch. The contrastive losses gather the features of
both ranks, so every rank's loss must equal the single-process loss of the concatenated
batch; the gradient of a rank's local features is the full-batch gradient of those rows
times the world size (``losses.gather_features``), so that after DDP's gradient average
every parameter of ``train.Objective`` gets exactly the single-process gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ecgscan_cli.losses import CLIPLoss, GramianVolumeLoss
from ecgscan_cli.train import Objective, TrainConfig

WORLD = 2
PER_RANK = 4
DIM = 16
SAMPLES = 20  # signal length of the toy reconstruction


def _features(seed: int) -> dict[str, torch.Tensor]:
    """The whole batch: normalised embeddings (loss tests) and raw inputs (Objective test)."""
    g = torch.Generator().manual_seed(seed)
    n = WORLD * PER_RANK

    def unit():
        return F.normalize(torch.randn(n, DIM, generator=g), dim=-1)

    signals = torch.randn(n, 12, SAMPLES, generator=g)
    # gaps, left out of the reconstruction losses; as long on both ranks, because DDP averages
    # per-rank means, which equals the full-batch mean only when the ranks count as many samples
    signals[1, 3, 5:9] = float("nan")
    signals[PER_RANK + 2, 3, 0:4] = float("nan")
    return {"image": unit(), "text": unit(), "signal": unit(),
            "images": torch.randn(n, 3, 4, 4, generator=g), "signals": signals,
            "text_features": torch.randn(n, 24, generator=g), "signal_features": torch.randn(n, 12, generator=g)}


class _ToyModel(nn.Module):
    """What Objective needs from the model: forward → (z_image, reconstruction), text_proj,
    encode_signal_features (z_S from the teacher's features, as ECGScanModel does)."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(3 * 4 * 4, DIM)
        self.decoder = nn.Linear(DIM, 12 * SAMPLES)
        self.text_proj = nn.Linear(24, DIM)
        self.signal_proj = nn.Linear(12, DIM)

    def forward(self, images):
        h = self.image(images.flatten(1))
        return F.normalize(h, dim=-1), self.decoder(h).view(-1, 12, SAMPLES)

    def encode_signal_features(self, features):
        return F.normalize(self.signal_proj(features).float(), dim=-1)


def _objective() -> Objective:
    torch.manual_seed(0)
    return Objective(_ToyModel(), TrainConfig(label_smoothing=0.1, init_tau=0.07))


def _loss_and_grads(loss_fn, tensors):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss = loss_fn(*leaves)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves], loss_fn.temperature.log_scale.grad.clone()


def _worker(rank: int, init_method: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD)
    try:
        f = _features(seed=1)
        local = {k: v[rank * PER_RANK:(rank + 1) * PER_RANK] for k, v in f.items()}
        res = {}
        res["clip"] = _loss_and_grads(CLIPLoss(0.1, 0.07, all_ranks=True), [local["image"], local["text"]])
        res["gram"] = _loss_and_grads(GramianVolumeLoss(0.1, 0.07, all_ranks=True),
                                      [local["image"], local["text"], local["signal"]])
        # stays local: the default (the teacher, trained on rank 0 alone) and eval mode (validation)
        res["clip_default"] = CLIPLoss(0.1, 0.07)(local["image"], local["text"]).detach()
        res["clip_eval"] = CLIPLoss(0.1, 0.07, all_ranks=True).eval()(local["image"], local["text"]).detach()

        objective = _objective()
        ddp = nn.parallel.DistributedDataParallel(objective)
        total, terms, _, _ = ddp(local["images"], local["signals"], local["text_features"], local["signal_features"])
        total.backward()  # DDP averages the parameter gradients over the ranks here
        res["objective_terms"] = {k: v.detach() for k, v in terms.items()}
        res["objective_grads"] = {n: p.grad.clone() for n, p in objective.named_parameters()}
        torch.save(res, f"{out}/rank{rank}.pt")
        # both ranks done before either tears gloo down: a rank that destroys its pairs while the
        # other is still finishing aborted it ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import torch: ~20 s on the shared 2-core machine
def test_contrastive_losses_use_all_ranks_and_ddp_gradient_equals_full_batch(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned children
    mp.spawn(_worker, args=(f"file://{tmp_path}/store", str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    f = _features(seed=1)
    close = {"rtol": 1e-5, "atol": 1e-6}
    rows = [slice(r * PER_RANK, (r + 1) * PER_RANK) for r in range(WORLD)]
    for name, loss_fn, keys in (("clip", CLIPLoss(0.1, 0.07), ("image", "text")),
                                ("gram", GramianVolumeLoss(0.1, 0.07), ("image", "text", "signal"))):
        loss, grads, temp_grad = _loss_and_grads(loss_fn, [f[k] for k in keys])
        assert loss > 0.5  # a real contrastive loss, not a trivial one
        for r, res in enumerate(ranks):
            r_loss, r_grads, r_temp_grad = res[name]
            torch.testing.assert_close(r_loss, loss, **close)
            for g, r_g in zip(grads, r_grads):
                assert g[rows[r]].abs().max() > 1e-3
                torch.testing.assert_close(r_g, WORLD * g[rows[r]], **close)
            # the temperature is the same on every rank, so its gradient is the full-batch one
            torch.testing.assert_close(r_temp_grad, temp_grad, **close)

    for r, res in enumerate(ranks):
        half = CLIPLoss(0.1, 0.07)(f["image"][rows[r]], f["text"][rows[r]])
        torch.testing.assert_close(res["clip_default"], half.detach(), **close)
        torch.testing.assert_close(res["clip_eval"], half.detach(), **close)
        assert not torch.allclose(half, ranks[0]["clip"][0])  # the local loss differs from the global one

    objective = _objective()
    total, terms, _, _ = objective(f["images"], f["signals"], f["text_features"], f["signal_features"])
    total.backward()
    for name in ("clip", "gram"):
        for res in ranks:
            torch.testing.assert_close(res["objective_terms"][name], terms[name].detach(), **close)
    grads = {n: p.grad for n, p in objective.named_parameters()}
    assert set(grads) == set(ranks[0]["objective_grads"])
    for res in ranks:
        for n, g in grads.items():
            torch.testing.assert_close(res["objective_grads"][n], g, rtol=1e-4, atol=1e-6, msg=n)
