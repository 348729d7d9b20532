"""What a new user hit (issue 14): empty paths, render -o/--format, ids through the chain,
scoring a subset, thread defaults, help texts."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app

runner = CliRunner()


def run_main(monkeypatch, capsys, *args):
    """Run the real entry point (the empty-path check sits in front of Typer)."""
    from ecgscan_cli.cli.app import main

    monkeypatch.setattr(sys, "argv", ["ecgscan", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ---------------------------------------------------------------- item 7: empty path arguments

@pytest.mark.parametrize("args, said", [
    (["snr-check", ""], "empty path argument"),
    (["snr-check", "x.h5", "--reference", ""], "--reference: empty path"),
    (["snr-check", "x.h5", "--reference="], "--reference: empty path"),
    (["render", "x.h5", "-o", ""], "empty path"),
    (["probe", "a.h5", ""], "empty path argument"),
    (["-q", "embed", "", "x.h5", "-o", "e.h5"], "empty path argument"),
])
def test_empty_path_argument_is_refused_as_such(monkeypatch, capsys, tmp_path, args, said):
    """Before: `snr-check ""` read the current folder ("no WFDB records found in .")."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("ecgscan: error: ") and said in err and err.count("\n") == 1, err


def test_empty_string_for_a_non_path_option_is_left_to_the_command():
    from ecgscan_cli.cli.common import empty_path_argument

    assert empty_path_argument(app, ["zeroshot", "c", "i.h5", "--prompts", ""]) is None
    assert empty_path_argument(app, ["snr-check", "x.h5", "--format", "csv"]) is None


# ---------------------------------------------------------------- item 8: render -o and the image format

def render(*args):
    return runner.invoke(app, ["render", *map(str, args)])


@pytest.mark.parametrize("output, extra, said", [
    ("out.png", ["--image-format", "png"], "looks like a file name"),
    ("out.png", [], "into a folder"),
    ("pages", [], "say what to write"),
    ("pages/", ["--image-format", "h5"], "is a folder"),
    ("x.h5", ["--image-format", "png", "--format", "png"], "--image-format only"),
])
def test_render_output_and_format_mismatch_refused(random_signals_file, tmp_path, output, extra, said):
    """Before: `-o pages/` wrote an HDF5 file named pages, `-o out.png --format png` a folder."""
    r = render(random_signals_file, "-o", f"{tmp_path}/{output}", "--limit", "1", "--dpi", "40", *extra)
    assert r.exit_code == 2 and said in r.stderr, r.output
    assert list(tmp_path.iterdir()) == [random_signals_file]


def test_render_infers_format_from_output(random_signals_file, tmp_path):
    r = render(random_signals_file, "-o", f"{tmp_path}/pages/", "--limit", "2", "--dpi", "40", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "pages").iterdir()) == ["r0.json", "r0.png", "r1.json", "r1.png"]
    r = render(random_signals_file, "-o", tmp_path / "jpgs", "--image-format", "jpeg", "--limit", "1",
               "--dpi", "40", "-q")
    assert r.exit_code == 0 and (tmp_path / "jpgs" / "r0.jpg").is_file(), r.output
    r = render(random_signals_file, "-o", tmp_path / "old", "--format", "png", "--limit", "1", "--dpi", "40")
    assert r.exit_code == 0 and "deprecated" in r.stderr and (tmp_path / "old" / "r0.png").is_file()


def test_render_help_shows_image_format_not_the_deprecated_alias():
    r = runner.invoke(app, ["render", "--help"], terminal_width=100)
    assert "--image-format" in r.stdout and "--format" not in r.stdout.replace("--image-format", "")


# ---------------------------------------------------------------- item 4: ids through the chain

def test_pages_are_named_after_record_ids_and_read_back_by_sidecar_id(tmp_path):
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.imageio import open_source
    from ecgscan_cli.leads import with_derived_limb_leads
    from ecgscan_cli.render.files import page_names

    assert page_names(["a/b", "a:b", "-rf", "A/B"]) == ["a_b", "a_b_2", "rf", "A_B_3"]
    rng = np.random.default_rng(0)
    x = with_derived_limb_leads(np.cumsum(rng.normal(0, 0.01, (3, 12, 5000)), -1).astype(np.float32))
    ids = ["patient 7/ecg 1", "patient 7/ecg 2", "00003_hr"]
    write_signals(tmp_path / "s.h5", x, ids)
    r = render(tmp_path / "s.h5", "-o", f"{tmp_path}/pages/", "--dpi", "40", "-q")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "pages").glob("*.png"))
    assert names == ["00003_hr.png", "patient_7_ecg_1.png", "patient_7_ecg_2.png"]
    # reconstruct reads a folder through open_source: ids come from the sidecars, so
    # `snr-check --reference` finds the records (before: "no record id ... is in")
    assert sorted(open_source(tmp_path / "pages").ids) == sorted(ids)
    (tmp_path / "pages" / "00003_hr.json").unlink()   # no sidecar for every page: file names
    assert "00003_hr" in open_source(tmp_path / "pages").ids


