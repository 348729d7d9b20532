"""Zero-shot: prompt sets, AUROC, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.zeroshot import builtin_prompt_sets, choose_prompts, load_prompts, score

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_builtin_prompt_sets_cover_the_label_sets():

    from ecgscan_cli.synth import CLASSES

    sets = builtin_prompt_sets()
    assert {"ptbxl_superclass", "ptbxl_subclass", "ptbxl_form", "ptbxl_rhythm", "cpsc2018", "csn", "synth"} <= set(sets)
    sizes = {n: len(load_prompts(n)[1]) for n in sets}
    assert sizes["ptbxl_superclass"] == 5 and sizes["ptbxl_subclass"] == 23 and sizes["ptbxl_form"] == 19
    assert sizes["ptbxl_rhythm"] == 12 and sizes["csn"] >= 38
    assert choose_prompts(CLASSES)[0] == "synth"
    assert choose_prompts(["NORM", "MI", "STTC", "CD", "HYP"], label_set="superclass")[0] == "ptbxl_superclass"
    for cls in ("AF", "IAVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE", "NORM"):
        assert cls in load_prompts("cpsc2018")[1]
    for name in sets:
        for c, texts in load_prompts(name)[1].items():
            assert all(20 < len(t) < 300 for t in texts), (name, c)


def test_ptbxl_class_names_match_scp_statements(ptbxl_dir):

    from ecgscan_cli.importing import ptbxl_classes, read_scp_statements

    scp = read_scp_statements(ptbxl_dir)
    for ls in ("superclass", "subclass", "form", "rhythm"):
        prompts = load_prompts(f"ptbxl_{ls}")[1]
        assert set(ptbxl_classes(scp, ls)) == set(prompts), ls


def test_missing_class_is_a_clear_error(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"classes": {"A": "class a description", "B": ["one", "two"]}}))
    assert load_prompts(p)[1]["B"] == ["one", "two"]
    with pytest.raises(EcgscanError, match="no description for class\\(es\\) C"):
        choose_prompts(["A", "B", "C"], p)
    with pytest.raises(EcgscanError, match="no built-in prompt set describes"):
        choose_prompts(["ZZZ"])
    p.write_text("{not json")
    with pytest.raises(EcgscanError, match="not valid JSON"):
        load_prompts(p)


def test_score_is_auroc_of_cosine_similarity():
    rng = np.random.default_rng(0)
    text = np.eye(3, 8, dtype=np.float32)
    y = rng.integers(0, 2, size=(300, 3))
    y[:, 2] = 0  # no positive: skipped
    img = y @ text + rng.normal(0, 0.3, size=(300, 8))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    r = score(img.astype(np.float32), text, y, ["A", "B", "C"], thresholds=True)
    assert r.classes == ["A", "B"] and r.skipped == ["C"] and r.macro_auroc > 0.95
    assert {t["class"] for t in r.thresholds} == {"A", "B"}


def test_cli_zeroshot_with_tiny_checkpoint(tmp_path, random_signals_file):
    import torch

    from ecgscan_cli.checkpoint import save_checkpoint
    from ecgscan_cli.model import build_model, tiny_config

    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "ck", build_model(tiny_config(image_size=64), load_weights=False))
    prompts = tmp_path / "ab.json"
    prompts.write_text(json.dumps({"classes": {"A": "an ECG of class A", "B": "an ECG of class B"}}))
    r = run("zeroshot", ck, random_signals_file, "--prompts", prompts, "-f", "json", "-q", "--thresholds")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)   # one document, the thresholds as columns
    assert rows[0]["class"] == "macro" and 0 <= rows[0]["auroc"] <= 100
    assert all(0 <= x["f1"] <= 1 for x in rows[1:] if x["f1"] is not None)
    bad = tmp_path / "a.json"
    bad.write_text(json.dumps({"classes": {"A": "an ECG of class A"}}))
    r = run("zeroshot", ck, random_signals_file, "--prompts", bad, "-q")
    assert r.exit_code == 2 and "no description for class(es) B" in r.output
    r = run("zeroshot", ck, random_signals_file, "-q")
    assert r.exit_code == 2 and "pass --prompts" in r.output
    r = run("zeroshot", tmp_path, random_signals_file, "--prompts", prompts, "-q")
    assert r.exit_code == 2 and "not an ecgscan checkpoint" in r.output
