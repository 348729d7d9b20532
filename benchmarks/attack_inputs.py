#!/usr/bin/env python
"""Hostile inputs, bad arguments, overwrite traps and interruptions against the `ecgscan` CLI
(issue 15): how many are refused in one line, and how many end in a traceback, a partial
output or lost data, a hang, a silent acceptance or a crash.

    python benchmarks/attack_inputs.py [--ecgscan CMD] [--only SUBSTR] [--skip-slow] [--keep DIR]

CMD is the command line that starts ecgscan (default: ``ecgscan``; split like a shell does),
so an older installation can be measured too, e.g.
``PYTHONPATH=/tmp/before python benchmarks/attack_inputs.py --ecgscan "python -m ecgscan_cli"``.

Every case runs in its own folder under a temporary folder, as a subprocess in its own
session (so a hang or a left-over worker can be ended as a group), with a timeout, a
memory limit (the declared-size bombs would otherwise take the machine's memory) and an
exclusive ``flock`` on ``--lock`` held for that case only (other jobs on the machine are not
starved). The inputs every case shares (a synthetic signals file, a tiny pretraining run,
its embeddings, a folder of WFDB records) are made first with the CMD under test.

Outcome of a case, the first that applies:
  hang           it ran past its timeout, or left processes running after it ended
  crash          killed by a signal we did not send, or exit 139
  traceback      "Traceback" on stderr
  partial/lost   a ``.partial``/``.old-`` name left, the output left after a failure, or
                 something that was there before (an unrelated folder, a run) changed or gone
  silent         exit 0 where a refusal was expected, or a file outside the input was read
  other          a refusal of more than one line, raw terminal escapes on stderr, a signal
                 not handled (the process died of it), a wrong exit code
  ok             refused in one line (non-zero exit, exactly one non-empty stderr line);
                 for a bad member of a folder: skipped (exit 0, the member not read);
                 for an interruption: exit 128+N, one line, nothing left behind
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

STR_DTYPE = h5py.string_dtype("utf-8")
OUTCOMES = ["ok", "traceback", "partial/lost", "hang", "silent", "crash", "other"]
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
MEMORY_LIMIT = 6 * 2 ** 30          # address space per case: the bombs fail instead of filling the RAM
ESCAPE_NAME = "\x1b]0;owned\x07\x1b[31mred.h5"
PRETRAIN_FAST = ["--preset", "tiny", "--text-model", "tiny", "--max-steps", "2", "--batch-size", "8",
                 "--set", "teacher_steps=2", "--set", "log_every=1", "--set", "num_workers=0", "--device", "cpu", "-q"]


# ------------------------------------------------------------------------------ plumbing


@dataclass
class Plan:
    """What one case runs and how its result is judged."""
    args: list[str]
    expect: str = "refuse"                      # refuse | skip | stop
    output: Path | None = None                  # must not exist after a failure
    check: Callable[[subprocess.CompletedProcess], list[str]] | None = None   # → problems "kind: what"
    interrupt: signal.Signals | None = None     # sent once the command has started writing
    to_group: bool = False                      # send it to the whole process group (a terminal's Ctrl-C)
    started: Callable[[], bool] | None = None
    timeout: float = 60.0


@dataclass
class Case:
    name: str
    category: str
    make: Callable[[Path, "Ctx"], Plan]
    needs: tuple[str, ...] = ()
    slow: bool = False


@dataclass
class Result:
    case: Case
    outcome: str
    seconds: float
    code: int | None
    stderr: str
    problems: list[str] = field(default_factory=list)


CASES: list[Case] = []


def case(name: str, category: str, needs: tuple[str, ...] = (), slow: bool = False):
    def register(fn):
        CASES.append(Case(name, category, fn, needs, slow))
        return fn
    return register


@dataclass
class Ctx:
    cmd: list[str]
    root: Path
    lock: str
    signals: Path | None = None     # 40 synthetic records, folds 1-10
    run: Path | None = None         # a tiny pretraining run
    embeddings: Path | None = None  # its embeddings of `signals`
    wfdb: Path | None = None        # 2,000 WFDB records (hard links)
    setup_notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def cpu_lock(path: str):
    if not path:
        yield
        return
    with open(path, "a") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def child_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="100")
    env.pop("ECGSCAN_DEBUG", None)
    return env


def group_members(pgid: int) -> list[int]:
    """Live processes of the session we started (read from /proc: no psutil needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def kill_members(pgid: int) -> None:
    for pid in group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial" in p.name or ".old-" in p.name)


def non_empty_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def execute(ctx: Ctx, args: list[str], cwd: Path, timeout: float, plan: Plan | None = None):
    """→ (CompletedProcess or None on a hang, seconds, processes left)."""
    proc = subprocess.Popen([*ctx.cmd, *args], cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="backslashreplace",
                            start_new_session=True, preexec_fn=limit_memory)
    t0 = time.monotonic()
    hung = False
    try:
        if plan is not None and plan.interrupt is not None:
            deadline = t0 + 30
            while time.monotonic() < deadline and proc.poll() is None and not plan.started():
                time.sleep(0.05)
            time.sleep(1.0)
            if proc.poll() is None:
                if plan.to_group:
                    os.killpg(proc.pid, plan.interrupt)
                else:
                    proc.send_signal(plan.interrupt)
        out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        hung = True
        kill_members(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        out, err = proc.communicate()
    seconds = time.monotonic() - t0
    left: list[int] = []
    end = time.monotonic() + 10
    while time.monotonic() < end:
        left = group_members(proc.pid)
        if not left:
            break
        time.sleep(0.2)
    if left:
        kill_members(proc.pid)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return (None if hung else done), seconds, left, done


def run_case(c: Case, ctx: Ctx) -> Result:
    d = ctx.root / "cases" / c.name
    d.mkdir(parents=True)
    missing = [n for n in c.needs if getattr(ctx, n) is None]
    if missing:
        return Result(c, "other", 0.0, None, "", [f"setup: {', '.join(missing)} could not be made"])
    plan = c.make(d, ctx)
    with cpu_lock(ctx.lock):
        proc, seconds, left, raw = execute(ctx, plan.args, d, plan.timeout, plan)
    problems: list[str] = []
    if proc is None:
        problems.append(f"hang: still running after {plan.timeout:.0f} s")
    if left:
        problems.append(f"hang: {len(left)} process(es) left running after the command ended")
    code = raw.returncode
    sent = -plan.interrupt if plan.interrupt is not None else None
    if proc is not None:
        if code is not None and (code == 139 or (code < 0 and code != sent)):
            problems.append(f"crash: exit {code}")
        if code == sent:
            problems.append(f"other: died of the signal {plan.interrupt.name} (not handled)")
    if "Traceback" in raw.stderr:
        problems.append("traceback")
    tmp = temporaries(d)
    if tmp:
        problems.append(f"partial/lost: left {', '.join(tmp[:3])}")
    if proc is not None and code != 0 and plan.output is not None and plan.output.exists():
        problems.append(f"partial/lost: the output {plan.output.name} exists after the failure")
    if proc is not None:
        if plan.check is not None:
            problems += plan.check(proc)
        lines = non_empty_lines(proc.stderr)
        if "\x1b" in proc.stderr or "\x07" in proc.stderr:
            problems.append("other: raw terminal escapes on stderr")
        if plan.expect == "refuse":
            if code == 0:
                problems.append("silent: exit 0")
            elif len(lines) != 1:
                problems.append(f"other: refusal of {len(lines)} stderr lines")
        elif plan.expect == "skip":
            if code != 0 and len(lines) != 1:
                problems.append(f"other: exit {code} with {len(lines)} stderr lines")
        elif plan.expect == "stop":
            want = 128 + plan.interrupt
            if code == 0:
                problems.append("other: finished before it could be interrupted")
            elif code != want and code != sent:
                problems.append(f"other: exit {code}, expected {want}")
            if code == want and len(lines) != 1:
                problems.append(f"other: {len(lines)} stderr lines")
    kinds = {p.split(":")[0] for p in problems}
    outcome = next((k for k in ["hang", "crash", "traceback", "partial/lost", "silent", "other"] if k in kinds), "ok")
    return Result(c, outcome, seconds, code, raw.stderr, problems)


# ------------------------------------------------------------------------------ shared inputs


def setup(ctx: Ctx, want: set[str]) -> None:
    base = ctx.root / "shared"
    base.mkdir()

    def step(what: str, args: list[str], timeout: float = 300) -> bool:
        with cpu_lock(ctx.lock):
            proc, seconds, _, raw = execute(ctx, args, base, timeout)
        ok = proc is not None and proc.returncode == 0
        ctx.setup_notes.append(f"setup {what}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s")
        if not ok:
            ctx.setup_notes.append("  " + " | ".join(non_empty_lines(raw.stderr)[-3:]))
        return ok

    if step("signals (synth -n 40)", ["synth", "-n", "40", "-o", str(base / "signals.h5"), "-q"]):
        ctx.signals = base / "signals.h5"
    if "run" in want and ctx.signals and step("run (tiny pretrain)", ["pretrain", str(ctx.signals), "-o",
                                                                      str(base / "run"), *PRETRAIN_FAST], 600):
        ctx.run = base / "run"
    if "embeddings" in want and ctx.run and step("embeddings", ["embed", str(ctx.run), str(ctx.signals), "-o",
                                                                str(base / "emb.h5"), "--device", "cpu", "-q"]):
        ctx.embeddings = base / "emb.h5"
    if "wfdb" in want:
        ctx.wfdb = wfdb_folder(base / "wfdb", 2000)


def wfdb_record(folder: Path, name: str, seconds: float = 10.0) -> Path:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 500)) / 500
    sig = np.stack([0.5 * np.sin(2 * np.pi * (1 + k / 10) * t) for k in range(12)], axis=1)
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=sig, fmt=["16"] * 12,
                write_dir=str(folder))
    return folder / f"{name}.hea"


