#!/usr/bin/env python
"""`ecgscan import` of all of PTB-XL: seconds, records/s, CPU and peak memory, from the archive and from a folder.

    python benchmarks/bench_import_ptbxl.py [--archive ../shared/data/ptbxl-100hz]
        [--folder /root/cache/ptbxl100] [--rate 100] [--labels all] [--keep OUT.h5] [--limit N]

Each import runs as its own `ecgscan import` process. Peak RSS is the largest sum over
the import and its worker processes (sampled every 0.2 s from /proc, Linux), next to the
largest single process (getrusage). As the machine may be shared, the CPU time other
processes used during each run and the load average are printed too. When both sources
ran, their outputs are compared record by record (stored chunk bytes, then ids/labels).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "ptbxl-100hz"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, CPU seconds, RSS bytes) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE


def _processes() -> dict[int, tuple[int, float, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st:
                out[int(name)] = st
    return out


def _tree(procs: dict, root: int) -> set[int]:
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:90]
    except OSError:
        return "?"


def run_import(source: Path, out: Path, rate: int, labels: str, workers: int, limit: int | None) -> dict:
    cmd = [sys.executable, "-m", "ecgscan_cli", "import", str(source), "-r", str(rate), "--labels", labels,
           "-o", str(out), "--overwrite", "-q", "-j", str(workers)]
    if limit:
        cmd += ["--limit", str(limit)]
    before = _processes()
    load0 = os.getloadavg()[0]
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak, ours = 0, {proc.pid}
    while proc.poll() is None:
        procs = _processes()
        tree = _tree(procs, proc.pid)
        ours |= tree
        peak = max(peak, sum(procs[p][2] for p in tree if p in procs))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = _processes()
    others = {pid: after[pid][1] - before.get(pid, (0, 0.0, 0))[1] for pid in after if pid not in ours
              and pid != os.getpid()}
    return {"wall": wall, "user": usage.ru_utime - usage0.ru_utime, "sys": usage.ru_stime - usage0.ru_stime,
            "peak_tree": peak, "peak_one": usage.ru_maxrss * 1024, "load": (load0, os.getloadavg()[0]),
            "others": sorted(((cpu, pid) for pid, cpu in others.items() if cpu > 0.5), reverse=True)}


def report(name: str, source: Path, out: Path, m: dict) -> None:
    sys.path.insert(0, str(REPO))
    from ecgscan_cli.formats.signals import SignalsFile

    with SignalsFile(out) as f:
        n = len(f)
    print(f"{name}: {source}")
    print(f"  {n} records in {m['wall']:.1f} s: {n / m['wall']:.0f} records/s; "
          f"CPU {m['user']:.1f} s user + {m['sys']:.1f} s sys; "
          f"peak RSS {m['peak_tree'] / 2**20:.0f} MiB (import + workers), "
          f"{m['peak_one'] / 2**20:.0f} MiB (largest process); output {out.stat().st_size / 2**20:.0f} MiB")
    other_cpu = sum(c for c, _ in m["others"])
    top = "; ".join(f"{c:.0f} s {_cmdline(p)}" for c, p in m["others"][:3])
    print(f"  meanwhile other processes used {other_cpu:.0f} CPU-s ({top or 'none'}); "
          f"load average {m['load'][0]:.1f} -> {m['load'][1]:.1f}")


def compare(a: Path, b: Path) -> str:
    import h5py
    import numpy as np

    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in ("id", "report", "label", "fold"):
            if not np.array_equal(fa[name][()], fb[name][()]):
                return f"differ in /{name}"
        sa, sb = fa["signal"], fb["signal"]
        if sa.shape != sb.shape:
            return f"differ in shape {sa.shape} vs {sb.shape}"
        for i in range(sa.shape[0]):
            if sa.id.read_direct_chunk((i, 0, 0))[1] != sb.id.read_direct_chunk((i, 0, 0))[1] \
                    and not np.array_equal(sa[i], sb[i]):
                return f"differ in record {i}"
        for name in fa.get("label_sets", {}):
            if not np.array_equal(fa["label_sets"][name][()], fb["label_sets"][name][()]):
                return f"differ in /label_sets/{name}"
    return "identical (signals, ids, reports, labels, label sets, folds)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE,
                    help="PTB-XL with its records in an archive (folder or the archive itself)")
    ap.add_argument("--folder", type=Path, default=None, help="the same PTB-XL unpacked (optional)")
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--labels", default="all")
    ap.add_argument("--workers", type=int, default=0, help="-j of ecgscan import (0 = automatic)")
    ap.add_argument("--keep", type=Path, default=None, help="write the archive's import here and keep it")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="ecgscan-bench-import-") as tmp:
        outputs = []
        for name, source in (("archive", args.archive), ("folder", args.folder)):
            if source is None:
                continue
            if not source.exists():
                print(f"{name}: {source} not found, skipped")
                continue
            out = args.keep if (name == "archive" and args.keep) else Path(tmp) / f"{name}.h5"
            m = run_import(source, out, args.rate, args.labels, args.workers, args.limit)
            report(name, source, out, m)
            outputs.append(out)
        if len(outputs) == 2:
            print(f"archive vs folder output: {compare(*outputs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
