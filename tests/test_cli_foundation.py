"""CLI conventions every command follows: help, version, exit codes, errors, outputs, start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from ecgscan_cli import __version__
from ecgscan_cli.cli.app import app
from ecgscan_cli.cli.common import command
from ecgscan_cli.errors import EcgscanError, EcgscanFailure

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
COMMANDS = list(typer.main.get_command(app).commands)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def py(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=full_env,
                          timeout=timeout)


def test_expected_commands_registered():
    for name in ("import", "synth", "snr-check", "render", "pretrain", "embed", "probe", "zeroshot",
                 "reconstruct", "demo"):
        assert name in COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    r = run(name, "--help")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"Usage: ecgscan {name}") or f"ecgscan {name}" in r.stdout
    assert "--quiet" in r.stdout  # every command takes --quiet
    r = run(name, "-h")
    assert r.exit_code == 0


def test_root_help_and_version():
    r = run("--help")
    assert r.exit_code == 0 and all(c in r.stdout for c in ("import", "synth", "snr-check"))
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"ecgscan {__version__}"
    r = run()  # no arguments: help, usage exit code
    assert r.exit_code in (0, 2) and "Usage" in r.output


def test_python_dash_m():
    r = py("-m", "ecgscan_cli", "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"ecgscan {__version__}"


HEAVY = ("torch", "transformers", "open_clip", "torchvision", "peft")
PROBE = (
    "import sys, time\n"
    "t0 = time.perf_counter()\n"
    "from ecgscan_cli.cli.app import main\n"
    "sys.argv = ['ecgscan', '--help']\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "import json\n"
    "print(json.dumps({'heavy': [m for m in %r if m in sys.modules], 'seconds': time.perf_counter() - t0}),"
    " file=sys.stderr)\n" % (HEAVY,)
)


def test_help_is_light_and_fast():
    """`ecgscan --help` imports no deep-learning stack and starts in well under a second."""
    result = py("-c", PROBE)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stderr.strip().splitlines()[-1])
    assert info["heavy"] == [], f"--help imported {info['heavy']}"
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = py("-m", "ecgscan_cli", "--help")
        walls.append(time.perf_counter() - t0)
        assert r.returncode == 0
    assert min(walls) < 1.0, f"ecgscan --help took {min(walls):.2f} s (best of 3)"


# ---------------------------------------------------------------- exit codes and errors


def _tiny_app(exc: BaseException | None):
    tiny = typer.Typer()

    @tiny.command()
    @command
    def go(quiet: bool = False) -> None:
        if exc is not None:
            raise exc
        typer.echo("ok")

    return tiny


@pytest.mark.parametrize("exc, code", [
    (None, 0), (EcgscanError("bad input here"), 2), (EcgscanFailure("the job failed"), 1),
    (KeyboardInterrupt(), 130), (PermissionError(13, "Permission denied", "/x"), 1),
])
def test_command_decorator_exit_codes(exc, code):
    r = runner.invoke(_tiny_app(exc), [])
    assert r.exit_code == code
    if exc is not None and code in (1, 2):
        assert r.stderr.startswith("ecgscan: error: ") and len(r.stderr.strip().splitlines()) == 1
        assert "Traceback" not in r.output


def test_debug_env_shows_traceback():
    r = runner.invoke(_tiny_app(EcgscanError("boom")), [], env={"ECGSCAN_DEBUG": "1"})
    assert isinstance(r.exception, EcgscanError)


def test_usage_errors_exit_2():
    assert run("no-such-command").exit_code == 2
    assert run("synth", "--no-such-option").exit_code == 2
    r = run("synth", "-n", "0", "-o", "x.h5")  # below the option's minimum
    assert r.exit_code == 2
    r = run("snr-check")  # missing argument
    assert r.exit_code == 2


def test_errors_are_one_line_in_a_real_process(tmp_path):
    (tmp_path / "bad.h5").write_text("not hdf5")
    r = py("-m", "ecgscan_cli", "snr-check", str(tmp_path / "bad.h5"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"ecgscan: error: {tmp_path / 'bad.h5'} is not an HDF5 file "
                                             "(expected an ecgscan signals file)"]
    assert r.stdout == ""


def test_usage_errors_are_one_line_in_a_real_process():
    for args, said in ((["render", "--bogus", "x"], "No such option: --bogus (see 'ecgscan render --help')"),
                       (["snr-check"], "Missing argument"),
                       (["synth", "-n", "0", "-o", "x.h5"], "Invalid value for '-n'"),
                       (["no-such-command"], "No such command 'no-such-command'")):
        r = py("-m", "ecgscan_cli", *args)
        assert r.returncode == 2, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ecgscan: error: ") and said in lines[0], r.stderr
        assert r.stdout == ""
    r = py("-m", "ecgscan_cli")  # no arguments: the help text, as before
    assert r.returncode == 2 and "Commands:" in r.stdout
    r = py("-m", "ecgscan_cli", "--version")
    assert r.returncode == 0 and r.stdout.startswith("ecgscan ")


# ---------------------------------------------------------------- outputs


def test_synth_prints_path_and_refuses_existing_output(tmp_path):
    out = tmp_path / "s.h5"
    r = run("synth", "-n", "3", "-o", out, "--seed", "1", "-q")
    assert r.exit_code == 0 and r.stdout == f"{out}\n" and r.stderr == ""
    before = out.read_bytes()
    r = run("synth", "-n", "3", "-o", out)
    assert r.exit_code == 2 and "exists" in r.stderr and out.read_bytes() == before
    r = run("synth", "-n", "2", "-o", out, "--overwrite", "-q")
    assert r.exit_code == 0
    from ecgscan_cli.formats import SignalsFile

    assert len(SignalsFile(out)) == 2
    r = run("synth", "-n", "2", "-o", tmp_path / "no" / "s.h5")
    assert r.exit_code == 2 and "output folder does not exist" in r.stderr


def test_interrupted_write_leaves_nothing(tmp_path):
    from ecgscan_cli.synth import write_synth

    def interrupt(_n):
        raise KeyboardInterrupt

    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        write_synth(out, 20, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    # an existing file survives an interrupted --overwrite untouched
    write_synth(out, 2)
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_synth(out, 20, overwrite=True, progress=interrupt)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.h5"]


def test_killed_process_leaves_no_finished_looking_file(tmp_path):
    """SIGKILL mid-write: at most a .partial-* file, never the output name."""
    out = tmp_path / "big.h5"
    proc = subprocess.Popen([sys.executable, "-m", "ecgscan_cli", "synth", "-n", "5000", "-o", str(out), "-q"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and not any(".partial-" in p.name for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not out.exists()