def wfdb_folder(folder: Path, n: int) -> Path:
    """n records: one written by wfdb, the others hard links with their own header."""
    wfdb_record(folder, "r0000")
    head = (folder / "r0000.hea").read_text()
    for i in range(1, n):
        os.link(folder / "r0000.dat", folder / f"r{i:04d}.dat")
        (folder / f"r{i:04d}.hea").write_text(head.replace("r0000", f"r{i:04d}"))
    return folder


def signals_copy(d: Path, ctx: Ctx, name: str = "s.h5") -> Path:
    path = d / name
    shutil.copy(ctx.signals, path)
    return path


def replace_dataset(path: Path, name: str, **create_kw) -> None:
    with h5py.File(path, "a") as f:
        attrs = dict(f[name].attrs) if name in f else {}
        if name in f:
            del f[name]
        ds = f.create_dataset(name, **create_kw)
        for k, v in attrs.items():
            ds.attrs[k] = v


def images_file(path: Path, *, shape=(3, 64, 64, 3), ids=None, dtype="uint8", data=None, chunks=True) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["ecgscan_format"] = "ecgscan-images/1"
        if data is not None:
            f.create_dataset("image", data=data, chunks=(1, *data.shape[1:]))
        else:
            f.create_dataset("image", shape=shape, dtype=dtype,
                             chunks=(1, min(shape[1], 1000) or None, min(shape[2], 1000) or None, shape[3])
                             if chunks and shape[1] and shape[2] else None, compression="gzip" if chunks else None)
        n = (data.shape[0] if data is not None else shape[0]) if ids is None else None
        f.create_dataset("id", data=np.array(ids if ids is not None else [f"r{i}" for i in range(n)], dtype=object),
                         dtype=STR_DTYPE)
    return path


