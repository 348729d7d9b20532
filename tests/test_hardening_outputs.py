"""Outputs under faults (issue 15): full disk, --overwrite of foreign things, concurrent
writers, SIGTERM/SIGHUP, stale temporaries, interrupted multi-worker imports."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli import atomic
from ecgscan_cli.atomic import atomic_output, check_output_path, output_kind
from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError, EcgscanFailure

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
WFDB_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    e.pop("ECGSCAN_DEBUG", None)
    return e


def ecgscan(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgscan_cli", *map(str, args)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=kw.pop("timeout", 300), **kw)


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or ".old-" in p.name)


# ------------------------------------------------------------------ 1. full disk

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
/* Writes to files named *.partial-* fail with ENOSPC once FULL_AFTER bytes went there. */
static long long budget = -1, used = 0;
static int partial_fd(int fd) {
    char p[64], t[4096]; snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, t, sizeof t - 1); if (n <= 0) return 0; t[n] = 0;
    return strstr(t, ".partial-") != NULL;
}
static int full(int fd, size_t n) {
    if (budget < 0) { const char *b = getenv("FULL_AFTER"); budget = b ? atoll(b) : (1LL << 62); }
    if (!partial_fd(fd)) return 0;
    if (used + (long long)n > budget) { errno = ENOSPC; return 1; }
    used += n; return 0;
}
ssize_t write(int fd, const void *b, size_t n) {
    static ssize_t (*real)(int, const void *, size_t); if (!real) real = dlsym(RTLD_NEXT, "write");
    if (full(fd, n)) return -1; return real(fd, b, n);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
    static ssize_t (*real)(int, const void *, size_t, off_t); if (!real) real = dlsym(RTLD_NEXT, "pwrite");
    if (full(fd, n)) return -1; return real(fd, b, n, o);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
    static ssize_t (*real)(int, const void *, size_t, off_t); if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    if (full(fd, n)) return -1; return real(fd, b, n, o);
}
"""


@pytest.fixture(scope="module")
def full_disk_shim(tmp_path_factory) -> Path:
    """A preload library that makes the disk 'fill up' under HDF5's own writes (no tmpfs needed)."""
    if not sys.platform.startswith("linux") or shutil.which("gcc") is None:
        pytest.skip("needs Linux and gcc to build the full-disk shim")
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    r = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(d / "shim.so"), str(d / "shim.c"), "-ldl"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot build the full-disk shim: {r.stderr[-300:]}")
    return d / "shim.so"


@pytest.fixture(scope="module")
def wfdb_folder(tmp_path_factory) -> Path:
    """600 WFDB records (one written with wfdb, the rest hard links with their own header)."""
    wfdb = pytest.importorskip("wfdb")
    d = tmp_path_factory.mktemp("wfdb")
    rng = np.random.default_rng(0)
    x = np.round(np.cumsum(rng.normal(0, 0.02, (5000, 12)), axis=0), 3)
    wfdb.wrsamp("r0000", fs=500, units=["mV"] * 12, sig_name=WFDB_NAMES, p_signal=x, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(d))
    _clone_records(d, 600)
    return d


def _clone_records(d: Path, n: int) -> None:
    head = (d / "r0000.hea").read_text()
    for i in range(1, n):
        name = f"r{i:04d}"
        if not (d / f"{name}.dat").exists():
            os.link(d / "r0000.dat", d / f"{name}.dat")
            (d / f"{name}.hea").write_text(head.replace("r0000", name))


