"""The tiny preset learns on synthetic data: held-out retrieval and reconstruction beat chance and a fresh init."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


LEARN_STEPS = 600


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    from ecgscan_cli.heldout import trained_vs_fresh_init
    from ecgscan_cli.synth import synthesize, write_synth
    from ecgscan_cli.train import pretrain, resolve_config

    tmp = tmp_path_factory.mktemp("learn")
    train_file = write_synth(tmp / "train.h5", 1000, seed=1)
    cfg = resolve_config("tiny", overrides={"max_steps": LEARN_STEPS, "eval_every": LEARN_STEPS,
                                            "save_every": LEARN_STEPS, "seed": 0})
    pretrain(train_file, tmp / "run", cfg, device="cpu")
    heldout = synthesize(200, seed=99)  # other seed: records never seen in training
    return trained_vs_fresh_init(tmp / "run", heldout.signals, heldout.reports, heldout.labels)


def test_tiny_learns_heldout_image_to_report_retrieval(learned):
    trained, fresh = learned["trained"], learned["random"]
    chance = trained["label_match_chance"]
    assert 0.05 < chance < 0.3
    # measured: 0.43 at 400 steps, 0.75 at 1200 (chance 0.11); a fresh init is at chance
    assert trained["label_match"] > chance + 0.15, trained
    assert trained["label_match"] > fresh["label_match"] + 0.15, (trained, fresh)
    assert trained["r1"] > 3 * trained["r1_chance"], trained


def test_tiny_learns_heldout_reconstruction(learned):
    trained, fresh = learned["trained"], learned["random"]
    assert trained["mse"] < 0.5 * fresh["mse"], (trained, fresh)
    # better than predicting 0 mV and than the same output scored against another record
    assert trained["mse"] < 0.98 * trained["mse_zero"], trained
    assert trained["mse"] < 0.99 * trained["mse_mismatched"], trained
