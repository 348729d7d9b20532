"""The run's two checkpoints, ``last`` and ``best``, and the training state for ``--resume``.

* ``last``: the model and the whole training state (loss temperatures, optimizer moments,
  step, data position, RNG states of every rank) of a *finished* step;
* ``best``: the model at the step with the lowest validation loss so far — or, for a run
  without validation records, the last checkpoint (:attr:`Checkpointer.rule` says which,
  in the log, in ``metrics.jsonl`` and in every checkpoint's ``best_rule``).

The first checkpoint written makes the run folder real (:meth:`RunFolder.commit`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ecgscan_cli.errors import EcgscanError, EcgscanFailure
from ecgscan_cli.training.config import TEXT_CACHE_DIR, TrainConfig
from ecgscan_cli.training.distributed import Dist

log = logging.getLogger("ecgscan")

BEST_BY_VALIDATION = "lowest validation loss"
BEST_IS_LAST = "no validation records: best is the last checkpoint"


class Checkpointer:
    def __init__(self, run, model, objective, optimizer, render_gen: torch.Generator, dist: Dist, cfg: TrainConfig,
                 pretraining: dict, has_validation: bool):
        self.run, self.model, self.objective, self.optimizer = run, model, objective, optimizer
        self.render_gen, self.dist, self.cfg, self.pretraining = render_gen, dist, cfg, pretraining
        self.rule = BEST_BY_VALIDATION if has_validation else BEST_IS_LAST
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.saved_step: int | None = None  # the step of last/ on disk

    # ---- the best rule, stated once
    def is_better(self, val: dict) -> bool:
        if self.rule == BEST_IS_LAST:
            return True
        return self.best_val is None or val["loss"] < self.best_val

    def offer(self, step: int, val: dict) -> bool:
        """Save ``best`` if step ``step`` (validation ``val``) is better than the best so far."""
        if not self.is_better(val):
            return False
        self._save("best", step, val)  # collective under DDP
        if self.rule == BEST_BY_VALIDATION:
            self.best_val = val["loss"]  # only once saved: an interrupted save leaves the old best in force
        self.best_step = step
        return True

    def save_last(self, step: int, val: dict | None = None) -> None:
        self._save("last", step, val)
        self.saved_step = step

    # ---- writing
    def _save(self, kind: str, step: int, val: dict | None) -> None:
        from ecgscan_cli.checkpoint import save_checkpoint
        from ecgscan_cli.provenance import IDS_FILE

        state = self._pack(step) if kind == "last" else None  # collective in DDP
        if not self.dist.main:
            return
        work = self.run.work
        try:
            save_checkpoint(work / kind, self.model, train_config=self.cfg.to_dict(), step=step,
                            val_loss=None if not val else val.get("loss"),
                            extra={"val": val, "kind": kind, "best_rule": self.rule}, training_state=state,
                            text_encoder_cache=work / TEXT_CACHE_DIR, pretraining=self.pretraining,
                            pretrain_ids=work / IDS_FILE)
        except Exception as e:
            from ecgscan_cli.atomic import is_disk_full

            if not (isinstance(e, OSError) or is_disk_full(e)):
                raise
            raise EcgscanFailure(self._failure(kind, step, e)) from e
        self.run.commit()  # the first checkpoint: the run folder becomes RUN

    def _failure(self, kind: str, step: int, e: BaseException) -> str:
        from ecgscan_cli.atomic import is_disk_full
        from ecgscan_cli.checkpoint import read_meta, resolve

        reason = "No space left on device" if is_disk_full(e) else (getattr(e, "strerror", None) or str(e))
        said = f"{reason} writing {self.run.path / kind} at step {step}"
        if not self.run.committed:
            return f"{said}; no checkpoint was saved, so the run is not kept"
        good = resolve(self.run.path / "last") or resolve(self.run.path / "best")
        if good is None:
            return said
        return f"{said}; the last good checkpoint is {good} (step {read_meta(good).get('step')})"

    # ---- training state
    def _pack(self, step: int) -> dict:
        objective, optimizer, dist = self.objective, self.optimizer, self.dist
        tensors = {f"loss.{k}": v for k, v in objective.loss_state_dict().items()}
        sd = optimizer.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        rng = [torch.get_rng_state(), self.render_gen.get_state().cpu()]
        if dist.world > 1:  # every rank's RNG (in-memory exchange between our own processes)
            gathered = [None] * dist.world
            torch.distributed.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        for r, (cpu_state, gen_state) in enumerate(gathered):
            tensors[f"rng.torch.{r}"] = cpu_state
            tensors[f"rng.render.{r}"] = gen_state
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in sd["param_groups"]]
        return {"tensors": tensors, "json": {"step": step, "micro_batches": step * self.cfg.accum_steps,
                                             "best_val": self.best_val, "best_step": self.best_step,
                                             "world": dist.world, "param_groups": groups}}

    def restore(self, checkpoint: Path, device) -> tuple[int, int]:
        """Load ``checkpoint`` (a ``last/``): model, temperatures, optimizer, RNG states, best so
        far. Returns (step, micro-batches consumed)."""
        from ecgscan_cli.checkpoint import load_model_weights, load_training_state

        load_model_weights(self.model, checkpoint / "model.safetensors")
        self.model.to(device)
        tensors, meta = load_training_state(checkpoint)
        try:
            step, micro = self._unpack(tensors, meta)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            raise EcgscanError(f"{checkpoint}: its training state does not fit this run "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        self.saved_step = step
        return step, micro

    def _unpack(self, tensors: dict, meta: dict) -> tuple[int, int]:
        objective, optimizer, dist, gen = self.objective, self.optimizer, self.dist, self.render_gen
        objective.clip.load_state_dict({k[len("loss.clip."):]: v for k, v in tensors.items()
                                        if k.startswith("loss.clip.")})
        objective.gram.load_state_dict({k[len("loss.gram."):]: v for k, v in tensors.items()
                                        if k.startswith("loss.gram.")})
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        step, micro = int(meta["step"]), int(meta["micro_batches"])
        r = dist.rank
        if meta.get("world", 1) == dist.world and f"rng.torch.{r}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch.{r}"])
            saved = tensors[f"rng.render.{r}"]
            gen.set_state(saved.to(gen.device) if gen.device.type != "cpu" else saved)
        else:  # different world size: fresh, still seeded, streams
            log.warning("resuming with %d process(es) instead of %s: random streams are re-seeded", dist.world,
                        meta.get("world"))
            torch.manual_seed(self.cfg.seed * 1000 + r + step)
            gen.manual_seed(self.cfg.seed * 1000 + 500 + r + step)
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        self.best_val = meta.get("best_val")
        self.best_step = meta.get("best_step")
        if self.best_step is None and self.best_val is not None:
            self.best_step = _step_of(self.run.work / "best")
        return step, micro


def _step_of(checkpoint: Path) -> int | None:
    try:
        return int(json.loads((checkpoint / "ecgscan_checkpoint.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