def ids_of(path: Path) -> list[str]:
    try:
        with h5py.File(path, "r") as f:
            return [x.decode() if isinstance(x, bytes) else str(x) for x in f["id"][:]]
    except (OSError, KeyError):
        return []


def snr(path) -> list[str]:
    return ["snr-check", str(path), "-q"]


def embed(ctx: Ctx, inp: Path, out: Path, *extra) -> list[str]:
    return ["embed", str(ctx.run), str(inp), "-o", str(out), "--device", "cpu", "-q", *extra]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def unchanged(folder: Path, what: str):
    before = snapshot(folder) if folder.is_dir() else None
    data = folder.read_bytes() if folder.is_file() else None

    def check(proc) -> list[str]:
        if before is not None and (not folder.is_dir() or snapshot(folder) != before):
            return [f"partial/lost: {what} changed or gone"]
        if data is not None and (not folder.is_file() or folder.read_bytes() != data):
            return [f"partial/lost: {what} changed or gone"]
        return []
    return check


# ------------------------------------------------------------------------------ item 7: declared sizes


@case("sig-declares-2M-unwritten-records", "declared size", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    n = 2_000_000
    replace_dataset(p, "signal", shape=(n, 12, 5000), dtype="int16", chunks=(1, 12, 5000), compression="gzip")
    replace_dataset(p, "id", shape=(n,), dtype=STR_DTYPE, chunks=(1024,))
    return Plan(snr(p))


@case("sig-id-declares-1e9-records", "declared size", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    replace_dataset(p, "id", shape=(10 ** 9,), maxshape=(None,), dtype=STR_DTYPE, chunks=(1024,))
    return Plan(snr(p))


@case("sig-1e9-records-render", "declared size", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    n = 10 ** 9
    replace_dataset(p, "signal", shape=(n, 12, 5000), dtype="int16", chunks=(1, 12, 5000), compression="gzip")
    replace_dataset(p, "id", shape=(n,), dtype=STR_DTYPE, chunks=(1024,))
    return Plan(["render", str(p), "-o", str(d / "img.h5"), "--size", "64", "-q"], output=d / "img.h5")


@case("img-declares-12x60000x60000", "declared size", ("run",))
def _(d, ctx):
    p = images_file(d / "i.h5", shape=(12, 60000, 60000, 3))
    return Plan(embed(ctx, p, d / "e.h5"), output=d / "e.h5", timeout=120)


@case("img-unwritten-4000x4000", "declared size", ("run",))
def _(d, ctx):
    p = images_file(d / "i.h5", shape=(12, 4000, 4000, 3))
    return Plan(embed(ctx, p, d / "e.h5"), output=d / "e.h5", timeout=120)


@case("sig-external-storage-outside-file", "declared size", ("signals",))
def _(d, ctx):
    secret = d / "secret.bin"
    secret.write_bytes(b"\x01\x00" * 60000 * 40)
    p = signals_copy(d, ctx)
    with h5py.File(p, "a") as f:
        attrs = dict(f["signal"].attrs)
        del f["signal"]
        ds = f.create_dataset("signal", shape=(40, 12, 5000), dtype="<i2",
                              external=[(str(secret), 0, 40 * 12 * 5000 * 2)])
        for k, v in attrs.items():
            ds.attrs[k] = v
    return Plan(snr(p))


# ------------------------------------------------------------------------------ item 10/11: malformed files


def _fs(value):
    def make(d, ctx):
        p = signals_copy(d, ctx)
        with h5py.File(p, "a") as f:
            f["signal"].attrs["fs"] = value
        return Plan(snr(p))
    return make


for _label, _value in (("0", 0.0), ("nan", float("nan")), ("inf", float("inf")), ("string", "fast"),
                       ("negative", -500.0)):
    case(f"sig-fs-{_label}", "malformed file", ("signals",))(_fs(_value))


@case("sig-signal-of-strings", "malformed file", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    replace_dataset(p, "signal", data=np.array([[["x"] * 10] * 12] * 40, dtype=object), dtype=STR_DTYPE)
    return Plan(snr(p))


@case("sig-id-shorter-than-n", "malformed file", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    replace_dataset(p, "id", data=np.array(["r0", "r1"], dtype=object), dtype=STR_DTYPE)
    return Plan(snr(p))


@case("sig-label-wrong-rows", "malformed file", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    replace_dataset(p, "label", data=np.ones((5, 6), np.uint8))
    return Plan(["render", str(p), "-o", str(d / "img.h5"), "--size", "64", "--limit", "2", "-q"], output=d / "img.h5")


@case("sig-zero-records", "malformed file", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    with h5py.File(p, "a") as f:
        for name in ("signal", "id", "label", "fold", "report"):
            if name in f:
                f[name].resize(0, axis=0)
    return Plan(snr(p))


@case("sig-not-hdf5", "malformed file")
def _(d, ctx):
    p = d / "s.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(4000))
    return Plan(snr(p))


@case("img-zero-by-zero", "malformed file", ("run",))
def _(d, ctx):
    p = images_file(d / "i.h5", shape=(2, 0, 0, 3), chunks=False)
    return Plan(embed(ctx, p, d / "e.h5"), output=d / "e.h5", timeout=120)


@case("img-id-shorter-than-n", "malformed file", ("run",))
def _(d, ctx):
    p = images_file(d / "i.h5", data=np.full((12, 64, 64, 3), 255, np.uint8), ids=["only-one"])
    return Plan(embed(ctx, p, d / "e.h5"), output=d / "e.h5", timeout=120)


@case("img-float-out-of-range", "malformed file", ("run",))
def _(d, ctx):
    p = images_file(d / "i.h5", data=np.full((2, 64, 64, 3), 200.0, np.float32), ids=["a", "b"])
    return Plan(embed(ctx, p, d / "e.h5"), output=d / "e.h5", timeout=120)


@case("ckpt-model-config-embed-dim-big", "malformed file", ("run",))
def _(d, ctx):
    run = d / "run"
    shutil.copytree(ctx.run, run)
    meta_path = run / "best" / "ecgscan_checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["model_config"]["embed_dim"] = "big"
    meta_path.write_text(json.dumps(meta))
    return Plan(["embed", str(run / "best"), str(ctx.signals), "-o", str(d / "e.h5"), "--device", "cpu", "-q"],
                output=d / "e.h5", timeout=120)


@case("run-json-invalid-on-resume", "malformed file", ("run",), slow=True)
def _(d, ctx):
    run = d / "run"
    shutil.copytree(ctx.run, run)
    (run / "run.json").write_text("{not json")
    return Plan(["pretrain", str(ctx.signals), "-o", str(run), "--resume", "--device", "cpu", "-q"], timeout=180)


# ------------------------------------------------------------------------------ items 8, 9: WFDB and special files


def _outside(absolute: bool):
    def make(d, ctx):
        folder = d / "db"
        wfdb_record(folder, "good")
        bad = wfdb_record(folder, "bad")
        outside = d / "outside.dat"
        (folder / "bad.dat").rename(outside)
        target = str(outside) if absolute else "../outside.dat"
        lines = bad.read_text().splitlines()
        bad.write_text("\n".join([lines[0]] + [ln.replace("bad.dat", target, 1) for ln in lines[1:]]) + "\n")
        out = d / "out.h5"

        def check(proc):
            return ["silent: read the signal file outside the folder"] if "bad" in ids_of(out) else []
        return Plan(["import", str(folder), "-o", str(out), "--labels", "none", "-j", "1", "-q"], expect="skip",
                    check=check)
    return make


case("wfdb-header-names-../outside.dat", "WFDB header")(_outside(False))
case("wfdb-header-names-absolute-path", "WFDB header")(_outside(True))


@case("wfdb-header-names-/etc/passwd", "WFDB header")
def _(d, ctx):
    folder = d / "db"
    wfdb_record(folder, "good")
    bad = wfdb_record(folder, "bad")
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([lines[0]] + [ln.replace("bad.dat", "/etc/passwd", 1) for ln in lines[1:]]) + "\n")
    out = d / "out.h5"

    def check(proc):
        return ["silent: read /etc/passwd as a signal"] if "bad" in ids_of(out) else []
    return Plan(["import", str(folder), "-o", str(out), "--labels", "none", "-j", "1", "-q"], expect="skip",
                check=check)


@case("fifo-x.hea-import", "special file")
def _(d, ctx):
    folder = d / "db"
    wfdb_record(folder, "good")
    os.mkfifo(folder / "x.hea")
    return Plan(["import", str(folder), "-o", str(d / "out.h5"), "--labels", "none", "-j", "1", "-q"], expect="skip",
                timeout=30)


@case("fifo-x.hea-snr-check", "special file")
def _(d, ctx):
    folder = d / "db"
    wfdb_record(folder, "good")
    os.mkfifo(folder / "x.hea")
    return Plan(["snr-check", str(folder), "-q"], expect="skip", timeout=30)


@case("fifo-signals-file", "special file")
def _(d, ctx):
    os.mkfifo(d / "x.h5")
    return Plan(snr(d / "x.h5"), timeout=30)


@case("fifo-x.png-embed-folder", "special file", ("run",))
def _(d, ctx):
    from PIL import Image

    folder = d / "scans"
    folder.mkdir()
    Image.new("RGB", (200, 100), "white").save(folder / "a.png")
    os.mkfifo(folder / "x.png")
    return Plan(embed(ctx, folder, d / "e.h5"), expect="skip", timeout=60)


@case("fifo-x.png-reconstruct-folder", "special file", ("run",))
def _(d, ctx):
    from PIL import Image

    folder = d / "scans"
    folder.mkdir()
    Image.new("RGB", (200, 100), "white").save(folder / "a.png")
    os.mkfifo(folder / "x.png")
    return Plan(["reconstruct", str(ctx.run), str(folder), "-o", str(d / "r.h5"), "--device", "cpu", "-q"],
                expect="skip", timeout=90)


# ------------------------------------------------------------------------------ item 12: arguments


def _args(*args, timeout=60.0, out=True):
    def make(d, ctx):
        resolved = [str(ctx.signals) if a == "SIGNALS" else str(ctx.embeddings) if a == "EMB" else
                    str(d / "o.h5") if a == "OUT" else a for a in args]
        return Plan(resolved, output=d / "o.h5" if out else None, timeout=timeout)
    return make


case("synth-n-99999999999999999999", "argument")(_args("synth", "-n", "99999999999999999999", "-o", "OUT", "-q"))
case("synth-seed--1", "argument")(_args("synth", "-n", "2", "--seed", "-1", "-o", "OUT", "-q"))
case("synth-seed-1e23", "argument")(_args("synth", "-n", "2", "--seed", "100000000000000000000000", "-o", "OUT", "-q"))
case("synth-noise-inf", "argument")(_args("synth", "-n", "2", "--noise", "inf", "-o", "OUT", "-q"))
case("synth-n-0", "argument")(_args("synth", "-n", "0", "-o", "OUT", "-q"))
case("render-dpi-0", "argument", ("signals",))(_args("render", "SIGNALS", "-o", "OUT", "--dpi", "0", "--limit", "1",
                                                     "-q"))
case("render-limit--3", "argument", ("signals",))(_args("render", "SIGNALS", "-o", "OUT", "--size", "64", "--limit",
                                                        "-3", "-q"))
case("import-workers-100000", "argument")(_args("import", "nowhere", "-o", "OUT", "-j", "100000", "-q"))
case("probe-bootstrap-1e9", "argument", ("embeddings",))(
    _args("probe", "EMB", "--bootstrap", "1e9", "--allow-overlap", "-q", out=False))
case("probe-bootstrap-1000000000", "argument", ("embeddings",))(
    _args("probe", "EMB", "--bootstrap", "1000000000", "--fractions", "1", "--allow-overlap", "-q", out=False,
          timeout=90))
case("probe-epochs-1000000000", "argument", ("embeddings",))(
    _args("probe", "EMB", "--epochs", "1000000000", "--patience", "0", "--bootstrap", "0", "--fractions", "1",
          "--allow-overlap", "-q", out=False, timeout=90))


def _pretrain(*extra):
    def make(d, ctx):
        run = d / "run"

        def check(proc):
            return ["partial/lost: a run folder was left by the failed pretrain"] \
                if proc.returncode != 0 and run.exists() else []
        return Plan(["pretrain", str(ctx.signals), "-o", str(run), *PRETRAIN_FAST, *extra], check=check, timeout=180)
    return make


for _opt, _val in (("--set", "model.lora_r=0"), ("--set", "model.lora_dropout=2"), ("--set", "eval_every=0"), ("--val-folds", "abc"),
                   ("--image-model", "ViT-Nope"), ("--seed", "1e23"), ("--set", "num_workers=-1")):
    case(f"pretrain{_opt}-{_val}", "argument (pretrain)", ("signals",), slow=True)(_pretrain(_opt, _val))


# ------------------------------------------------------------------------------ items 2, 3: overwrite traps


@case("render-png-overwrite-unrelated-folder", "overwrite", ("signals",))
def _(d, ctx):
    precious = d / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("mine")
    (precious / "data").mkdir()
    (precious / "data" / "table.csv").write_text("1,2,3\n")
    return Plan(["render", str(ctx.signals), "-o", str(precious), "--format", "png", "--overwrite", "--limit", "1",
                 "--dpi", "40", "-q"], check=unchanged(precious, "the unrelated folder"))


@case("embed-overwrite-run-folder", "overwrite", ("run",))
def _(d, ctx):
    run = d / "run"
    shutil.copytree(ctx.run, run)
    return Plan(["embed", str(run), str(ctx.signals), "-o", str(run), "--overwrite", "--device", "cpu", "-q"],
                check=unchanged(run, "the run folder"), timeout=120)


@case("synth-overwrite-foreign-h5", "overwrite")
def _(d, ctx):
    foreign = d / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    return Plan(["synth", "-n", "2", "-o", str(foreign), "--overwrite", "-q"], check=unchanged(foreign, "foreign.h5"))


@case("synth-overwrite-plain-file", "overwrite")
def _(d, ctx):
    notes = d / "notes.h5"
    notes.write_text("my notes")
    return Plan(["synth", "-n", "2", "-o", str(notes), "--overwrite", "-q"], check=unchanged(notes, "notes.h5"))


@case("snr-per-record-overwrites-its-input", "overwrite", ("signals",))
def _(d, ctx):
    p = signals_copy(d, ctx)
    return Plan(["snr-check", str(p), "--per-record", str(p), "--overwrite", "-q"], check=unchanged(p, "the input"))


@case("pretrain-overwrite-with-typo-keeps-old-run", "overwrite", ("run",), slow=True)
def _(d, ctx):
    run = d / "run"
    shutil.copytree(ctx.run, run)
    return Plan(["pretrain", str(ctx.signals), "-o", str(run), *PRETRAIN_FAST, "--signal-encoder",
                 "no-such-teacher.pt", "--overwrite"], check=unchanged(run, "the old run"), timeout=180)


# ------------------------------------------------------------------------------ item 13, paths


@case("escape-sequence-in-missing-file-name", "path")
def _(d, ctx):
    return Plan(snr(d / ESCAPE_NAME))


@case("escape-sequence-in-bad-file-name", "path")
def _(d, ctx):
    (d / ESCAPE_NAME).write_text("not hdf5")
    return Plan(snr(d / ESCAPE_NAME))


@case("empty-path-snr-check", "path")
def _(d, ctx):
    wfdb_record(d, "here")   # before: "" read the current folder
    return Plan(["snr-check", "", "-q"])


@case("empty-path-import", "path")
def _(d, ctx):
    wfdb_record(d, "here")
    return Plan(["import", "", "-o", str(d / "o.h5"), "-q"], output=d / "o.h5")


@case("empty-output-synth", "path")
def _(d, ctx):
    return Plan(["synth", "-n", "2", "-o", "", "-q"])


@case("output-in-missing-folder", "path")
def _(d, ctx):
    return Plan(["synth", "-n", "2", "-o", str(d / "no" / "such" / "s.h5"), "-q"])


@case("output-is-a-folder", "path")
def _(d, ctx):
    (d / "dir.h5").mkdir()
    (d / "dir.h5" / "keep.txt").write_text("x")
    return Plan(["synth", "-n", "2", "-o", str(d / "dir.h5"), "--overwrite", "-q"],
                check=unchanged(d / "dir.h5", "the folder"))


# ------------------------------------------------------------------------------ items 5, 6: interruptions


def _appeared(d: Path, before: set[str]):
    return lambda: bool({p.name for p in d.iterdir()} - before)


def _interrupt(kind: str, sig: signal.Signals, to_group: bool = False):
    def make(d, ctx):
        out = d / "out"
        out.mkdir()
        if kind == "synth":
            args = ["synth", "-n", "200000", "-o", str(out / "s.h5"), "-q"]
        elif kind == "render":
            args = ["render", str(ctx.signals), "-o", str(out / "pages"), "--format", "png", "--dpi", "100",
                    "--workers", "1", "-q"]
        else:
            args = ["import", str(ctx.wfdb), "-o", str(out / "s.h5"), "--labels", "none", "-j", kind[-1], "-q"]
        def check(proc):
            left = sorted(p.name for p in out.iterdir() if ".partial" not in p.name and ".old-" not in p.name)
            return [f"partial/lost: left {', '.join(left[:3])}"] if left and proc.returncode != 0 else []
        return Plan(args, expect="stop", interrupt=sig, to_group=to_group, started=_appeared(out, set()), timeout=60,
                    check=check)
    return make


case("sigterm-synth-200000", "interrupt")(_interrupt("synth", signal.SIGTERM))
case("sighup-synth-200000", "interrupt")(_interrupt("synth", signal.SIGHUP))
case("sigterm-import-j1", "interrupt", ("wfdb",))(_interrupt("import-j1", signal.SIGTERM))
case("sigterm-import-j2", "interrupt", ("wfdb",))(_interrupt("import-j2", signal.SIGTERM))
case("ctrl-c-import-j2", "interrupt", ("wfdb",))(_interrupt("import-j2", signal.SIGINT, to_group=True))
case("sigterm-render-png", "interrupt", ("signals",))(_interrupt("render", signal.SIGTERM))


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ecgscan", default="ecgscan", help="command that starts ecgscan (shell-split)")
    ap.add_argument("--only", default="", help="run only cases whose name contains one of these (comma-separated)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the pretrain cases")
    ap.add_argument("--lock", default="/tmp/ecgscan-cpu.lock", help="flock held around each case ('' = none)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()

    only = [w for w in a.only.split(",") if w] or [""]
    cases = [c for c in CASES if any(w in c.name for w in only) and not (a.skip_slow and c.slow)]
    want = {n for c in cases for n in c.needs}
    if "embeddings" in want:
        want.add("run")
    with contextlib.ExitStack() as stack:
        root = a.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ecgscan-attack-")))
        root.mkdir(parents=True, exist_ok=True)
        ctx = Ctx(cmd=shlex.split(a.ecgscan), root=root, lock=a.lock)
        t0 = time.monotonic()
        setup(ctx, want)
        for note in ctx.setup_notes:
            print(note, flush=True)
        results = []
        for c in cases:
            r = run_case(c, ctx)
            results.append(r)
            last = non_empty_lines(r.stderr)[-1][:150] if r.stderr.strip() else ""
            print(f"{r.outcome:<12} {c.name:<44} exit {r.code!s:>4} {r.seconds:6.1f} s  "
                  f"{'; '.join(r.problems)[:160]}", flush=True)
            if last:
                print(f"{'':13}stderr: {ascii(last)[1:-1]}", flush=True)
        total = time.monotonic() - t0

    counts = {k: sum(r.outcome == k for r in results) for k in OUTCOMES}
    print(f"\n{len(results)} cases in {total / 60:.1f} min with {a.ecgscan}")
    print("| cases | refused in one line / skipped / stopped cleanly | tracebacks | partial outputs left or data lost "
          "| hangs | accepted silently | crashes | other |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(results)} | " + " | ".join(str(counts[k]) for k in OUTCOMES) + " |")
    by_cat: dict[str, list[Result]] = {}
    for r in results:
        by_cat.setdefault(r.case.category, []).append(r)
    print("\nby category: " + "; ".join(f"{cat} {sum(r.outcome == 'ok' for r in rs)}/{len(rs)} ok"
                                        for cat, rs in by_cat.items()))
    if a.json:
        a.json.write_text(json.dumps({"ecgscan": a.ecgscan, "minutes": total / 60, "counts": counts,
                                      "cases": [{"name": r.case.name, "category": r.case.category,
                                                 "outcome": r.outcome, "exit": r.code, "seconds": round(r.seconds, 1),
                                                 "problems": r.problems, "stderr_tail": r.stderr[-1500:]}
                                                for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