# ---------------------------------------------------------------- item 5: scoring a subset

def test_snr_reference_scores_only_records_present(tmp_path):
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.synth import synthesize

    ref = synthesize(4, seed=3)
    write_signals(tmp_path / "ref.h5", ref.signals, ref.ids)
    est = ref.signals[:1] + np.random.default_rng(0).normal(0, 0.05, ref.signals[:1].shape).astype(np.float32)
    write_signals(tmp_path / "est.h5", est, ref.ids[:1])
    args = ["snr-check", str(tmp_path / "est.h5"), "--reference", str(tmp_path / "ref.h5"), "-f", "json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = {row["lead"]: row for row in json.loads(r.stdout)}
    assert rows["all"]["n"] == 12 and rows["all"]["mean_db"] > 5   # 1 record × 12 leads, not diluted
    assert "3 of 4 reference record(s) are absent" in r.stderr
    r = runner.invoke(app, [*args, "--score-absent"])
    rows = {row["lead"]: row for row in json.loads(r.stdout)}
    assert rows["all"]["n"] == 48 and rows["all"]["mean_db"] < 0.3 * rows["I"]["mean_db"] * 4


# ---------------------------------------------------------------- item 1: CPU threads

def test_default_threads_leave_busy_cores_alone():
    from ecgscan_cli.threads import default_threads

    assert default_threads(cpus=2, load=1.9) == 1     # busy 2-core machine: one thread, not two
    assert default_threads(cpus=2, load=0.1) == 2
    assert default_threads(cpus=16, load=3.2) == 13
    assert default_threads(cpus=4, load=9.0) == 1


def test_threads_option_reaches_torch_and_blas(tmp_path):
    """`--threads N` on every heavy command; torch started afterwards and BLAS already loaded obey it."""
    import subprocess

    code = ("import os, sys; from ecgscan_cli.threads import set_threads; set_threads(1); import torch;"
            "from threadpoolctl import threadpool_info;"
            "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'],"
            " {i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'})")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[:2] == ["1", "1"] and "{1}" in out.stdout, out.stdout
    for name in ("pretrain", "embed", "probe", "zeroshot", "reconstruct", "benchmark", "synth", "demo", "render"):
        r = runner.invoke(app, [name, "--help"], terminal_width=120)
        assert "--threads" in r.stdout, name
    r = runner.invoke(app, ["synth", "-n", "2", "-o", str(tmp_path / "s.h5"), "--threads", "-1"])
    assert r.exit_code == 2 and not (tmp_path / "s.h5").exists()


# ---------------------------------------------------------------- item 11: png pages on every core

def test_render_with_worker_processes_ends_quietly(random_signals_file, tmp_path):
    """The pool ends its workers with SIGTERM; they inherited the command's SIGTERM handler
    and each printed a traceback (seen once --workers defaulted to the free CPUs)."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "ecgscan_cli", "render", str(random_signals_file), "-o",
                        f"{tmp_path}/pages/", "--dpi", "40", "--workers", "2", "--limit", "4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(list((tmp_path / "pages").glob("*.png"))) == 4


# ---------------------------------------------------------------- item 10: help texts

def test_every_option_has_help_and_the_command_list_is_not_cut():
    import typer.main

    group = typer.main.get_command(app)
    missing = {name: [p.name for p in cmd.params if not getattr(p, "help", None) and not getattr(p, "hidden", False)]
               for name, cmd in group.commands.items() if name != "pretrain"}
    assert not any(missing.values()), missing
    top = runner.invoke(app, ["--help"], terminal_width=80).stdout
    commands = top[top.index("Commands:"):]
    assert "..." not in commands and "demo" in commands
    for name in ("import", "snr-check", "render", "embed", "zeroshot", "reconstruct", "benchmark"):
        usage = runner.invoke(app, [name, "--help"], terminal_width=80).stdout.splitlines()[0]
        assert not any(c.islower() for c in usage.split("[OPTIONS]")[1]), usage   # {FILE}, not {file}


def test_man_page_fits_80_columns_and_readme_installs_completion():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    long = [ln for ln in (repo / "man" / "ecgscan.1").read_text().splitlines() if len(ln) > 80]
    assert not long, long
    assert "--install-completion" in (repo / "README.md").read_text()


# ---------------------------------------------------------------- item 9: SNOMED codes of WFDB `# Dx:` headers

def test_snomed_codes_map_to_builtin_prompt_classes():
    """Before: "no built-in prompt set describes all classes 164889003, ..." for any WFDB data set."""
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.zeroshot import choose_prompts, load_prompts

    codes = ["164889003", "426783006", "164909002", "59118001", "270492004", "284470004", "427172004",
             "429622005", "164931005"]
    name, prompts = choose_prompts(codes)
    assert name == "cpsc2018" and list(prompts) == codes     # every CPSC class, keyed by code
    cpsc = load_prompts("cpsc2018")[1]
    assert prompts["164889003"] == cpsc["AF"] and prompts["17338001" if "17338001" in prompts else "427172004"] == cpsc["PVC"]
    name, prompts = choose_prompts(["426177001", "427084000", "164890007", "164889003", "999999999"])
    csn = load_prompts("csn")[1]
    assert name == "csn" and prompts["164890007"] == csn["AF"] and prompts["164889003"] == csn["AFIB"]
    assert "999999999" not in prompts                         # unknown code: left out, not guessed
    with pytest.raises(EcgscanError, match="SNOMED"):
        choose_prompts(["999999999", "888888888"])


def test_demo_makes_folds_for_wfdb_data_without_them(random_signals_file, tmp_path):
    """Before: `demo --data WFDB_DIR` dead-ended with "need at least 3 folds"."""
    from ecgscan_cli.demo import _subset_signals, choose_folds, has_folds, record_folds
    from ecgscan_cli.formats.signals import SignalsFile

    ids = [f"JS{i:05d}" for i in range(200)]
    folds = record_folds(ids)
    assert set(folds) == set(range(1, 11)) and np.array_equal(folds, record_folds(ids))
    assert np.array_equal(record_folds(ids[::-1])[::-1], folds)          # by record, not by position
    assert not has_folds([-1] * 5) and not has_folds([1, 2, -1]) and has_folds([1, 2, 3])
    sf = SignalsFile(random_signals_file)
    out = _subset_signals(sf, range(len(sf)), tmp_path / "f.h5", folds=record_folds(sf.ids))
    made = SignalsFile(out)
    assert list(made.folds) == list(record_folds(sf.ids)) and made.ids == sf.ids


# ---------------------------------------------------------------- item 6: an honest demo report

def test_demo_report_says_steps_run_budget_and_unlearned_reconstruction():
    from types import SimpleNamespace

    from ecgscan_cli.demo import reconstruction_note, training_steps_text

    cfg = SimpleNamespace(max_steps=600, max_minutes=6.0)
    assert training_steps_text(59, cfg, True) == "59 of 600 planned steps (cut by the 6-minute time budget)"
    assert training_steps_text(600, cfg, False) == "600 steps"
    rows = [{"lead": "I", "mean_db": 0.1}, {"lead": "all", "mean_db": 0.4}]
    assert "not learned" in reconstruction_note(rows)
    assert reconstruction_note([{"lead": "all", "mean_db": 7.5}]) is None


def test_demo_example_augmentations_are_readable():
    """Before: one of the three 'paper' examples (seed 0) was a grey smear."""
    import torch

    from ecgscan_cli.demo import _readable_renders, readability
    from ecgscan_cli.render import render_batch
    from ecgscan_cli.synth import synthesize

    x = torch.from_numpy(synthesize(3, seed=0).signals)
    picked = _readable_renders(x, 128, "paper", 1, render_batch)
    assert np.array_equal(picked, _readable_renders(x, 128, "paper", 1, render_batch))   # deterministic
    clean = render_batch(x, size=128, augment="none").permute(0, 2, 3, 1).numpy()
    gaps = [abs(readability(a) - readability(c)) for a, c in zip(picked, clean)]
    assert max(gaps) < 0.15, gaps            # neither a grey smear nor a binarised extreme
    worst = []                               # what one unselected draw per record can give
    for t in range(6):
        g = torch.Generator().manual_seed(1000 + t)
        draws = render_batch(x, size=128, augment="paper", generator=g).permute(0, 2, 3, 1).numpy()
        worst += [abs(readability(a) - readability(c)) for a, c in zip(draws, clean)]
    assert max(worst) > max(gaps)