@pytest.fixture(scope="module")
def signals_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sig") / "s.h5"
    r = ecgscan("synth", "-n", "40", "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("command", ["synth", "import", "render"])
def test_full_disk_is_one_line_exit_1_and_no_partial(command, full_disk_shim, wfdb_folder, signals_file, tmp_path):
    """HDF5's own writes fail with ENOSPC midway: before, exit 139 (SIGSEGV) after
    thousands of 'Exception ignored in ObjectID.__dealloc__' lines, and the partial stayed."""
    out = tmp_path / "out.h5"
    args = {"synth": ["synth", "-n", "400"], "import": ["import", wfdb_folder, "-j", "1"],
            "render": ["render", signals_file, "--dpi", "50"]}[command]
    e = dict(env(), LD_PRELOAD=str(full_disk_shim), FULL_AFTER="300000")
    r = subprocess.run([sys.executable, "-m", "ecgscan_cli", *map(str, args), "-o", str(out), "-q"],
                       cwd=REPO, env=e, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert r.stderr == f"ecgscan: error: no space left on device writing {out}\n"
    assert list(tmp_path.iterdir()) == []


FAKE_ENOSPC = """
import errno, sys, h5py
calls = [0]
real = h5py.Dataset.__setitem__
def full(self, key, value):
    calls[0] += 1
    if calls[0] > {after}:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, key, value)
h5py.Dataset.__setitem__ = full
sys.argv = ["ecgscan", *sys.argv[1:]]
from ecgscan_cli.cli.app import main
main()
"""


@pytest.mark.parametrize("after", [0, 50])
def test_full_disk_faked_at_the_writer(after, tmp_path):
    """ENOSPC raised by the writer's dataset writes (at once, or after a few records)."""
    out = tmp_path / "s.h5"
    script = tmp_path.parent / f"fake_enospc_{after}.py"
    script.write_text(FAKE_ENOSPC.replace("{after}", str(after)))
    r = subprocess.run([sys.executable, str(script), "synth", "-n", "30", "-o", str(out), "-q"], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert (r.returncode, r.stderr) == (1, f"ecgscan: error: no space left on device writing {out}\n")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_in_the_embeddings_writer(tmp_path, monkeypatch):
    import h5py

    from ecgscan_cli.formats.embeddings import write_embeddings

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.File, "flush", full)
    out = tmp_path / "e.h5"
    with pytest.raises(EcgscanFailure, match=f"^no space left on device writing {out}$"):
        write_embeddings(out, np.zeros((3, 4)), ["a", "b", "c"])
    assert list(tmp_path.iterdir()) == []


def test_disk_full_recognised_through_wrappers():
    assert atomic.is_disk_full(OSError(errno.ENOSPC, "x"))
    assert atomic.is_disk_full(RuntimeError("Can't decrement id ref count (file write failed: ..., errno = 28, "
                                            "error message = 'No space left on device')"))
    assert not atomic.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert atomic.real_name("/d/.x.h5.partial-12-abcdef-0123abcd") == "/d/x.h5"


# ------------------------------------------------------------------ 2. --overwrite replaces only ecgscan's own


def test_render_overwrite_refuses_a_folder_of_unrelated_files(signals_file, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("mine")
    r = run("render", signals_file, "-o", precious, "--format", "png", "--overwrite", "--limit", "1", "--dpi", "40")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "refusing to replace it" in r.stderr and "not an ecgscan render folder" in r.stderr
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"]
    # an earlier render folder (images + sidecars) is replaced
    pages = tmp_path / "pages"
    r = run("render", signals_file, "-o", pages, "--format", "png", "--limit", "2", "--dpi", "40", "-q")
    assert r.exit_code == 0, r.output
    assert output_kind(pages) == "render"
    r = run("render", signals_file, "-o", pages, "--format", "png", "--limit", "1", "--dpi", "40", "--overwrite", "-q")
    assert r.exit_code == 0, r.output
    assert len(list(pages.glob("*.png"))) == 1 and temporaries(tmp_path) == []


def test_embed_overwrite_refuses_a_checkpoint_folder(signals_file, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    (run_dir / "best" / "ecgscan_checkpoint.json").write_text(json.dumps({"format": "ecgscan-checkpoint/1"}))
    r = run("embed", run_dir, signals_file, "-o", run_dir, "--overwrite")
    assert r.exit_code == 2 and "is an ecgscan run folder, not an ecgscan embeddings file" in r.stderr
    assert (run_dir / "best" / "ecgscan_checkpoint.json").is_file() and run_dir.is_dir()
    assert output_kind(run_dir / "best") == "checkpoint"


def test_recognising_a_run_folder_does_not_import_torch(tmp_path):
    """The output check runs before any work: it must stay cheap (torch costs ~12 s)."""
    (tmp_path / "run" / "last").mkdir(parents=True)
    (tmp_path / "run" / "last" / "ecgscan_checkpoint.json").write_text('{"format": "ecgscan-checkpoint/1"}')
    code = ("import sys; from ecgscan_cli.atomic import output_kind; "
            f"print(output_kind({str(tmp_path / 'run')!r}), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True)
    assert r.stdout.split() == ["run", "False"], r.stderr


def test_h5_overwrite_needs_an_ecgscan_file_of_the_same_kind(signals_file, tmp_path):
    import h5py

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    text = tmp_path / "notes.h5"
    text.write_text("mine")
    images = tmp_path / "images.h5"
    assert run("render", signals_file, "-o", images, "--size", "32", "--limit", "1", "-q").exit_code == 0
    for target, why in ((foreign, "a file ecgscan did not write"), (text, "a plain file"),
                        (images, "an ecgscan images file")):
        before = target.read_bytes()
        r = run("synth", "-n", "2", "-o", target, "--overwrite")
        assert r.exit_code == 2 and f"is {why}, not an ecgscan signals file" in r.stderr, r.stderr
        assert target.read_bytes() == before
    r = run("snr-check", signals_file, "--per-record", signals_file, "--overwrite")
    assert r.exit_code == 2 and "is an ecgscan signals file, not a plain file" in r.stderr
    assert run("synth", "-n", "2", "-o", signals_file.parent / "again.h5", "-q").exit_code == 0
    assert run("synth", "-n", "3", "-o", signals_file.parent / "again.h5", "--overwrite", "-q").exit_code == 0


def test_marked_folders_are_replaceable_and_unmarked_ones_are_not(tmp_path):
    for kind in atomic.MARKED_KINDS:
        out = tmp_path / kind
        with atomic_output(out, directory=True, kind=kind) as tmp:
            (tmp / "a.txt").write_text("1")
        assert output_kind(out) == kind
        check_output_path(out, overwrite=True, kind=kind)
        other = next(k for k in atomic.MARKED_KINDS if k != kind)
        with pytest.raises(EcgscanError, match="refusing to replace it"):
            check_output_path(out, overwrite=True, kind=other)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.png").write_bytes(b"")
    with pytest.raises(EcgscanError, match="is a folder, not an ecgscan overlay folder"):
        check_output_path(plain, overwrite=True, kind="overlays")
    (tmp_path / "empty").mkdir()
    check_output_path(tmp_path / "empty", overwrite=True, kind="wfdb")   # nothing to lose


# ------------------------------------------------------------------ 3. concurrent --overwrite

CONCURRENT = """
import sys
from ecgscan_cli.atomic import atomic_output
out, who = sys.argv[1], sys.argv[2]
for i in range(int(sys.argv[3])):
    with atomic_output(out, overwrite=True, directory=True, kind="demo") as tmp:
        (tmp / "a.txt").write_text(who)
        (tmp / "b.txt").write_text(who)
"""


def test_concurrent_overwrites_all_succeed_and_leave_no_temporaries(tmp_path):
    """Before: 12 of 120 concurrent swaps failed (the folder moved away under them) and
    left .partial-*/.old-* folders."""
    out = tmp_path / "report"
    with atomic_output(out, directory=True, kind="demo") as tmp:
        (tmp / "a.txt").write_text("0")
        (tmp / "b.txt").write_text("0")
    script = tmp_path.parent / "concurrent_writer.py"
    script.write_text(CONCURRENT)
    procs = [subprocess.Popen([sys.executable, str(script), str(out), str(k), "40"], env=env(),
                              stderr=subprocess.PIPE, text=True) for k in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert temporaries(tmp_path) == []
    a, b = (out / "a.txt").read_text(), (out / "b.txt").read_text()
    assert a == b and a in "0123"   # one writer's complete output


def test_failed_swap_puts_the_previous_output_back(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    with atomic_output(out, directory=True, kind="benchmark") as tmp:
        (tmp / "results.json").write_text("old")
    real = os.rename

    def failing(src, dst):
        if ".partial-" in str(src):
            raise OSError(errno.EACCES, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "rename", failing)
    with pytest.raises(OSError):
        with atomic_output(out, overwrite=True, directory=True, kind="benchmark") as tmp:
            (tmp / "results.json").write_text("new")
    assert (out / "results.json").read_text() == "old" and temporaries(tmp_path) == []


# ------------------------------------------------------------------ 4. SIGTERM / SIGHUP / stale temporaries


def _wait_for(pred, timeout=60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "ecgscan: interrupted"),
                                           (signal.SIGTERM, 143, "ecgscan: stopped by SIGTERM"),
                                           (signal.SIGHUP, 129, "ecgscan: stopped by SIGHUP")])
def test_signals_stop_like_ctrl_c_and_remove_the_partial(sig, code, line, tmp_path):
    """Before: SIGTERM and SIGHUP killed the process silently and left the .partial-* file."""
    out = tmp_path / "s.h5"
    p = subprocess.Popen([sys.executable, "-m", "ecgscan_cli", "synth", "-n", "100000", "-o", str(out), "-q"],
                         cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: temporaries(tmp_path)), "synth never started writing"
        time.sleep(0.3)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:        # a failed test must not leave a 100,000-record synth running
            p.kill()
            p.communicate()
    assert (p.returncode, err) == (code, line + "\n")
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed_on_start(tmp_path):
    host = atomic._HOST
    dead, live = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".s.h5.partial-{dead}-{host}-0123abcd"
    live_file = tmp_path / f".s.h5.partial-{live}-{host}-4567abcd"
    other_host = tmp_path / f".s.h5.partial-{dead}-ffffff-89abcdef"
    stale_dir = tmp_path / f".pages.partial-{dead}-{host}-0123abcd"
    stale_old = tmp_path / f".pages.old-{dead}-{host}-4567abcd"
    for f in (stale_file, live_file, other_host):
        f.write_bytes(b"x" * 10)
    stale_dir.mkdir()
    stale_old.mkdir()
    (stale_old / "000000_a.json").write_text("previous")
    r = ecgscan("synth", "-n", "2", "-o", tmp_path / "s.h5", "-q")
    assert r.returncode == 0, r.stderr
    assert not stale_file.exists() and live_file.exists() and other_host.exists()
    # a swap that died half-way: the previous output (.old-*) comes back under its name
    assert atomic.remove_stale_temporaries(tmp_path / "pages") == [stale_old, stale_dir]
    assert not stale_dir.exists() and not stale_old.exists()
    assert (tmp_path / "pages" / "000000_a.json").read_text() == "previous"


# ------------------------------------------------------------------ 5. multi-worker import interrupted


def _group(pgid: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


@pytest.fixture(scope="module")
def big_wfdb_folder(wfdb_folder) -> Path:
    _clone_records(wfdb_folder, 4000)
    return wfdb_folder


@pytest.mark.parametrize("how,delay", [("ctrl-c", 0.0), ("ctrl-c", 0.4), ("ctrl-c", 1.0), ("sigterm", 1.0),
                                       ("sigkill", 1.0)])
def test_multi_worker_import_stops_promptly_and_leaves_no_process(how, delay, big_wfdb_folder, tmp_path):
    """Before: Ctrl-C hung or printed tracebacks (from workers still starting, or
    BrokenProcessPool); a killed parent left its workers running for minutes.
    ``delay`` after the workers appear: 0 s (still starting), 0.4 s (importing), 1 s (reading)."""
    pytest.importorskip("psutil")
    import psutil

    out = tmp_path / "out.h5"
    p = subprocess.Popen([sys.executable, "-m", "ecgscan_cli", "import", str(big_wfdb_folder), "-o", str(out),
                          "-j", "2", "-q"], cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        assert _wait_for(lambda: len(psutil.Process(p.pid).children()) >= 2 and temporaries(tmp_path)), \
            "the import never started its workers"
        time.sleep(delay)
        assert p.poll() is None, "the import finished before it could be interrupted"
        t0 = time.time()
        if how == "ctrl-c":
            os.killpg(p.pid, signal.SIGINT)   # what a terminal does: the whole foreground group
        elif how == "sigterm":
            p.send_signal(signal.SIGTERM)
        else:
            p.kill()
        _, err = p.communicate(timeout=60)
        took = time.time() - t0
        assert _wait_for(lambda: not _group(p.pid), timeout=10), f"processes left: {_group(p.pid)}"
        gone = time.time() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        for pid in _group(p.pid):
            os.kill(pid, signal.SIGKILL)
    if how == "sigkill":
        assert p.returncode == -signal.SIGKILL
    else:
        assert (p.returncode, err) == {"ctrl-c": (130, "ecgscan: interrupted\n"),
                                       "sigterm": (143, "ecgscan: stopped by SIGTERM\n")}[how]
    assert took < 10 and gone < 10, (took, gone)
    if how != "sigkill":
        assert list(tmp_path.iterdir()) == []


def test_a_sigterm_swallowed_by_a_weakref_callback_is_delivered_again():
    """#15.6: h5py frees objects through weakref callbacks, where Python swallows an exception
    ("Exception ignored in ..."); a SIGTERM landing there must still stop the command."""
    import os
    import signal
    import time
    import weakref

    from ecgscan_cli.cli.common import terminations_as_interrupts
    from ecgscan_cli.errors import Terminated

    class Obj:
        pass

    started = time.monotonic()
    with pytest.raises(Terminated) as caught:
        with terminations_as_interrupts():
            obj = Obj()
            ref = weakref.ref(obj, lambda r: os.kill(os.getpid(), signal.SIGTERM))  # noqa: F841
            del obj
            while time.monotonic() - started < 5:
                time.sleep(0.01)
    assert caught.value.signum == signal.SIGTERM
    assert time.monotonic() - started < 2
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN   # handlers restored, not left ignored
