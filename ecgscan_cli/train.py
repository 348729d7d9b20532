"""The ECG-Scan pretraining run (``ecgscan pretrain``); the parts live in :mod:`ecgscan_cli.training`.

* presets ``tiny`` (CPU, seconds per hundred steps), ``cpu`` and ``paper`` as YAML in
  ``ecgscan_cli/presets``; a config file overrides the preset and flags override the file;
  everything is checked before anything is written; the resolved config is ``RUN/run.json``;
* cosine schedule with linear warm-up (10 % of max_steps), gradient clipping, gradient
  accumulation, bf16 autocast on CUDA; ``max_minutes`` bounds the whole command, the
  built-in teacher stage included;
* the run folder appears with its first checkpoint (``--overwrite`` replaces the old run
  only then); Ctrl-C, SIGTERM and SIGHUP let the running step finish, save it and keep the
  folder; ``--resume`` restores model, loss temperatures, optimizer, step, data position and
  RNG states from ``RUN/last`` and continues bit-for-bit on CPU;
* DDP under ``torchrun``: each rank reads its own shard, rank 0 logs and saves.
"""

from __future__ import annotations

from ecgscan_cli.training.checkpointer import (
                                         BEST_BY_VALIDATION,
                                         BEST_IS_LAST,
                                         Checkpointer,
)
from ecgscan_cli.training.config import (
                                         FOLD_KEYS,
                                         LOSS_TERMS,
                                         METRICS,
                                         PRESET_DIR,
                                         RESUME_FREE,
                                         RUN_CONFIG,
                                         TEACHER_DIR,
                                         TEXT_CACHE_DIR,
                                         TrainConfig,
                                         apply_overrides,
                                         check_config,
                                         config_diff,
                                         lr_at,
                                         parse_overrides,
                                         preset_names,
                                         resolve_config,
)
from ecgscan_cli.training.distributed import Dist, init_distributed
from ecgscan_cli.training.loop import PretrainResult, evaluate, pretrain
from ecgscan_cli.training.objective import FrozenFeatures, Objective, build_optimizer
from ecgscan_cli.training.run_folder import RunFolder
from ecgscan_cli.training.teacher import TEACHER_SHARE, train_signal_teacher

_optimizer = build_optimizer  # the name tests and benchmarks import

__all__ = ["BEST_BY_VALIDATION", "BEST_IS_LAST", "Checkpointer", "Dist", "FOLD_KEYS", "FrozenFeatures", "LOSS_TERMS",
           "METRICS", "Objective", "PRESET_DIR", "PretrainResult", "RESUME_FREE", "RUN_CONFIG", "RunFolder",
           "TEACHER_DIR", "TEACHER_SHARE", "TEXT_CACHE_DIR", "TrainConfig", "apply_overrides", "build_optimizer",
           "check_config", "config_diff", "evaluate", "init_distributed", "lr_at", "parse_overrides", "preset_names",
           "pretrain", "resolve_config",
           "train_signal_teacher"]
